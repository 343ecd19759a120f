"""/api/v1/images/: upload, list, detail, human captions, recaption, delete, and the media files."""

from __future__ import annotations

import io
import re
import struct
import threading
import time
import zlib
from io import StringIO
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from PIL import Image as PILImage

from captions import queue
from captions.models import Caption, Image
from captions.services.intake import IncomingFile, create_batch, upload_image

pytestmark = pytest.mark.django_db

IMAGES = "/api/v1/images/"


def upload(client, data: bytes, name: str = "photo.jpg", **extra):
    return client.post(
        IMAGES, {"image": SimpleUploadedFile(name, data, "image/jpeg"), **extra}, format="multipart"
    )


def assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert set(error) >= {"code", "message"} and error["message"]
    if code is not None:
        assert error["code"] == code
    return error


def test_upload_answers_202_with_the_image_and_its_urls(api, photo, media_root):
    data = photo()
    response = upload(api, data, "dog.jpg", visibility="public")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "pending"
    assert body["visibility"] == "public"
    assert body["original_name"] == "dog.jpg"
    assert body["caption"] is None and body["candidates"] == []
    assert body["duplicate"] is False
    urls = body["urls"]
    assert urls["self"] == f"http://testserver/api/v1/images/{body['id']}/"
    assert urls["page"] == f"http://testserver/images/{body['id']}/"
    assert urls["file"].startswith("http://testserver/media/images/")
    assert response["Location"] == urls["self"]

    file_response = api.get(urls["file"])
    assert file_response.status_code == 200
    assert b"".join(file_response.streaming_content) == data
    assert file_response["Content-Type"] == "image/jpeg"


def test_uploading_the_same_bytes_again_returns_the_same_image(api, photo):
    data = photo()
    first = upload(api, data).json()
    again = upload(api, data, "copy.jpg")
    assert again.status_code == 202
    assert again.json()["id"] == first["id"] and again.json()["duplicate"] is True
    assert Image.objects.count() == 1


def test_upload_needs_authentication(anon_api, photo):
    assert_error(upload(anon_api, photo()), 401, "not_authenticated")
    assert Image.objects.count() == 0


def test_session_authentication_works_too(client, user, photo, media_root):
    client.force_login(user)
    response = client.post(IMAGES, {"image": SimpleUploadedFile("a.jpg", photo(), "image/jpeg")})
    assert response.status_code == 202


@pytest.mark.parametrize(
    ("make_data", "status", "code"),
    [
        (lambda photo: b"", 400, "empty_file"),
        (lambda photo: b"GIF89a? no, just words " * 20, None, None),
        (lambda photo: b"%PDF-1.4 not a picture " * 20, None, None),
        (lambda photo: photo()[:3000], None, None),
    ],
    ids=["zero-bytes", "not-an-image", "unsupported-format", "truncated"],
)
def test_bad_uploads_get_a_4xx_and_store_nothing(api, photo, media_root, make_data, status, code):
    response = upload(api, make_data(photo))
    assert 400 <= response.status_code < 500, response.content
    assert_error(response, status or response.status_code, code)
    assert Image.objects.count() == 0
    assert not any(p.is_file() for p in Path(media_root).rglob("*"))


def test_too_big_is_413(api, photo, settings, media_root):
    data = photo()
    settings.IMGCAP_MAX_UPLOAD_BYTES = len(data) // 2
    assert_error(upload(api, data), 413)
    assert Image.objects.count() == 0


def test_too_big_message_tells_the_size_from_the_limit(api, settings, media_root):
    # 21,000,000 bytes and 20 MiB both round to "20.0 MiB"; the message must not say 20.0 is over 20.0.
    settings.IMGCAP_MAX_UPLOAD_BYTES = 20 * 2**20
    error = assert_error(upload(api, bytes(21_000_000), "big.jpg"), 413, "file_too_large")
    assert error["message"] == "big.jpg: 21,000,000 bytes is over the limit of 20,971,520 bytes (20.0 MiB)"
    assert Image.objects.count() == 0


