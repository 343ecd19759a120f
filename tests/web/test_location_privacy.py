"""A public photo's GPS position is the owner's: others get it stripped unless the owner shares it."""

from __future__ import annotations

import io
import struct

import pytest
from PIL import Image as PILImage

from captions.location import GPS_IFD, without_location

pytestmark = pytest.mark.django_db

PARIS = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}


def photo_with_gps(fmt: str = "JPEG", color=(30, 140, 90)) -> bytes:
    image = PILImage.new("RGB", (96, 64), color)
    exif = PILImage.Exif()
    exif[0x010F] = "TestCam"  # Make: kept
    exif[0x0112] = 1  # Orientation: kept
    exif[GPS_IFD] = PARIS
    out = io.BytesIO()
    image.save(out, fmt, exif=exif, **({"quality": 90} if fmt == "JPEG" else {}))
    return out.getvalue()


def exif_of(data: bytes) -> PILImage.Exif:
    with PILImage.open(io.BytesIO(data)) as image:
        return image.getexif()


def test_a_jpeg_loses_only_its_gps_block_and_keeps_every_pixel():
    data = photo_with_gps()
    stripped = without_location(data)
    assert stripped is not None
    exif = exif_of(stripped)
    assert GPS_IFD not in exif and exif.get_ifd(GPS_IFD) == {}
    assert exif[0x010F] == "TestCam" and exif[0x0112] == 1
    with PILImage.open(io.BytesIO(data)) as a, PILImage.open(io.BytesIO(stripped)) as b:
        assert a.tobytes() == b.tobytes()  # not re-encoded


def test_a_png_with_gps_is_saved_again_without_it_and_files_without_gps_are_left_alone(photo):
    stripped = without_location(photo_with_gps("PNG"))
    assert stripped is not None and GPS_IFD not in exif_of(stripped)
    assert without_location(photo()) is None
    assert without_location(b"\xff\xd8\xff\xe1\x00") is None  # a broken header: nothing to strip


def test_others_get_a_public_photo_without_its_position_and_the_owner_gets_it_whole(
    api, anon_api, other_api, media_root
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    data = photo_with_gps()
    upload = SimpleUploadedFile("paris.jpg", data, content_type="image/jpeg")
    body = api.post("/api/v1/images/", {"image": upload, "visibility": "public"}, format="multipart").json()
    url = body["urls"]["file"].replace("http://testserver", "")
    assert body["share_location"] is False

    assert b"".join(api.get(url).streaming_content) == data  # the owner: the file as uploaded
    for client in (anon_api, other_api):
        served = client.get(url)
        assert served.status_code == 200 and served["Content-Type"] == "image/jpeg"
        assert GPS_IFD not in exif_of(served.content)
        assert other_api.get(f"/api/v1/images/{body['id']}/").json()["share_location"] is None

    shared = api.patch(f"/api/v1/images/{body['id']}/", {"share_location": True}, format="json")
    assert shared.status_code == 200 and shared.json()["share_location"] is True
    assert exif_of(b"".join(anon_api.get(url).streaming_content)).get_ifd(GPS_IFD)[1] == "N"


def test_share_location_must_be_a_boolean(api, make_image, user):
    image = make_image(user)
    bad = api.patch(f"/api/v1/images/{image.pk}/", {"share_location": "maybe"}, format="json")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid"


def test_the_owner_shares_or_keeps_the_location_on_the_image_page(alice, user, make_image):
    image = make_image(user)
    page = alice.get(f"/images/{image.pk}/").content.decode()
    assert "Share where it was taken" in page and "kept to you" in page
    alice.post(f"/images/{image.pk}/location/", {"share_location": "true"})
    image.refresh_from_db()
    assert image.share_location is True
    assert "Keep the location to myself" in alice.get(f"/images/{image.pk}/").content.decode()
    alice.post(f"/images/{image.pk}/location/", {"share_location": "false"})
    image.refresh_from_db()
    assert image.share_location is False


def test_only_the_owner_changes_it(client, other_user, user, make_image):
    image = make_image(user, visibility="public")
    client.force_login(other_user)
    assert client.post(f"/images/{image.pk}/location/", {"share_location": "true"}).status_code == 403
    image.refresh_from_db()
    assert image.share_location is False


def test_a_heic_loses_its_gps_in_place_and_keeps_every_pixel(make_heic):
    exif = PILImage.Exif()
    exif[0x010F] = "TestCam"
    exif[0x0112] = 6
    exif[GPS_IFD] = PARIS
    data = make_heic(exif=exif.tobytes())
    assert exif_of(data).get_ifd(GPS_IFD)[1] == "N"
    stripped = without_location(data)
    assert stripped is not None and len(stripped) == len(data)  # edited in place: every offset holds
    kept = exif_of(stripped)
    assert GPS_IFD not in kept and kept.get_ifd(GPS_IFD) == {} and kept[0x010F] == "TestCam"
    # Not just unlinked: the coordinates themselves are zeroed in the Exif item's TIFF block.
    tiff = data.index(b"Exif\x00\x00MM\x00*") + 6
    coordinates = [b"N\x00", struct.pack(">II", 48, 1), struct.pack(">II", 29, 1)]
    assert all(c in data[tiff : tiff + 400] for c in coordinates)
    assert not any(c in stripped[tiff : tiff + 400] for c in coordinates)
    with PILImage.open(io.BytesIO(data)) as a, PILImage.open(io.BytesIO(stripped)) as b:
        assert b.size == a.size == (426, 640) and a.tobytes() == b.tobytes()  # still turned, not re-encoded
    assert without_location(make_heic()) is None  # no GPS: served as it is


def test_others_get_a_heic_without_its_position(api, other_api, make_heic):
    from django.core.files.uploadedfile import SimpleUploadedFile

    exif = PILImage.Exif()
    exif[GPS_IFD] = PARIS
    data = make_heic(exif=exif.tobytes())
    upload = SimpleUploadedFile("IMG_0042.HEIC", data, content_type="image/heic")
    body = api.post("/api/v1/images/", {"image": upload, "visibility": "public"}, format="multipart").json()
    url = body["urls"]["file"].replace("http://testserver", "")
    assert b"".join(api.get(url).streaming_content) == data  # the owner: as uploaded
    served = other_api.get(url)
    assert served.status_code == 200 and served["Content-Type"] == "image/heic"
    assert GPS_IFD not in exif_of(served.content) and len(served.content) == len(data)
    # The display copy the image page shows is a WebP without any EXIF.
    thumb = other_api.get(body["urls"]["thumb"], {"size": 1600})
    with PILImage.open(io.BytesIO(b"".join(thumb.streaming_content))) as picture:
        assert picture.format == "WEBP" and "exif" not in picture.info
