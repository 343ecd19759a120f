"""/api/v1/batches/: many files, URLs or a zip; partial acceptance; Idempotency-Key; status and counts."""

from __future__ import annotations

import io
import math
import time
import zipfile
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from captions import queue
from captions.models import Batch, Image
from captions.services import url_fetches
from captions.services.intake import IncomingFile, create_batch, upload_image

pytestmark = pytest.mark.django_db

BATCHES = "/api/v1/batches/"


def files(*items: tuple[str, bytes]) -> list[SimpleUploadedFile]:
    return [SimpleUploadedFile(name, data, "application/octet-stream") for name, data in items]


def zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_many_files_make_a_batch_with_every_item(api, photo, queued_ids, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            BATCHES,
            {
                "images": files(("a.jpg", photo()), ("b.jpg", photo()), ("c.jpg", photo())),
                "visibility": "public",
            },
            format="multipart",
        )
    assert response.status_code == 202, response.content
    body = response.json()
    assert [item["name"] for item in body["items"]] == ["a.jpg", "b.jpg", "c.jpg"]
    ids = [item["id"] for item in body["items"]]
    assert sorted(queued_ids()) == sorted(ids)
    assert body["rejected"] == []
    assert body["counts"] == {"pending": 3, "processing": 0, "done": 0, "failed": 0}
    assert body["status"] == "pending"
    assert body["urls"]["self"] == f"http://testserver/api/v1/batches/{body['id']}/"
    assert set(Image.objects.values_list("visibility", flat=True)) == {"public"}
    assert all(item["urls"]["file"].startswith("http://testserver/media/") for item in body["items"])


def test_a_batch_is_queued_in_messages_of_batch_max_ids(
    api, photo, settings, broker_messages, django_capture_on_commit_callbacks
):
    # 20 files with IMGCAP_MICRO_BATCH_MAX 16: two caption_images messages (16 + 4 ids), not 20 single ones.
    assert settings.IMGCAP_MICRO_BATCH_MAX == 16
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            BATCHES, {"images": files(*((f"{i}.jpg", photo()) for i in range(20)))}, format="multipart"
        )
    assert response.status_code == 202, response.content
    ids = [item["id"] for item in response.json()["items"]]
    messages = [m for m in broker_messages() if m["task"] == "imgcap.caption_images"]
    assert len(messages) == math.ceil(20 / settings.IMGCAP_MICRO_BATCH_MAX) == 2
    assert sorted(len(m["args"][0]) for m in messages) == [4, 16]
    assert sorted(i for m in messages for i in m["args"][0]) == sorted(ids)
    assert {m["queue"] for m in messages} == {"caption"}


def test_bad_files_are_rejected_one_by_one(api, photo):
    response = api.post(
        BATCHES,
        {"images": files(("good.jpg", photo()), ("empty.jpg", b""), ("text.jpg", b"no picture " * 30))},
        format="multipart",
    )
    assert response.status_code == 202
    body = response.json()
    assert [i["name"] for i in body["items"]] == ["good.jpg"]
    assert [(r["name"], bool(r["code"]), bool(r["message"])) for r in body["rejected"]] == [
        ("empty.jpg", True, True),
        ("text.jpg", True, True),
    ]