def test_missing_file_field_is_a_validation_error(api):
    error = assert_error(api.post(IMAGES, {"visibility": "public"}, format="multipart"), 400, "invalid")
    assert "image" in error["message"]


def test_list_shows_own_and_public_images_with_filters_and_pages(
    api, anon_api, user, other_user, make_image, model_version, save_captions
):
    mine_private = make_image(user)
    mine_public = make_image(user, "public")
    theirs_public = make_image(other_user, "public")
    make_image(other_user)  # private: never listed for alice
    save_captions(mine_public, model_version, ["a dog runs on the beach"])

    listed = api.get(IMAGES).json()
    assert listed["count"] == 3
    assert {r["id"] for r in listed["results"]} == {mine_private.pk, mine_public.pk, theirs_public.pk}
    by_id = {r["id"]: r for r in listed["results"]}
    assert by_id[mine_public.pk]["caption"]["text"] == "a dog runs on the beach"

    assert {r["id"] for r in anon_api.get(IMAGES).json()["results"]} == {mine_public.pk, theirs_public.pk}
    assert {r["id"] for r in api.get(IMAGES, {"owner": "me"}).json()["results"]} == {
        mine_private.pk,
        mine_public.pk,
    }
    assert [r["id"] for r in api.get(IMAGES, {"status": "done"}).json()["results"]] == [mine_public.pk]
    assert_error(api.get(IMAGES, {"status": "sleeping"}), 400, "bad_filter")

    page1 = api.get(IMAGES, {"page_size": 2}).json()
    assert len(page1["results"]) == 2 and page1["next"] and page1["previous"] is None
    page2 = api.get(page1["next"]).json()
    assert len(page2["results"]) == 1
    assert {r["id"] for r in page1["results"] + page2["results"]} == {r["id"] for r in listed["results"]}


def test_list_filters_by_batch(api, user, photo):
    result = create_batch(owner=user, files=[IncomingFile("a.jpg", photo())])
    upload_image(owner=user, file=IncomingFile("b.jpg", photo()))
    listed = api.get(IMAGES, {"batch": result.batch.pk}).json()
    assert [r["original_name"] for r in listed["results"]] == ["a.jpg"]


def test_detail_has_the_best_caption_and_candidates(api, user, make_image, model_version, save_captions):
    image = make_image(user)
    save_captions(image, model_version, ["a dog runs", "a dog is running", "a brown dog"], [-0.3, -0.4, -0.9])
    body = api.get(f"{IMAGES}{image.pk}/").json()
    assert body["status"] == "done"
    assert body["caption"]["text"] == "a dog runs"
    assert body["caption"]["score"] == pytest.approx(-0.3)
    assert body["caption"]["model"] == model_version.name
    assert body["caption"]["source"] == "model"
    assert [(c["text"], c["rank"]) for c in body["candidates"]] == [
        ("a dog runs", 0),
        ("a dog is running", 1),
        ("a brown dog", 2),
    ]


def test_another_users_private_image_is_404_everywhere(api, other_api, anon_api, user, make_image):
    image = make_image(user)
    detail = f"{IMAGES}{image.pk}/"
    file_url = api.get(detail).json()["urls"]["file"]
    for client in (other_api, anon_api):
        assert_error(client.get(detail), 404, "not_found")
        assert client.get(file_url).status_code == 404
        assert client.patch(detail, {"caption": "mine now"}, format="json").status_code in (401, 404)
        assert client.delete(detail).status_code in (401, 404)
        assert client.post(f"{detail}recaption/").status_code in (401, 404)
    assert api.get(file_url).status_code == 200
    assert Image.objects.filter(pk=image.pk).exists()


def test_a_public_image_is_visible_but_only_its_owner_changes_it(other_api, anon_api, user, make_image):
    image = make_image(user, "public")
    detail = f"{IMAGES}{image.pk}/"
    assert other_api.get(detail).status_code == 200
    assert anon_api.get(detail).status_code == 200
    file_url = other_api.get(detail).json()["urls"]["file"]
    assert anon_api.get(file_url).status_code == 200
    assert_error(other_api.patch(detail, {"caption": "hijack"}, format="json"), 403)
    assert_error(other_api.delete(detail), 403)
    assert Caption.objects.count() == 0


