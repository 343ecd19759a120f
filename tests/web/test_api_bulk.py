"""One action on many images (`POST /api/v1/images/bulk/`, captions/services/bulk.py) on the real
database: all or nothing, only your own images, what was left as it was says why."""

from __future__ import annotations

import pytest

from captions.models import AlbumItem, Image
from captions.services import albums

pytestmark = pytest.mark.django_db

BULK = "/api/v1/images/bulk/"


def bulk(api, ids, action, **extra):
    return api.post(BULK, {"ids": ids, "action": action, **extra}, format="json")


def test_visibility_and_recaption_change_many_and_say_what_they_left(
    api, user, make_image, queued_ids, django_capture_on_commit_callbacks
):
    images = [make_image(user) for _ in range(3)]
    ids = [image.pk for image in images]
    Image.objects.filter(pk=ids[0]).update(visibility="public")

    made = bulk(api, ids, "make_public")
    assert made.status_code == 200, made.content
    body = made.json()
    assert (body["action"], sorted(body["changed"])) == ("make_public", sorted(ids[1:]))
    assert [(s["id"], s["code"]) for s in body["skipped"]] == [(ids[0], "unchanged")]
    assert body["summary"] == "2 images made public; 1 left as it was (already public)"
    assert set(Image.objects.filter(pk__in=ids).values_list("visibility", flat=True)) == {"public"}
    assert bulk(api, ids, "make_private").json()["changed"] == ids

    # Re-caption: finished images are queued again; one still queued is left as it is.
    Image.objects.filter(pk__in=ids[:2]).update(status="done")
    with django_capture_on_commit_callbacks(execute=True):
        body = bulk(api, ids, "recaption").json()
    assert sorted(body["changed"]) == ids[:2] and [s["code"] for s in body["skipped"]] == ["already_queued"]
    assert set(Image.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"pending"}
    assert sorted(queued_ids()) == ids[:2]


def test_all_or_nothing_only_your_own_images(api, other_api, user, other_user, make_image):
    mine = make_image(user)
    theirs = make_image(other_user, visibility="public")
    refused = bulk(api, [mine.pk, theirs.pk], "delete")
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "unknown_images"
    assert str(theirs.pk) in refused.json()["error"]["message"]
    assert Image.objects.filter(pk__in=[mine.pk, theirs.pk]).count() == 2  # nothing deleted

    assert bulk(api, [], "delete").status_code == 400
    assert bulk(api, [mine.pk], "explode").status_code == 400
    assert bulk(api, list(range(1, 502)), "delete").status_code == 400
    assert api.post(BULK, {"ids": "1,2", "action": "delete"}, format="json").status_code == 400
    anon = api.__class__()
    assert anon.post(BULK, {"ids": [mine.pk], "action": "delete"}, format="json").status_code in (401, 403)


def test_albums_and_delete_in_bulk(
    api, user, other_user, make_image, media_root, django_capture_on_commit_callbacks
):
    images = [make_image(user) for _ in range(3)]
    ids = [image.pk for image in images]
    album = albums.create_album(owner=user, name="Picks")
    theirs = albums.create_album(owner=other_user, name="Theirs")

    assert bulk(api, ids, "add_to_album").json()["error"]["code"] == "unknown_album"
    assert bulk(api, ids, "add_to_album", album=theirs.pk).json()["error"]["code"] == "unknown_album"
    body = bulk(api, ids[:2], "add_to_album", album=album.pk).json()
    assert body["changed"] == ids[:2]
    body = bulk(api, ids, "add_to_album", album=album.pk).json()
    assert body["changed"] == ids[2:] and len(body["skipped"]) == 2
    assert album.items.count() == 3
    body = bulk(api, ids[1:], "remove_from_album", album=album.pk).json()
    assert body["changed"] == ids[1:] and body["summary"] == "2 images taken out of the album"
    assert list(album.items.values_list("image_id", flat=True)) == ids[:1]

    files = [media_root / image.file.name for image in images]
    assert all(path.is_file() for path in files)
    with django_capture_on_commit_callbacks(execute=True):
        body = bulk(api, ids, "delete").json()
    assert body["changed"] == ids and body["summary"] == "3 images deleted"
    assert (
        not Image.objects.filter(pk__in=ids).exists() and not AlbumItem.objects.filter(album=album).exists()
    )
    assert not any(path.exists() for path in files)  # their files go once the transaction commits


def test_the_gallerys_selection_without_javascript(alice, user, other_user, make_image, media_root):
    mine = [make_image(user) for _ in range(2)]
    theirs = make_image(other_user, visibility="public")
    ids = [str(image.pk) for image in mine]
    gallery = alice.get("/").content.decode()
    assert 'id="bulk-form"' in gallery
    assert f'name="ids" value="{mine[0].pk}" form="bulk-form"' in gallery
    assert f'name="ids" value="{theirs.pk}"' not in gallery  # only your own can be ticked

    done = alice.post("/images/bulk/", {"ids": ids, "action": "make_public", "next": "/?show=mine"})
    assert done.status_code == 302 and done["Location"] == "/?show=mine"
    assert set(Image.objects.filter(pk__in=ids).values_list("visibility", flat=True)) == {"public"}
    away = alice.post(
        "/images/bulk/", {"ids": ids, "action": "make_private", "next": "https://evil.example/"}
    )
    assert away["Location"] == "/"

    alice.post("/images/bulk/", {"ids": ids, "action": "add_to_album", "new_album": "Chosen"})
    assert albums.get_or_create_album(owner=user, name="Chosen")[0].items.count() == 2

    zipped = alice.post("/images/bulk/", {"ids": ids, "action": "download"})
    assert (
        zipped.status_code == 302 and zipped["Location"] == f"/api/v1/images/download.zip?ids={','.join(ids)}"
    )

    refused = alice.post("/images/bulk/", {"ids": [*ids, str(theirs.pk)], "action": "recaption"}, follow=True)
    assert b"not images of yours" in refused.content

    asked = alice.post("/images/bulk/", {"ids": ids, "action": "delete"})
    assert asked.status_code == 200 and b"Delete 2 photos?" in asked.content
    assert Image.objects.filter(pk__in=ids).count() == 2  # nothing deleted until confirmed
    gone = alice.post("/images/bulk/", {"ids": ids, "action": "delete", "confirm": "1"}, follow=True)
    assert b"2 images deleted." in gone.content and not Image.objects.filter(pk__in=ids).exists()
    assert b"Select one or more" in alice.post("/images/bulk/", {"action": "delete"}, follow=True).content