def test_a_batch_with_no_good_file_is_a_4xx_and_stores_nothing(api):
    response = api.post(
        BATCHES, {"images": files(("empty.jpg", b""), ("t.jpg", b"words " * 40))}, format="multipart"
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "no_acceptable_images"
    assert [r["name"] for r in error["rejected"]] == ["empty.jpg", "t.jpg"]
    assert Batch.objects.count() == 0 and Image.objects.count() == 0


def test_an_empty_request_says_what_to_send(api):
    response = api.post(BATCHES, {}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "no_images"


def test_a_zip_archive(api, photo):
    archive = zip_of({"trip/one.jpg": photo(), "trip/two.jpg": photo(), "trip/readme.txt": b"hello " * 20})
    response = api.post(BATCHES, {"archive": SimpleUploadedFile("trip.zip", archive)}, format="multipart")
    assert response.status_code == 202, response.content
    body = response.json()
    assert sorted(i["name"] for i in body["items"]) == ["one.jpg", "two.jpg"]
    assert [r["name"] for r in body["rejected"]] == ["readme.txt"]


@pytest.mark.parametrize(
    "archive",
    [
        b"PK\x03\x04 this is not really a zip",
        zip_of({"../../etc/passwd.jpg": b"x" * 100}),
        zip_of({"inner.zip": zip_of({"a.jpg": b"y" * 100})}),
    ],
    ids=["not-a-zip", "path-traversal", "nested-archive"],
)
def test_bad_archives_are_a_4xx(api, archive, media_root):
    response = api.post(BATCHES, {"archive": SimpleUploadedFile("bad.zip", archive)}, format="multipart")
    assert 400 <= response.status_code < 500, response.content
    assert response.json()["error"]["message"]
    assert Batch.objects.count() == 0 and Image.objects.count() == 0


def test_a_zip_bomb_is_refused(api, settings):
    settings.IMGCAP_ARCHIVE_MAX_RATIO = 100
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.jpg", b"\0" * 5_000_000)
    response = api.post(
        BATCHES, {"archive": SimpleUploadedFile("bomb.zip", buffer.getvalue())}, format="multipart"
    )
    assert 400 <= response.status_code < 500
    assert Image.objects.count() == 0


def fetch_as_the_worker_does(batch_id: int, claim: str = "test-task") -> url_fetches.FetchReport:
    """What a fetch worker runs for the batch's message (worker/tasks.py: fetch_urls)."""
    return url_fetches.fetch_waiting_urls(batch_id, claim=claim)


def test_urls_are_answered_at_once_then_fetched_into_the_batch_in_order(
    api, photo, photo_server, settings, broker_messages, django_capture_on_commit_callbacks
):
    settings.IMGCAP_URL_ALLOW_PRIVATE = True  # the test server is on 127.0.0.1
    urls = [f"{photo_server}/a.jpg", f"{photo_server}/gone.jpg", f"{photo_server}/b.jpg"]
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            BATCHES, {"images": files(("first.jpg", photo())), "urls": urls}, format="multipart"
        )
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "fetching" and body["fetching"] == urls
    assert [i["name"] for i in body["items"]] == ["first.jpg"] and body["rejected"] == []
    sent = [m for m in broker_messages() if m["task"] == "imgcap.fetch_urls"]
    assert [(m["queue"], m["args"]) for m in sent] == [("fetch", [body["id"]])]

    with django_capture_on_commit_callbacks(execute=True):
        report = fetch_as_the_worker_does(body["id"])
    assert sorted(report.fetched) == sorted(urls[::2]) and report.rejected == [urls[1]]
    after = api.get(f"{BATCHES}{body['id']}/").json()
    assert after["fetching"] == [] and after["status"] == "pending"
    assert [i["name"] for i in after["items"]] == ["first.jpg", "a.jpg", "b.jpg"]  # the order given
    assert [(r["name"], r["code"]) for r in after["rejected"]] == [(urls[1], "url_error")]
    queued = [m["args"][0] for m in broker_messages() if m["task"] == "imgcap.caption_images"]
    assert sorted(sum(queued, [])) == sorted(i["id"] for i in after["items"])
    # The message delivered again (a redelivery, the reaper) finds nothing left to do.
    assert fetch_as_the_worker_does(body["id"], claim="another").skipped == "no URLs waiting"
    assert Image.objects.count() == 3


def test_a_url_batch_stays_one_batch_under_its_idempotency_key(api, photo_server, settings):
    settings.IMGCAP_URL_ALLOW_PRIVATE = True
    send = {"urls": [f"{photo_server}/a.jpg"]}
    first = api.post(BATCHES, send, format="json", HTTP_IDEMPOTENCY_KEY="urls-1").json()
    fetch_as_the_worker_does(first["id"])
    again = api.post(BATCHES, send, format="json", HTTP_IDEMPOTENCY_KEY="urls-1")
    assert again["Idempotent-Replayed"] == "true" and again.json()["id"] == first["id"]
    assert [i["name"] for i in again.json()["items"]] == ["a.jpg"] and Batch.objects.count() == 1


def test_urls_share_one_deadline_so_slow_ones_cannot_hold_a_fetch_worker(api, photo_server, settings):
    settings.IMGCAP_URL_ALLOW_PRIVATE = True
    settings.IMGCAP_URL_BATCH_DEADLINE_S = 1.0
    slow = [f"{photo_server}/slow/a.jpg?{i}" for i in range(12)]  # 8 fetched at a time
    started = time.monotonic()
    response = api.post(BATCHES, {"urls": [f"{photo_server}/a.jpg", *slow]}, format="json")
    assert time.monotonic() - started < 1  # the web request waits for none of them
    assert response.status_code == 202 and len(response.json()["fetching"]) == 13
    started = time.monotonic()
    fetch_as_the_worker_does(response.json()["id"])
    assert time.monotonic() - started < 4  # not 12 x 2 s, nor 2 rounds of the per-URL timeout
    body = api.get(f"{BATCHES}{response.json()['id']}/").json()
    assert [i["name"] for i in body["items"]] == ["a.jpg"] and body["fetching"] == []
    codes = {r["code"] for r in body["rejected"]}
    assert len(body["rejected"]) == 12 and "url_batch_deadline" in codes <= {
        "url_timeout",
        "url_batch_deadline",
    }


def test_a_claimed_batch_is_fetched_once_until_its_claim_expires(api, photo_server, settings):
    settings.IMGCAP_URL_ALLOW_PRIVATE = True
    settings.IMGCAP_MAX_ATTEMPTS = 2
    batch_id = api.post(BATCHES, {"urls": [f"{photo_server}/a.jpg"]}, format="json").json()["id"]
    # A worker claimed it and died (kill -9) before fetching anything.
    Batch.objects.filter(pk=batch_id).update(urls_claimed_by="dead-task", urls_claimed_at=timezone.now())
    assert fetch_as_the_worker_does(batch_id).skipped == "claimed by another task"
    expired = timezone.now() - timedelta(seconds=settings.IMGCAP_URL_BATCH_DEADLINE_S + 60)
    Batch.objects.filter(pk=batch_id).update(urls_claimed_at=expired)
    assert url_fetches.resend_lost_fetches(after_s=20) == [batch_id]  # the reaper notices
    assert fetch_as_the_worker_does(batch_id).fetched == [f"{photo_server}/a.jpg"]
    batch = Batch.objects.get(pk=batch_id)
    assert batch.urls_waiting == [] and batch.urls_claimed_by == "" and batch.items.count() == 1


def test_a_url_that_kills_its_workers_is_given_up_after_max_attempts(api, photo_server, settings):
    settings.IMGCAP_URL_ALLOW_PRIVATE = True
    settings.IMGCAP_MAX_ATTEMPTS = 2
    batch_id = api.post(BATCHES, {"urls": [f"{photo_server}/a.jpg"]}, format="json").json()["id"]
    expired = timezone.now() - timedelta(seconds=settings.IMGCAP_URL_BATCH_DEADLINE_S + 60)
    entry = Batch.objects.get(pk=batch_id).urls_waiting[0]
    Batch.objects.filter(pk=batch_id).update(
        urls_waiting=[{**entry, "attempts": 2}], urls_claimed_by="dead-task", urls_claimed_at=expired
    )
    assert fetch_as_the_worker_does(batch_id).fetched == []
    body = api.get(f"{BATCHES}{batch_id}/").json()
    assert body["fetching"] == [] and body["status"] == "done"
    assert [r["code"] for r in body["rejected"]] == ["url_gave_up"]


def test_the_reaper_asks_again_for_urls_whose_message_was_lost(
    api, photo_server, settings, broker_messages, django_capture_on_commit_callbacks
):
    settings.IMGCAP_URL_ALLOW_PRIVATE = True
    batch_id = api.post(BATCHES, {"urls": [f"{photo_server}/a.jpg"]}, format="json").json()["id"]
    assert url_fetches.resend_lost_fetches(after_s=20) == []  # sent just now: not lost yet
    Batch.objects.filter(pk=batch_id).update(urls_sent_at=timezone.now() - timedelta(seconds=21))
    with django_capture_on_commit_callbacks(execute=True):
        assert url_fetches.resend_lost_fetches(after_s=20) == [batch_id]
    assert [m["args"] for m in broker_messages() if m["task"] == "imgcap.fetch_urls"] == [[batch_id]]
    assert url_fetches.resend_lost_fetches(after_s=20) == []  # sent again: its clock restarted


def test_too_many_urls_or_bytes_in_one_batch_is_a_413_before_anything_is_read(api, photo, settings):
    settings.IMGCAP_MAX_BATCH_URLS = 2
    urls = [f"https://example.org/{i}.jpg" for i in range(3)]
    refused = api.post(BATCHES, {"urls": urls}, format="json")
    assert refused.status_code == 413 and refused.json()["error"]["code"] == "too_many_urls"

    data = photo()
    settings.IMGCAP_MAX_BATCH_BYTES = 2 * len(data) - 1
    files_ = [SimpleUploadedFile(f"{i}.jpg", data) for i in range(2)]
    refused = api.post(BATCHES, {"images": files_}, format="multipart")
    assert refused.status_code == 413 and refused.json()["error"]["code"] == "batch_too_large"
    assert "split them" in refused.json()["error"]["message"]
    assert Batch.objects.count() == 0 and Image.objects.count() == 0


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/a.jpg",
        "file:///etc/passwd",
        "http://127.0.0.1:9/a.jpg",
        "http://169.254.169.254/latest/",
    ],
    ids=["ftp", "file", "loopback", "metadata"],
)
def test_bad_urls_are_a_4xx(api, url):
    response = api.post(BATCHES, {"urls": [url]}, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["message"]
    assert Batch.objects.count() == 0


def test_more_files_than_django_accepts_is_a_clean_413(api, photo, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 2
    response = api.post(
        BATCHES,
        {"images": files(("a.jpg", photo()), ("b.jpg", photo()), ("c.jpg", photo()))},
        format="multipart",
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_many_files"
    assert Image.objects.count() == 0


def test_more_files_than_a_batch_takes_is_413(api, photo, settings):
    settings.IMGCAP_MAX_BATCH_FILES = 2
    response = api.post(
        BATCHES,
        {"images": files(("a.jpg", photo()), ("b.jpg", photo()), ("c.jpg", photo()))},
        format="multipart",
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_many_files"
    assert Image.objects.count() == 0


def test_idempotency_key_returns_the_same_batch(api, photo, queued_ids, django_capture_on_commit_callbacks):
    payload = {"images": files(("a.jpg", photo()), ("b.jpg", photo()))}
    first = api.post(BATCHES, payload, format="multipart", HTTP_IDEMPOTENCY_KEY="upload-42")
    assert first.status_code == 202
    with django_capture_on_commit_callbacks(execute=True):
        again = api.post(
            BATCHES,
            {"images": files(("c.jpg", photo()))},
            format="multipart",
            HTTP_IDEMPOTENCY_KEY="upload-42",
        )
    assert again.status_code == 202
    assert again["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert [i["id"] for i in again.json()["items"]] == [i["id"] for i in first.json()["items"]]
    assert Batch.objects.count() == 1 and Image.objects.count() == 2
    assert queued_ids() == []
    # Another key is another batch.
    other = api.post(
        BATCHES, {"images": files(("c.jpg", photo()))}, format="multipart", HTTP_IDEMPOTENCY_KEY="x"
    )
    assert other.json()["id"] != first.json()["id"]


def test_batch_status_counts_and_visibility(api, other_api, user, photo, model_version, save_captions):
    result = create_batch(owner=user, files=[IncomingFile(f"{i}.jpg", photo()) for i in range(4)])
    images = [item.image for item in result.batch.items.order_by("position")]
    claimed = queue.claim_images(limit=2)
    assert [im.pk for im in claimed] == [im.pk for im in images[:2]]  # the oldest two: items 0 and 1
    save_captions(claimed[0], model_version, ["a dog runs"])
    queue.mark_failed(image=claimed[1], error="broken")

    body = api.get(f"{BATCHES}{result.batch.pk}/").json()
    assert body["counts"] == {"pending": 2, "processing": 0, "done": 1, "failed": 1}
    assert body["status"] == "processing"
    assert [i["status"] for i in body["items"]] == ["done", "failed", "pending", "pending"]

    assert other_api.get(f"{BATCHES}{result.batch.pk}/").status_code == 404
    listed = api.get(BATCHES).json()
    assert [(b["id"], b["items"]) for b in listed["results"]] == [(result.batch.pk, 4)]
    assert other_api.get(BATCHES).json()["count"] == 0


def test_a_batch_lists_already_known_images_as_duplicates(api, user, photo):
    data = photo()
    known = upload_image(owner=user, file=IncomingFile("known.jpg", data)).image
    response = api.post(
        BATCHES, {"images": files(("again.jpg", data), ("new.jpg", photo()))}, format="multipart"
    )
    items = response.json()["items"]
    assert [(i["id"] == known.pk, i["duplicate"]) for i in items] == [(True, True), (False, False)]
    assert Image.objects.count() == 2