def test_patch_records_a_human_caption_and_keeps_model_ones(
    api, user, make_image, model_version, save_captions
):
    image = make_image(user)
    save_captions(image, model_version, ["a dog runs"])
    response = api.patch(f"{IMAGES}{image.pk}/", {"caption": "Rex chasing a ball"}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["caption"]["text"] == "Rex chasing a ball" and body["caption"]["source"] == "human"
    assert body["caption"]["score"] is None
    assert [c["text"] for c in body["candidates"]] == ["a dog runs"]
    assert Caption.objects.filter(image=image).count() == 2

    assert (
        api.patch(f"{IMAGES}{image.pk}/", {"visibility": "public"}, format="json").json()["visibility"]
        == "public"
    )
    assert_error(api.patch(f"{IMAGES}{image.pk}/", {"caption": "   "}, format="json"), 400, "empty_caption")
    assert_error(api.patch(f"{IMAGES}{image.pk}/", {}, format="json"), 400, "invalid")


def test_recaption_queues_again_and_keeps_captions(
    api, user, make_image, model_version, save_captions, queued_ids, django_capture_on_commit_callbacks
):
    image = make_image(user)
    assert_error(api.post(f"{IMAGES}{image.pk}/recaption/"), 409, "already_queued")
    save_captions(image, model_version, ["a dog runs"])
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"{IMAGES}{image.pk}/recaption/")
    assert response.status_code == 202
    assert response.json()["status"] == "pending"
    assert response.json()["caption"]["text"] == "a dog runs"  # old captions stay until new ones arrive
    assert queued_ids() == [image.pk]


def test_retry_a_failed_image(api, user, make_image):
    image = make_image(user)
    assert_error(api.post(f"{IMAGES}{image.pk}/retry/"), 409, "not_failed")
    queue.mark_failed(image=image, error="decoder exploded")
    assert api.get(f"{IMAGES}{image.pk}/").json()["error"] == "decoder exploded"
    response = api.post(f"{IMAGES}{image.pk}/retry/")
    assert response.status_code == 202 and response.json()["status"] == "pending"


def test_delete_removes_the_image_and_its_file(
    api, user, make_image, media_root, django_capture_on_commit_callbacks
):
    image = make_image(user)
    path = media_root / image.file.name
    with django_capture_on_commit_callbacks(execute=True):
        response = api.delete(f"{IMAGES}{image.pk}/")
    assert response.status_code == 204
    assert not path.exists()
    assert_error(api.get(f"{IMAGES}{image.pk}/"), 404)


def test_model_versions_are_listed(api, model_version):
    body = api.get("/api/v1/models/").json()
    assert [(m["name"], m["active"]) for m in body["results"]] == [(model_version.name, True)]


def test_token_from_drf_create_token_works(user, photo, media_root):
    from django.core.management import call_command
    from rest_framework.test import APIClient

    out = StringIO()
    call_command("drf_create_token", user.username, stdout=out)
    key = re.search(r"\b([0-9a-f]{40})\b", out.getvalue()).group(1)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert upload(client, photo()).status_code == 202


def test_list_takes_many_ids_at_once_and_only_shows_visible_ones(api, user, other_user, make_image):
    mine = [make_image(user) for _ in range(3)]
    theirs_private = make_image(other_user)
    ids = ",".join(str(i.pk) for i in [*mine, theirs_private])
    listed = api.get(IMAGES, {"ids": ids, "page_size": 200}).json()
    assert sorted(r["id"] for r in listed["results"]) == sorted(i.pk for i in mine)
    assert api.get(IMAGES, {"ids": f"{mine[0].pk}", "status": "done"}).json()["count"] == 0

    assert_error(api.get(IMAGES, {"ids": "1,two"}), 400, "bad_filter")
    assert_error(api.get(IMAGES, {"ids": ",".join(map(str, range(1, 202)))}), 400, "bad_filter")


