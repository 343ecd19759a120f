"""Albums through the REST API and the pages: CRUD, their images, uploads straight into one, and the
public read-only share link (files served through it, revoked at once)."""

from __future__ import annotations

import io
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from captions.models import Album, Image
from tests.web.test_location_privacy import exif_of, photo_with_gps

pytestmark = pytest.mark.django_db


def upload(api, data: bytes, name: str = "p.jpg", **fields) -> dict:
    response = api.post("/api/v1/images/", {"image": SimpleUploadedFile(name, data), **fields})
    assert response.status_code == 202, response.content
    return response.json()


def make_album(api, name: str = "Holiday", **fields) -> dict:
    response = api.post("/api/v1/albums/", {"name": name, **fields}, format="json")
    assert response.status_code == 201, response.content
    assert response["Location"] == response.json()["urls"]["self"]
    return response.json()


def test_albums_are_made_renamed_listed_by_name_and_deleted_without_their_images(api, other_api, photo):
    album = make_album(api, "  Holiday   2026 ", description="Crete")
    assert (album["name"], album["description"], album["images"], album["shared"]) == (
        "Holiday 2026",
        "Crete",
        0,
        False,
    )
    assert album["share_url"] is None and album["cover"] is None
    taken = api.post("/api/v1/albums/", {"name": "Holiday 2026"}, format="json")
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "album_name_taken"
    empty = api.post("/api/v1/albums/", {"name": "   "}, format="json")
    assert empty.status_code == 400 and empty.json()["error"]["code"] == "empty_album_name"
    assert other_api.post("/api/v1/albums/", {"name": "Holiday 2026"}, format="json").status_code == 201

    make_album(api, "Birthdays")
    names = [a["name"] for a in api.get("/api/v1/albums/").json()["results"]]
    assert names == ["Birthdays", "Holiday 2026"]
    found = api.get("/api/v1/albums/", {"name": "Holiday 2026"}).json()["results"]
    assert [a["id"] for a in found] == [album["id"]]
    assert api.get("/api/v1/albums/", {"name": "nothing"}).json()["results"] == []
    # A NUL can be in no album's name (Postgres refuses it in a query): found nowhere, not a 500.
    nul = api.get("/api/v1/albums/", {"name": "Holiday\x002026"})
    assert nul.status_code == 200 and nul.json()["results"] == []

    renamed = api.patch(album["urls"]["self"], {"name": "Crete 2026"}, format="json")
    assert renamed.status_code == 200 and renamed.json()["name"] == "Crete 2026"
    clash = api.patch(album["urls"]["self"], {"name": "Birthdays"}, format="json")
    assert clash.status_code == 409
    assert api.patch(album["urls"]["self"], {}, format="json").status_code == 400

    # Someone else's album does not exist for you.
    assert other_api.get(album["urls"]["self"]).status_code == 404
    assert other_api.delete(album["urls"]["self"]).status_code == 404

    image = upload(api, photo(), album=album["id"])
    assert api.delete(album["urls"]["self"]).status_code == 204
    assert not Album.objects.filter(pk=album["id"]).exists()
    assert api.get(image["urls"]["self"]).status_code == 200  # the image stays


def test_images_are_added_and_removed_only_your_own_and_listed_by_album(api, other_api, photo):
    album = make_album(api)
    mine = [upload(api, photo(), f"{i}.jpg")["id"] for i in range(3)]
    theirs = upload(other_api, photo(), visibility="public")["id"]

    refused = api.post(album["urls"]["self"] + "images/", {"add": [mine[0], theirs]}, format="json")
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "unknown_images"
    assert str(theirs) in refused.json()["error"]["message"]
    assert api.get(album["urls"]["self"]).json()["images"] == 0  # nothing changed

    added = api.post(album["urls"]["self"] + "images/", {"add": mine}, format="json").json()
    assert (added["added"], added["removed"], added["album"]["images"]) == (3, 0, 3)
    again = api.post(album["urls"]["self"] + "images/", {"add": mine[:1], "remove": mine[1:2]}, format="json")
    assert (again.json()["added"], again.json()["removed"], again.json()["album"]["images"]) == (0, 1, 2)
    assert api.post(album["urls"]["self"] + "images/", {}, format="json").status_code == 400
    assert api.post(album["urls"]["self"] + "images/", {"add": ["x"]}, format="json").status_code == 400

    listed = api.get("/api/v1/images/", {"album": album["id"]}).json()["results"]
    assert sorted(i["id"] for i in listed) == sorted([mine[0], mine[2]])
    assert other_api.get("/api/v1/images/", {"album": album["id"]}).json()["results"] == []
    assert api.get("/api/v1/images/", {"album": "x"}).status_code == 400
    cover = api.get(album["urls"]["self"]).json()["cover"]
    assert cover is not None and api.get(cover).status_code == 200


