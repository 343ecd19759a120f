"""GET /api/v1/images/{id}/download/ and zip_downloads (captions/downloads.py): the file named as it was
uploaded, with the shown caption in its XMP and EXIF (or an .xmp sidecar), GPS kept from others."""

from __future__ import annotations

import io
import zipfile
from urllib.parse import quote

import numpy as np
import pyexiv2
import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image as PILImage

from captions.location import GPS_IFD
from captions.metadata import read_photo_metadata
from tests.web.test_metadata import CAMERA, picture, pixels, tags_of, with_metadata, xmp_description

pytestmark = pytest.mark.django_db

IMAGES = "/api/v1/images/"
PARIS = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}


def jpeg_with_gps(seed: int = 0) -> bytes:
    exif = PILImage.Exif()
    exif[0x010F] = "TestCam"
    exif[GPS_IFD] = PARIS
    out = io.BytesIO()
    PILImage.open(io.BytesIO(picture("PNG", seed=seed))).save(out, "JPEG", quality=90, exif=exif)
    return out.getvalue()


def has_gps(data: bytes) -> bool:
    with PILImage.open(io.BytesIO(data)) as image:
        return bool(image.getexif().get_ifd(GPS_IFD))


def upload(client, data: bytes, name: str, **extra) -> dict:
    answer = client.post(IMAGES, {"image": SimpleUploadedFile(name, data), **extra}, format="multipart")
    assert answer.status_code == 202, answer.content
    return answer.json()


def download(client, image_id: int, **params):
    return client.get(f"{IMAGES}{image_id}/download/", params)


def test_the_owner_gets_the_file_by_its_name_with_the_shown_caption_inside(api, media_root):
    original = with_metadata(picture(seed=1), exif=CAMERA)
    body = upload(api, original, "IMG_0042.JPG")
    assert body["urls"]["download"] == f"http://testserver{IMAGES}{body['id']}/download/"
    patched = api.patch(f"{IMAGES}{body['id']}/", {"caption": "Ana & Rui at the fado house"}, format="json")
    assert patched.status_code == 200

    got = download(api, body["id"])
    assert got.status_code == 200 and got["Content-Type"] == "image/jpeg"
    assert got["Content-Disposition"] == 'attachment; filename="IMG_0042.JPG"'
    assert "X-Caption-Sidecar" not in got
    exif, _, xmp = tags_of(got.content)
    assert xmp["Xmp.dc.description"] == {'lang="x-default"': "Ana & Rui at the fado house"}
    assert exif["Exif.Image.ImageDescription"] == "Ana & Rui at the fado house"
    assert exif["Exif.Image.Model"] == "iPhone 13"  # the rest of the metadata stays
    np.testing.assert_array_equal(pixels(got.content), pixels(original))


def test_a_description_from_the_file_goes_back_out_and_names_are_cleaned(api, media_root):
    data = with_metadata(picture(seed=2), xmp=xmp_description("Tram 28 in Graça"))
    body = upload(api, data, "férias/elétrico.jpeg")  # a zip member's path: its last part
    got = download(api, body["id"])
    disposition = got["Content-Disposition"]
    assert disposition.startswith('attachment; filename="eletrico.jpeg"; ')
    assert disposition.endswith("filename*=UTF-8''" + quote("elétrico.jpeg", safe=""))
    assert read_photo_metadata(got.content).description == "Tram 28 in Graça"

    png = upload(api, picture("PNG", seed=3), "upload")  # no extension worth keeping
    assert download(api, png["id"])["Content-Disposition"] == 'attachment; filename="upload.png"'


def test_an_image_without_a_caption_comes_as_it_was_stored(api, media_root):
    data = picture(seed=4)
    body = upload(api, data, "plain.jpg")
    got = download(api, body["id"])
    assert got.content == data and "X-Caption-Sidecar" not in got
    assert download(api, body["id"], sidecar=1).status_code == 404  # nothing to put in a sidecar


def test_others_get_it_without_gps_and_with_the_caption_the_owner_keeps_both(
    api, other_api, anon_api, media_root
):
    body = upload(api, jpeg_with_gps(seed=5), "paris.jpg", visibility="public")
    api.patch(f"{IMAGES}{body['id']}/", {"caption": "The Seine at night"}, format="json")
    mine = download(api, body["id"])
    assert has_gps(mine.content) and read_photo_metadata(mine.content).description == "The Seine at night"
    for client in (other_api, anon_api):
        theirs = download(client, body["id"])
        assert theirs.status_code == 200 and not has_gps(theirs.content)
        assert read_photo_metadata(theirs.content).description == "The Seine at night"
        assert tags_of(theirs.content)[0]["Exif.Image.Make"] == "TestCam"

    api.patch(f"{IMAGES}{body['id']}/", {"share_location": True}, format="json")
    assert has_gps(download(other_api, body["id"]).content)


def test_another_users_private_image_is_404(api, other_api, anon_api, media_root):
    body = upload(api, picture(seed=6), "secret.jpg")
    for client in (other_api, anon_api):
        assert download(client, body["id"]).status_code == 404
        assert download(client, body["id"], sidecar=1).status_code == 404
    assert download(api, 10**9).status_code == 404
    bad = download(api, body["id"], sidecar="maybe")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_filter"