def test_needs_review_lists_images_whose_shown_caption_the_model_is_unsure_of(
    api, user, other_user, make_image, model_version, save_captions, settings
):
    from captions.services.images import add_human_caption
    from captions.services.model_versions import ensure_model_version

    def captioned(confidence: float | None, version=model_version, owner=user) -> Image:
        image = make_image(owner, "public")
        save_captions(image, version, ["a dog runs", "a dog is running"])
        Caption.objects.filter(image=image, model_version=version, rank=0).update(confidence=confidence)
        return image

    low, high, unknown = captioned(0.12), captioned(0.91), captioned(None)
    corrected = captioned(0.05)
    add_human_caption(image=corrected, text="Rex, my dog")
    pending = make_image(user)
    older = ensure_model_version(name="imgcap-older-lite0-aaaaaaaa", encoder="efficientnet_lite0", metrics={})
    only_older = captioned(0.2, older)
    # The active version's caption is what shows: the older version's doubt no longer counts.
    replaced = captioned(0.1, older)
    save_captions(replaced, model_version, ["a cat sleeps"])
    Caption.objects.filter(image=replaced, model_version=model_version, rank=0).update(confidence=0.8)
    theirs = captioned(0.1, owner=other_user)

    listed = api.get(IMAGES, {"needs_review": "true"}).json()["results"]
    assert {i["id"] for i in listed} == {low.pk, only_older.pk, theirs.pk}
    assert all(i["needs_review"] for i in listed)
    everything = {i["id"]: i for i in api.get(IMAGES).json()["results"]}
    assert {pk for pk, i in everything.items() if i["needs_review"]} == {low.pk, only_older.pk, theirs.pk}
    assert pending.pk in everything and not everything[pending.pk]["needs_review"]
    assert everything[low.pk]["caption"]["confidence"] == pytest.approx(0.12)
    assert everything[high.pk]["candidates"][1]["confidence"] is None  # only the best one carries it
    assert everything[unknown.pk]["caption"]["confidence"] is None
    assert {i["id"] for i in api.get(IMAGES, {"needs_review": "false"}).json()["results"]} == set(everything)
    mine = api.get(IMAGES, {"needs_review": "true", "owner": "me"}).json()["results"]
    assert {i["id"] for i in mine} == {low.pk, only_older.pk}
    assert_error(api.get(IMAGES, {"needs_review": "maybe"}), 400, "bad_filter")

    settings.IMGCAP_NEEDS_REVIEW_BELOW = 0.95  # a setting: now every unsure model caption counts
    listed = {i["id"] for i in api.get(IMAGES, {"needs_review": "true"}).json()["results"]}
    assert listed == {low.pk, high.pk, only_older.pk, replaced.pk, theirs.pk}


def test_deleting_the_human_caption_goes_back_to_the_models(
    api, other_api, anon_api, user, make_image, model_version, save_captions
):
    from captions.services.images import add_human_caption

    image = make_image(user, "public")
    save_captions(image, model_version, ["a dog runs", "a dog is running"])
    url = f"{IMAGES}{image.pk}/caption/"
    assert_error(api.delete(url), 404, "no_human_caption")  # nothing to remove yet

    first = add_human_caption(image=image, text="Rex")
    add_human_caption(image=image, text="Rex in the park")
    assert api.get(f"{IMAGES}{image.pk}/").json()["caption"]["text"] == "Rex in the park"
    assert_error(other_api.delete(url), 403)  # they see it, it is not theirs
    assert_error(anon_api.delete(url), 401)
    assert_error(api.delete(f"{url}?caption=x"), 400, "bad_filter")
    assert_error(api.delete(f"{url}?caption=999999"), 404, "no_human_caption")

    assert api.delete(f"{url}?caption={first.pk}").status_code == 204  # only that one
    assert api.get(f"{IMAGES}{image.pk}/").json()["caption"]["text"] == "Rex in the park"
    assert api.delete(url).status_code == 204
    body = api.get(f"{IMAGES}{image.pk}/").json()
    assert body["caption"]["text"] == "a dog runs" and body["caption"]["source"] == "model"
    assert Caption.objects.filter(image=image, source="model").count() == 2  # the model's are kept
    image.refresh_from_db()
    assert image.embedded_caption_id == body["caption"]["id"]  # search follows the shown caption
    assert_error(api.delete(url), 404, "no_human_caption")
    assert_error(api.delete(f"{IMAGES}999999/caption/"), 404)