def test_uploads_go_straight_into_an_album_files_and_batches(api, other_api, photo):
    album = make_album(api)
    one = upload(api, photo(), album=album["id"])
    batch = api.post(
        "/api/v1/batches/",
        {
            "images": [SimpleUploadedFile("a.jpg", photo()), SimpleUploadedFile("b.jpg", photo())],
            "album": album["id"],
        },
    )
    assert batch.status_code == 202
    ids = {one["id"], *(item["id"] for item in batch.json()["items"])}
    listed = {i["id"] for i in api.get("/api/v1/images/", {"album": album["id"]}).json()["results"]}
    assert listed == ids and len(ids) == 3

    # A duplicate upload into another album puts the existing image there too.
    again = make_album(api, "Again")
    data = photo()
    first = upload(api, data)
    second = upload(api, data, album=again["id"])
    assert second["id"] == first["id"] and second["duplicate"] is True
    assert api.get(again["urls"]["self"]).json()["images"] == 1

    # Someone else's album is refused, and nothing is stored.
    count = Image.objects.count()
    refused = other_api.post(
        "/api/v1/images/", {"image": SimpleUploadedFile("c.jpg", photo()), "album": album["id"]}
    )
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "unknown_album"
    refused = other_api.post(
        "/api/v1/batches/", {"images": [SimpleUploadedFile("d.jpg", photo())], "album": album["id"]}
    )
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "unknown_album"
    assert Image.objects.count() == count


def test_a_share_link_shows_the_album_to_anyone_until_it_is_revoked(api, other_api, anon_api, client, photo):
    album = make_album(api, "Trip", description="Our trip")
    private = upload(api, photo_with_gps(), "gps.jpg", album=album["id"])  # private, with a GPS position
    outside = upload(api, photo())  # in no album: never reachable through the link
    shared = api.post(album["urls"]["share"]).json()
    token_url = shared["share_url"]
    assert shared["shared"] is True and "/shared/" in token_url
    token = token_url.rstrip("/").rsplit("/", 1)[1]
    assert len(token) >= 32
    assert api.post(album["urls"]["share"]).json()["share_url"] == token_url  # sharing again keeps it

    # The page and the API, for anyone (a stale token header changes nothing).
    page = client.get(f"/shared/{token}/")
    assert page.status_code == 200 and b"Trip" in page.content and b"Our trip" in page.content
    assert page["X-Robots-Tag"] == "noindex" and page["Referrer-Policy"] == "no-referrer"
    anon_api.credentials(HTTP_AUTHORIZATION="Token 0000000000000000000000000000000000000000")
    body = anon_api.get(f"/api/v1/shared/{token}/").json()
    assert (body["name"], body["owner"], body["images"]) == ("Trip", "alice", 1)
    images = anon_api.get(body["urls"]["images"]).json()["results"]
    assert [i["id"] for i in images] == [private["id"]]
    # The private image's file, through the link, without where it was taken.
    served = anon_api.get(images[0]["urls"]["file"])
    assert served.status_code == 200
    data = b"".join(served.streaming_content) if served.streaming else served.content
    assert 0x8825 not in exif_of(data)
    assert anon_api.get(images[0]["urls"]["thumb"]).status_code == 200
    assert anon_api.get(images[0]["urls"]["thumb"] + "?size=7").status_code == 400
    # The whole album as a zip, through the link, GPS kept back there too.
    zipped = anon_api.get(f"/shared/{token}/download.zip")
    assert zipped.status_code == 200 and 'filename="imgcap-album-trip-' in zipped["Content-Disposition"]
    archive = zipfile.ZipFile(io.BytesIO(b"".join(zipped.streaming_content)))
    assert archive.namelist() == ["gps.jpg"] and 0x8825 not in exif_of(archive.read("gps.jpg"))
    # An image outside the album is not reachable by changing the id in the link.
    assert anon_api.get(f"/shared/{token}/images/{outside['id']}/file").status_code == 404
    # The owner's private image is still private everywhere else.
    assert other_api.get(private["urls"]["self"]).status_code == 404

    revoked = api.delete(album["urls"]["share"]).json()
    assert revoked["shared"] is False and revoked["share_url"] is None
    assert client.get(f"/shared/{token}/").status_code == 404
    assert anon_api.get(f"/api/v1/shared/{token}/").status_code == 404
    assert anon_api.get(images[0]["urls"]["file"]).status_code == 404
    assert anon_api.get(f"/shared/{token}/download.zip").status_code == 404
    assert anon_api.get("/api/v1/shared/not-a-token/").status_code == 404
    new = api.post(album["urls"]["share"]).json()["share_url"]
    assert new != token_url