@pytest.mark.parametrize(
    ("fmt", "name"), [("HEIF", "IMG_1234.HEIC"), ("GIF", "loop.gif"), ("BMP", "scan.bmp")]
)
def test_a_format_that_cannot_hold_the_caption_gets_a_sidecar(api, alice, media_root, fmt, name):
    data = picture(fmt, seed=7)
    body = upload(api, data, name)
    api.patch(f"{IMAGES}{body['id']}/", {"caption": "Sunset & <clouds>"}, format="json")
    got = download(api, body["id"])
    assert got.status_code == 200 and got.content == data  # unchanged
    sidecar_url = got["X-Caption-Sidecar"]
    assert sidecar_url == f"http://testserver{IMAGES}{body['id']}/download/?sidecar=1"

    assert (
        f'href="/api/v1/images/{body["id"]}/download/?sidecar=1"'
        in alice.get(f"/images/{body['id']}/").content.decode()
    )
    sidecar = api.get(sidecar_url)
    stem = name.rsplit(".", 1)[0]
    assert sidecar.status_code == 200 and sidecar["Content-Type"] == "application/rdf+xml"
    assert sidecar["Content-Disposition"] == f'attachment; filename="{stem}.xmp"'
    packet = pyexiv2.ImageData(sidecar.content)
    try:
        assert packet.read_xmp()["Xmp.dc.description"] == {'lang="x-default"': "Sunset & <clouds>"}
    finally:
        packet.close()


def test_zip_downloads_embeds_each_caption_adds_sidecars_and_keeps_names_unique(
    api, user, other_user, media_root
):
    from captions.downloads import zip_downloads
    from captions.models import Image
    from captions.selectors import with_captions

    first = upload(api, with_metadata(picture(seed=8), xmp=xmp_description("First beach")), "beach.jpg")
    second = upload(api, with_metadata(picture(seed=9), xmp=xmp_description("Second beach")), "beach.jpg")
    third = upload(api, picture("HEIF", seed=10), "Beach.heic")
    fourth = upload(api, picture("HEIF", seed=11), "beach.heic")
    api.patch(f"{IMAGES}{third['id']}/", {"caption": "Third beach"}, format="json")
    api.patch(f"{IMAGES}{fourth['id']}/", {"caption": "Fourth beach"}, format="json")
    ids = [first["id"], second["id"], third["id"], fourth["id"]]
    images = with_captions(Image.objects.filter(pk__in=ids)).order_by("id")

    data = b"".join(zip_downloads(images, user))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        names = archive.namelist()
        assert names == [
            "beach.jpg",
            "beach (2).jpg",
            "Beach.heic",
            "Beach.xmp",
            "beach (2).heic",
            "beach (2).xmp",
        ]
        assert read_photo_metadata(archive.read("beach.jpg")).description == "First beach"
        assert read_photo_metadata(archive.read("beach (2).jpg")).description == "Second beach"
        with default_storage.open(Image.objects.get(pk=third["id"]).file.name, "rb") as stored:
            assert archive.read("Beach.heic") == stored.read()
        assert b"Third beach" in archive.read("Beach.xmp") and b"Fourth beach" in archive.read(
            "beach (2).xmp"
        )


def test_download_zip_holds_what_the_filters_name_each_with_its_caption(
    api, other_api, user, media_root, settings
):
    from django.utils import timezone

    from captions.services import albums

    first = upload(api, picture(seed=11), "one.jpg")
    second = upload(api, picture(seed=12), "two.jpg")
    upload(api, picture(seed=13), "three.jpg")  # not asked for
    api.patch(f"{IMAGES}{first['id']}/", {"caption": "the first photo"}, format="json")
    album = albums.create_album(owner=user, name="Two of them")
    albums.change_images(album=album, add=[first["id"], second["id"]])

    got = api.get(f"{IMAGES}download.zip", {"album": album.pk})
    assert got.status_code == 200 and got["Content-Type"] == "application/zip"
    day = timezone.localdate().isoformat()
    assert got["Content-Disposition"] == f'attachment; filename="imgcap-album-two-of-them-{day}.zip"'
    archive = zipfile.ZipFile(io.BytesIO(b"".join(got.streaming_content)))
    assert sorted(archive.namelist()) == ["one.jpg", "two.jpg"]
    assert read_photo_metadata(archive.read("one.jpg")).description == "the first photo"

    by_ids = api.get(f"{IMAGES}download.zip", {"ids": f"{second['id']}"})
    assert zipfile.ZipFile(io.BytesIO(b"".join(by_ids.streaming_content))).namelist() == ["two.jpg"]
    # Someone else's album, no match, too many: clear 4xx answers, no empty zip.
    assert (
        other_api.get(f"{IMAGES}download.zip", {"album": album.pk}).json()["error"]["code"] == "unknown_album"
    )
    assert other_api.get(f"{IMAGES}download.zip", {"owner": "me"}).status_code == 404
    settings.IMGCAP_MAX_ZIP_IMAGES = 2
    refused = api.get(f"{IMAGES}download.zip", {"owner": "me"})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "too_many_images"