def test_list_by_content_hash_finds_only_your_own_uploads(api, other_api, anon_api, photo):
    import hashlib

    mine = [photo(), photo()]
    bobs_public, bobs_copy_of_mine = photo(), mine[0]
    for data in mine:
        assert upload(api, data).status_code == 202
    assert upload(other_api, bobs_public, visibility="public").status_code == 202
    assert upload(other_api, bobs_copy_of_mine).status_code == 202
    digests = [hashlib.sha256(data).hexdigest() for data in [*mine, bobs_public]] + ["0" * 64]

    listed = api.get(IMAGES, {"sha256": ",".join(digests), "page_size": 200}).json()
    # Bob's public photo is visible to Alice, but the hash filter answers for her own images only.
    assert sorted(r["sha256"] for r in listed["results"]) == sorted(digests[:2])
    assert {r["owner"] for r in listed["results"]} == {"alice"}
    upper = api.get(IMAGES, {"sha256": digests[1].upper()}).json()["results"]
    assert [r["sha256"] for r in upper] == [digests[1]]
    assert other_api.get(IMAGES, {"sha256": digests[0]}).json()["count"] == 1  # Bob's own copy
    assert anon_api.get(IMAGES, {"sha256": digests[2]}).json()["count"] == 0

    error = assert_error(api.get(IMAGES, {"sha256": "abc"}), 400, "bad_filter")
    assert error["message"].startswith("sha256:")
    assert_error(api.get(IMAGES, {"sha256": ",".join(["a" * 64] * 201)}), 400, "bad_filter")
    schema = api.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    params = {p["name"] for p in schema["paths"]["/api/v1/images/"]["get"]["parameters"]}
    assert {"ids", "sha256"} <= params


def test_files_sent_one_by_one_join_a_batch_with_their_rejections(
    api, other_api, photo, settings, media_root
):
    first = SimpleUploadedFile("a.jpg", photo())
    opened = api.post("/api/v1/batches/", {"images": [first]}, format="multipart")
    assert opened.status_code == 202
    batch_id = opened.json()["id"]

    joined = upload(api, photo(), "b.jpg", batch=batch_id)
    assert joined.status_code == 202
    assert_error(upload(api, b"not a photo at all", "notes.jpg", batch=batch_id), 415, "not_an_image")
    settings.IMGCAP_MAX_UPLOAD_BYTES = 100
    assert_error(upload(api, photo(), "huge.jpg", batch=batch_id), 413, "file_too_large")

    batch = api.get(f"/api/v1/batches/{batch_id}/").json()
    assert [item["name"] for item in batch["items"]] == ["a.jpg", "b.jpg"]
    assert joined.json()["id"] == batch["items"][1]["id"]
    assert [(r["name"], r["code"]) for r in batch["rejected"]] == [
        ("notes.jpg", "not_an_image"),
        ("huge.jpg", "file_too_large"),
    ]
    assert all(r["message"] for r in batch["rejected"])

    # Someone else's batch (or none) is refused before anything is stored.
    settings.IMGCAP_MAX_UPLOAD_BYTES = 10 * 2**20
    before = Image.objects.count()
    assert_error(upload(other_api, photo(), "c.jpg", batch=batch_id), 400, "unknown_batch")
    assert_error(upload(api, photo(), "c.jpg", batch="x"), 400)
    assert Image.objects.count() == before


def test_another_users_batch_id_lists_nothing(api, other_user, photo):
    from captions.services.intake import IncomingFile, create_batch

    theirs = create_batch(owner=other_user, files=[IncomingFile("a.jpg", photo())], visibility="public").batch
    assert api.get(IMAGES, {"batch": theirs.pk}).json()["count"] == 0  # their public image is not listed
    export = b"".join(api.get("/api/v1/export.csv", {"batch": theirs.pk}).streaming_content).decode()
    assert export.count("\n") == 1  # the header only