def test_the_album_pages_make_fill_share_and_delete_an_album(alice, user, photo):
    from captions.services.intake import IncomingFile, upload_image

    image = upload_image(owner=user, file=IncomingFile("x.jpg", photo())).image
    assert alice.get("/albums/").status_code == 200
    made = alice.post("/albums/", {"name": "Garden"})
    album = Album.objects.get(owner=user, name="Garden")
    assert made.status_code == 302 and made["Location"] == f"/albums/{album.pk}/"
    assert b"already have an album" in alice.post("/albums/", {"name": "Garden"}, follow=True).content

    # From the image page: into an existing album, and into a new one by name.
    page = alice.get(f"/images/{image.pk}/")
    assert b"Add to" in page.content and b"Garden" in page.content
    alice.post(f"/images/{image.pk}/albums/", {"album": album.pk})
    alice.post(f"/images/{image.pk}/albums/", {"new_album": "Flowers"})
    assert set(image.albums.values_list("name", flat=True)) == {"Garden", "Flowers"}
    assert b"choose an album" in alice.post(f"/images/{image.pk}/albums/", {"album": ""}, follow=True).content

    listing = alice.get("/albums/").content.decode()
    assert "Garden" in listing and "Flowers" in listing and "1 photo" in listing
    shown = alice.get(f"/albums/{album.pk}/").content.decode()
    assert f'data-image="{image.pk}"' in shown and "Get a share link" in shown

    alice.post(f"/albums/{album.pk}/share/", {"action": "share"})
    album.refresh_from_db()
    assert album.share_token and album.share_token in alice.get(f"/albums/{album.pk}/").content.decode()
    alice.post(f"/albums/{album.pk}/share/", {"action": "revoke"})
    album.refresh_from_db()
    assert album.share_token is None

    alice.post(f"/albums/{album.pk}/edit/", {"name": "Back garden", "description": "roses"})
    album.refresh_from_db()
    assert (album.name, album.description) == ("Back garden", "roses")
    alice.post(f"/albums/{album.pk}/images/{image.pk}/remove/")
    assert not album.items.exists()
    assert alice.get(f"/albums/{album.pk}/delete/").status_code == 200
    assert alice.post(f"/albums/{album.pk}/delete/").status_code == 302
    assert not Album.objects.filter(pk=album.pk).exists()
    assert Image.objects.filter(pk=image.pk).exists()


def test_the_upload_page_puts_a_batch_in_the_chosen_album(alice, user, photo):
    from captions.services import albums

    album = albums.create_album(owner=user, name="Inbox")
    form = alice.get(f"/upload/?album={album.pk}").content.decode()
    assert f'<option value="{album.pk}" selected>Inbox</option>' in form
    files = [SimpleUploadedFile("a.jpg", photo()), SimpleUploadedFile("b.jpg", photo())]
    response = alice.post("/upload/", {"images": files, "album": str(album.pk)})
    assert response.status_code == 302
    assert album.items.count() == 2
    bad = alice.post("/upload/", {"images": [SimpleUploadedFile("c.jpg", photo())], "album": "nope"})
    assert bad.status_code == 400 and b"no album" in bad.content


def test_pages_of_someone_elses_album_are_404(client, other_user, user, media_root):
    from captions.services import albums

    album = albums.create_album(owner=user, name="Mine")
    client.force_login(other_user)
    for url in (f"/albums/{album.pk}/", f"/albums/{album.pk}/delete/"):
        assert client.get(url).status_code == 404
    assert client.post(f"/albums/{album.pk}/share/", {"action": "share"}).status_code == 404
    album.refresh_from_db()
    assert album.share_token is None


def test_an_image_in_several_albums_is_listed_once_in_each(api, user, photo):
    from captions import selectors
    from captions.services import albums

    image = upload(api, photo())
    other = upload(api, photo())
    one, two = albums.create_album(owner=user, name="One"), albums.create_album(owner=user, name="Two")
    albums.change_images(album=one, add=[image["id"], other["id"]])
    albums.change_images(album=two, add=[image["id"]])
    assert [i.pk for i in selectors.album_images(two)] == [image["id"]]
    assert sorted(i.pk for i in selectors.album_images(one)) == sorted([image["id"], other["id"]])
    assert api.get(f"/api/v1/albums/{one.pk}/").json()["images"] == 2
