"""Gallery thumbnails: made once per content and size, right-sized WebP, behind the media visibility check."""

from __future__ import annotations

import io

import pytest
from PIL import Image as PILImage

from captions import thumbnails
from captions.services.images import delete_image
from captions.services.intake import IncomingFile, upload_image

pytestmark = pytest.mark.django_db


def _picture(response) -> PILImage.Image:
    data = b"".join(response.streaming_content)
    return PILImage.open(io.BytesIO(data))


def test_a_thumbnail_is_a_small_webp_made_once_and_kept(client, user, make_image, media_root):
    image = make_image(user)
    client.force_login(user)
    response = client.get(f"/thumbs/{image.pk}/")
    assert response.status_code == 200 and response["Content-Type"] == "image/webp"
    assert response["Cache-Control"] == "private, max-age=86400"
    picture = _picture(response)
    original = PILImage.open(media_root / image.file.name)
    assert picture.format == "WEBP" and max(picture.size) == min(320, max(original.size))
    assert abs(picture.size[0] / picture.size[1] - original.size[0] / original.size[1]) < 0.02

    stored = media_root / thumbnails.thumbnail_name(image.sha256, 320)
    assert stored.is_file()
    made = stored.stat().st_mtime_ns
    assert client.get(f"/thumbs/{image.pk}/").status_code == 200
    assert stored.stat().st_mtime_ns == made  # served from storage, not made again

    large = client.get(f"/thumbs/{image.pk}/", {"size": 640})
    assert large.status_code == 200 and (media_root / thumbnails.thumbnail_name(image.sha256, 640)).is_file()


def test_thumbnails_shrink_big_pictures_and_keep_transparency(client, user, media_root):
    image = upload_image(owner=user, file=IncomingFile("logo.png", _rgba_png(1200, 800))).image
    client.force_login(user)
    picture = _picture(client.get(f"/thumbs/{image.pk}/"))
    assert picture.size == (320, 213) and picture.mode == "RGBA"
    assert picture.getpixel((0, 0))[3] == 0  # the transparent corner stays transparent


def test_thumbnails_follow_the_images_visibility(client, user, other_user, make_image):
    private = make_image(user)
    public = make_image(user, "public")
    assert client.get(f"/thumbs/{private.pk}/").status_code == 404
    assert client.get(f"/thumbs/{public.pk}/").status_code == 200
    client.force_login(other_user)
    assert client.get(f"/thumbs/{private.pk}/").status_code == 404
    assert client.get("/thumbs/999999/").status_code == 404


def test_an_unknown_size_is_a_clear_400(client, user, make_image):
    image = make_image(user, "public")
    response = client.get(f"/thumbs/{image.pk}/", {"size": 100})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error == {"code": "bad_size", "message": "size must be one of 320, 640, 1600; got 100"}
    assert client.get(f"/thumbs/{image.pk}/", {"size": "big"}).status_code == 400


def test_deleting_the_last_image_of_some_bytes_deletes_their_thumbnails(
    client, user, other_user, photo, media_root, django_capture_on_commit_callbacks
):
    data = photo()
    mine = upload_image(owner=user, file=IncomingFile("a.jpg", data), visibility="public").image
    theirs = upload_image(owner=other_user, file=IncomingFile("b.jpg", data)).image
    assert client.get(f"/thumbs/{mine.pk}/").status_code == 200
    thumb = media_root / thumbnails.thumbnail_name(mine.sha256, 320)
    with django_capture_on_commit_callbacks(execute=True):
        delete_image(image=mine)
    assert thumb.is_file()  # the other owner's image still uses these bytes
    with django_capture_on_commit_callbacks(execute=True):
        delete_image(image=theirs)
    assert not thumb.exists()


def test_make_thumbnail_turns_exif_rotated_photos_upright():
    buffer = io.BytesIO()
    exif = PILImage.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    PILImage.new("RGB", (400, 200), (10, 120, 200)).save(buffer, format="JPEG", exif=exif)
    picture = PILImage.open(io.BytesIO(thumbnails.make_thumbnail(buffer.getvalue(), 320)))
    assert picture.size == (160, 320)


def test_unreadable_bytes_raise_thumbnail_error():
    with pytest.raises(thumbnails.ThumbnailError):
        thumbnails.make_thumbnail(b"\x89PNG\r\n\x1a\n" + bytes(40), 320)


def _rgba_png(width: int, height: int) -> bytes:
    picture = PILImage.new("RGBA", (width, height), (200, 30, 30, 255))
    picture.paste((0, 0, 0, 0), (0, 0, width // 4, height // 4))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_image_page_shows_a_heic_as_a_webp_and_links_the_original(alice, user, make_image, make_heic):
    heic = make_image(user, data=make_heic(), name="IMG_0042.HEIC")
    page = alice.get(f"/images/{heic.pk}/").content.decode()
    display = f"/thumbs/{heic.pk}/?size={thumbnails.DISPLAY_SIZE}"
    assert f'<img id="photo" src="{display}"' in page
    assert f'href="/media/{heic.file.name}">original file</a> (HEIF; shown above as a WebP copy)' in page
    shown = alice.get(display)
    assert shown.status_code == 200 and shown["Content-Type"] == "image/webp"
    assert _picture(shown).size == (640, 426)  # never enlarged
    # A JPEG is shown as it is: every browser displays it.
    jpeg = make_image(user)
    page = alice.get(f"/images/{jpeg.pk}/").content.decode()
    assert f'<img id="photo" src="/media/{jpeg.file.name}"' in page and "WebP copy" not in page


def test_a_big_heic_or_tiff_gets_a_display_copy_of_1600_pixels(user, make_image, media_root):
    big = PILImage.new("RGB", (3000, 2000), (40, 90, 160))
    buffer = io.BytesIO()
    big.save(buffer, format="TIFF", compression="tiff_deflate")
    tiff = make_image(user, data=buffer.getvalue(), name="scan.tif")
    assert thumbnails.needs_display_copy(tiff)
    name = thumbnails.thumbnail_for(tiff, thumbnails.DISPLAY_SIZE)
    assert PILImage.open(media_root / name).size == (1600, 1067)
    with pytest.raises(ValueError):
        thumbnails.thumbnail_for(tiff, 2048)