# --- HEIC and big photos ------------------------------------------------------------------------------


def test_a_heic_upload_is_accepted_with_its_size_and_format_and_kept_as_sent(api, make_heic, media_root):
    data = make_heic()  # a real COCO photo, 640x426, encoded as an iPhone does (HEVC, brand heic)
    response = api.post(
        IMAGES,
        {"image": SimpleUploadedFile("IMG_0042.HEIC", data, "image/heic"), "visibility": "public"},
        format="multipart",
    )
    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["width"], body["height"], body["format"]) == (640, 426, "HEIF")
    assert body["urls"]["file"].endswith(".heic")
    served = api.get(body["urls"]["file"])
    assert served["Content-Type"] == "image/heic"
    assert b"".join(served.streaming_content) == data  # the original, as uploaded

    # Thumbnails (WebP, which every browser shows) at each size, the largest for the image page.
    for size, expected in ((320, (320, 213)), (640, (640, 426)), (1600, (640, 426))):
        thumb = api.get(body["urls"]["thumb"], {"size": size})
        assert thumb.status_code == 200 and thumb["Content-Type"] == "image/webp"
        picture = PILImage.open(io.BytesIO(b"".join(thumb.streaming_content)))
        assert (picture.format, picture.size) == ("WEBP", expected)


def test_a_48_megapixel_photo_is_accepted_and_kept_whole(api, jpeg_48mp, media_root):
    data = jpeg_48mp.read_bytes()
    body = upload(api, data, "PXL_0001.jpg").json()
    assert (body["width"], body["height"], body["status"]) == (8000, 6000, "pending")
    assert (media_root / Image.objects.get(pk=body["id"]).file.name).read_bytes() == data


def test_a_150_megapixel_header_is_refused_as_too_many_pixels(api, media_root):
    # A PNG whose header says 15000 x 10000 and whose pixel data is a stub: decoding it would be
    # "image_corrupt", so too_many_pixels means the header was checked first.
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 15_000, 10_000, 8, 0, 0, 0, 0))
    stub = b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(bytes(100))) + chunk(b"IEND", b"")
    error = assert_error(upload(api, stub, "pano.png"), 413, "too_many_pixels")
    assert "the limit is 100,000,000 pixels" in error["message"]
    assert Image.objects.count() == 0


# --- long poll: GET /api/v1/images/{id}/?wait=N -----------------------------------------------------


def waited(response) -> float:
    return float(response["X-Imgcap-Waited"])


@pytest.mark.parametrize("wait", ["0", "31", "abc", "-1", "nan", "inf", "", "1e9"])
def test_wait_must_be_a_number_of_seconds_up_to_30(api, user, make_image, wait):
    image = make_image(user)
    assert_error(api.get(f"{IMAGES}{image.pk}/", {"wait": wait}), 400, "bad_wait")


def test_a_long_poll_on_a_pending_image_answers_after_the_wait(api, other_api, user, make_image):
    from prometheus_client import REGISTRY

    image = make_image(user)
    labels = {"view": "api:image-detail", "method": "GET", "status": "2xx"}
    timed_before = REGISTRY.get_sample_value("imgcap_http_request_duration_seconds_sum", labels) or 0.0
    started = time.monotonic()
    response = api.get(f"{IMAGES}{image.pk}/", {"wait": "1.2"})
    elapsed = time.monotonic() - started
    assert response.status_code == 200 and response.json()["status"] == "pending"
    assert 1.2 <= waited(response) <= elapsed < 2.5
    # The request timing leaves the wait out: the client asked for it.
    timed = REGISTRY.get_sample_value("imgcap_http_request_duration_seconds_sum", labels) - timed_before
    assert timed < 0.5

    # Nothing to wait for: a 404 at once, and a settled image at once.
    started = time.monotonic()
    assert_error(other_api.get(f"{IMAGES}{image.pk}/", {"wait": 5}), 404, "not_found")
    queue.mark_failed(image=image, error="broken")
    response = api.get(f"{IMAGES}{image.pk}/", {"wait": 5})
    assert response.json()["status"] == "failed" and waited(response) == 0.0
    assert time.monotonic() - started < 1
    assert "X-Imgcap-Waited" not in api.get(f"{IMAGES}{image.pk}/")  # only with wait


def store_after(seconds: float, image, version, text: str) -> threading.Thread:
    """A thread that stores the image's captions as the worker does, `seconds` from now."""

    def store() -> None:
        try:
            time.sleep(seconds)
            candidates = [queue.CandidateData(text=text, score=-0.3)]
            queue.store_captions(
                model_version=version, results=[(Image.objects.get(pk=image.pk), candidates)]
            )
        finally:
            connection.close()

    thread = threading.Thread(target=store)
    thread.start()
    return thread


@pytest.mark.django_db(transaction=True)
def test_a_long_poll_answers_as_soon_as_the_captions_are_stored(api, user, make_image, model_version):
    image = make_image(user)
    thread = store_after(1.0, image, model_version, "a dog runs on the grass")
    started = time.monotonic()
    response = api.get(f"{IMAGES}{image.pk}/", {"wait": 20})
    elapsed = time.monotonic() - started
    thread.join()
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "done" and body["caption"]["text"] == "a dog runs on the grass"
    assert 1.0 <= waited(response) <= elapsed < 2.5  # re-read every 0.5 s, not at the end of the wait


@pytest.mark.django_db(transaction=True)
def test_past_the_waiting_limit_a_long_poll_answers_at_once(user, make_image, settings):
    from tests.web.conftest import token_client

    settings.IMGCAP_MAX_WAITING_REQUESTS = 1
    image = make_image(user)
    detail = f"{IMAGES}{image.pk}/"
    first: dict = {}

    def wait_first() -> None:
        try:
            first["response"] = token_client(user).get(detail, {"wait": 2})
        finally:
            connection.close()

    thread = threading.Thread(target=wait_first)
    thread.start()
    time.sleep(0.5)  # the first request holds this process's one waiting slot
    started = time.monotonic()
    second = token_client(user).get(detail, {"wait": 5})
    assert time.monotonic() - started < 0.5 and waited(second) == 0.0
    assert second.json()["status"] == "pending"
    thread.join()
    assert 2.0 <= waited(first["response"]) < 3
    assert waited(token_client(user).get(detail, {"wait": 0.5})) >= 0.5  # the slot is free again


def test_images_are_listed_in_the_order_asked_for(api, user, make_image, model_version, save_captions):
    import datetime

    from django.utils import timezone

    a, b, c = (make_image(user, name=name) for name in ("b.jpg", "C.jpg", "a.jpg"))
    # b: taken long ago; c: no EXIF date (its upload date stands in); a: taken last year.
    now = timezone.now()
    Image.objects.filter(pk=a.pk).update(taken_at=now - datetime.timedelta(days=3000))
    Image.objects.filter(pk=b.pk).update(taken_at=now - datetime.timedelta(days=300))
    for image, confidence in ((a, 0.9), (b, 0.2)):
        save_captions(image, model_version, ["a dog"])
        image.captions.filter(rank=0).update(confidence=confidence)

    def order(sort: str | None) -> list[int]:
        params = {"owner": "me", **({"sort": sort} if sort else {})}
        return [i["id"] for i in api.get("/api/v1/images/", params).json()["results"]]

    assert order(None) == order("-added") == [c.pk, b.pk, a.pk]
    assert order("added") == [a.pk, b.pk, c.pk]
    assert order("-taken") == [c.pk, b.pk, a.pk] and order("taken") == [a.pk, b.pk, c.pk]
    assert order("name") == [c.pk, a.pk, b.pk] and order("-name") == [b.pk, a.pk, c.pk]
    assert order("confidence") == [b.pk, a.pk, c.pk]  # none yet: last either way
    assert order("-confidence") == [a.pk, b.pk, c.pk]
    refused = api.get("/api/v1/images/", {"sort": "size"})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "bad_filter"
