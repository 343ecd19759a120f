"""Upload → queue → worker → captions, end to end with real services.

Real Postgres (the embedded server's test database, committed rows: transaction=True), real Redis
(db 9) and one real `celery worker` process per module running the tiny TF model.
Uploads go through the REST API.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import kombu.pools
import pytest
import redis
from django.db import connection
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from captions.models import Image, ModelVersion
from imgcap_site.celery import app as celery_app
from tests.web.platform_harness import database_url, unique_jpeg, wait_for

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
FLICKR_IMAGES = DATA / "flickr8k" / "images"
COCO_IMAGES = DATA / "coco-mini" / "val2017"
REDIS_DB = 9
BROKER_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"
BATCH_WAIT_MS = 500
CAPTION_TIMEOUT_S = 90

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

BATCH_LINE = re.compile(r"imgcap micro-batch: (\d+) images? in one model call.*\(ids \[([\d, ]*)\]\)")


def real_photos(folder: Path, n: int) -> list[Path]:
    found = sorted(folder.glob("*.jpg"))[:n]
    if len(found) < n:
        pytest.skip(f"real photos not found in {folder}")
    return found


def reset_publisher() -> None:
    """Drop the in-process Celery connection pools so the next send uses the current broker_url."""
    if celery_app._pool is not None:
        celery_app._pool.force_close_all()
    celery_app._pool = None
    celery_app.amqp._producer_pool = None
    # kombu also keeps producer pools in a process-wide registry keyed by connection; left there, the
    # closed pool would be handed out again once the old broker_url is back.
    kombu.pools.reset()


@contextmanager
def publishing_to(url: str) -> Iterator[None]:
    """This test process sends tasks to `url` (the worker's broker) instead of the settings' one."""
    conf = celery_app.conf
    saved = conf.broker_url, conf.broker_transport_options
    conf.broker_url, conf.broker_transport_options = url, {}
    reset_publisher()
    try:
        yield
    finally:
        conf.broker_url, conf.broker_transport_options = saved
        reset_publisher()


class Worker:
    def __init__(self, process: subprocess.Popen, log: Path) -> None:
        self.process, self.log = process, log

    def batches(self, ids: set[int]) -> list[list[int]]:
        """The batches (lists of image ids) this worker logged that contain any of `ids`."""
        found = []
        for match in BATCH_LINE.finditer(self.log.read_text()):
            batch = [int(i) for i in match.group(2).split(",") if i.strip()]
            assert len(batch) == int(match.group(1))
            if ids & set(batch):
                found.append(batch)
        return found


def start_worker(db_name: str, tiny_run: Path, log: Path, broker_url: str, **env: str) -> subprocess.Popen:
    """A real `celery worker` process running the tiny model, once it says its captioner is ready."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "imgcap_site.settings.test",
        "DATABASE_URL": database_url(db_name),
        "CELERY_BROKER_URL": broker_url,
        "IMGCAP_MODEL_DIR": str(tiny_run),
        "IMGCAP_MICRO_BATCH_MAX": "16",
        "IMGCAP_MICRO_BATCH_WAIT_MS": str(BATCH_WAIT_MS),
        "IMGCAP_MAX_ATTEMPTS": "3",
        "IMGCAP_STALE_AFTER_S": "600",
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    command = [sys.executable, "-m", "celery", "-A", "imgcap_site", "worker", "-Q", "caption,default,fetch"]
    command += [
        "--pool",
        "solo",
        "--concurrency",
        "1",
        "--loglevel",
        "INFO",
        "-n",
        f"e2e-{uuid.uuid4().hex[:8]}@%h",
    ]
    command += ["--without-mingle", "--without-gossip"]
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    wait_for(
        lambda: process.poll() is not None or "imgcap captioner ready" in log.read_text(),
        120,
        "the worker to load the model",
        log,
    )
    assert process.poll() is None, f"worker exited ({process.returncode}):\n{log.read_text()[-4000:]}"
    return process


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def worker(django_db_setup, django_db_blocker, tiny_run, tmp_path_factory) -> Iterator[Worker]:
    with django_db_blocker.unblock():
        db_name = connection.settings_dict["NAME"]
    redis.Redis.from_url(BROKER_URL).flushdb()
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    process = start_worker(db_name, tiny_run, log, BROKER_URL, IMGCAP_URL_ALLOW_PRIVATE="1")
    try:
        with publishing_to(BROKER_URL):
            yield Worker(process, log)
    finally:
        stop(process)


@pytest.fixture
def api(worker, django_user_model) -> APIClient:
    user = django_user_model.objects.create_user(
        username=f"e2e-{uuid.uuid4().hex[:8]}", password="pw-e2e-12345"
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    client.user = user
    return client


def upload(api: APIClient, name: str, data: bytes) -> dict:
    response = api.post("/api/v1/images/", {"image": io_file(name, data)}, format="multipart")
    assert response.status_code == 202, response.content
    return response.json()


def io_file(name: str, data: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data, content_type="image/jpeg")


def wait_until(api: APIClient, image_id: int, statuses: set[str], worker: Worker) -> dict:
    def check() -> dict | None:
        body = api.get(f"/api/v1/images/{image_id}/").json()
        return body if body["status"] in statuses else None

    return wait_for(check, CAPTION_TIMEOUT_S, f"image {image_id} to be {statuses}", worker.log)


def test_uploads_are_captioned_then_found_by_search_and_export(worker, api):
    photos = [*real_photos(FLICKR_IMAGES, 2), *real_photos(COCO_IMAGES, 1)]
    uploaded = [upload(api, p.name, unique_jpeg(p)) for p in photos]
    assert all(item["status"] in {"pending", "processing", "done"} for item in uploaded)

    done = [wait_until(api, item["id"], {"done", "failed"}, worker) for item in uploaded]
    version = ModelVersion.objects.get(active=True)
    for body, photo in zip(done, photos, strict=True):
        assert body["status"] == "done", body
        assert body["original_name"] == photo.name and body["attempts"] == 1
        assert body["caption"]["text"] and body["caption"]["source"] == "model"
        assert body["caption"]["model"] == version.name
        ranks = [c["rank"] for c in body["candidates"]]
        assert ranks == list(range(len(ranks))) and 1 <= len(ranks) <= 3
        assert body["candidates"][0]["text"] == body["caption"]["text"]
    assert version.encoder == "efficientnet_lite0"
    assert api.get("/api/v1/models/").json()["results"][0]["name"] == version.name
    # From the same forward pass: concept tags, the pooled features, and the best caption's embedding
    # as the image's search vector (the tiny model has no photo projection: no visual vector).
    for body in done:
        image = Image.objects.get(pk=body["id"])
        assert body["tags"] and all(0 < t["score"] <= 1 for t in body["tags"])
        assert image.features is not None and len(image.features) == 1280
        assert image.features_model_version == version and image.visual_embedding is None
        assert image.embedded_caption.text == body["caption"]["text"] and len(image.caption_embedding) == 384
    similar = api.get(done[0]["urls"]["similar"]).json()
    assert {hit["image"]["id"] for hit in similar} == {done[1]["id"], done[2]["id"]}

    # Search by the longest word of the first image's caption (stop words like "a" are not indexed).
    first = done[0]
    word = max(first["caption"]["text"].split(), key=len)
    hits = api.get("/api/v1/search/", {"q": word}).json()["results"]
    assert first["id"] in [hit["image"]["id"] for hit in hits], hits
    assert "<mark>" in next(hit["snippet"] for hit in hits if hit["image"]["id"] == first["id"])

    csv_response = api.get("/api/v1/export.csv")
    assert csv_response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(b"".join(csv_response.streaming_content).decode())))
    for body in done:
        best = [r for r in rows if r["image_id"] == str(body["id"]) and r["rank"] == "0"]
        assert [(r["caption"], r["source"], r["model_version"]) for r in best] == [
            (body["caption"]["text"], "model", version.name)
        ]
        assert best[0]["image_url"] == body["urls"]["file"]

    jsonl = b"".join(api.get("/api/v1/export.jsonl").streaming_content).decode().splitlines()
    exported = {(row["image_id"], row["rank"]): row["caption"] for row in map(json.loads, jsonl)}
    for body in done:
        assert exported[(body["id"], 0)] == body["caption"]["text"]


def test_a_url_batch_is_answered_at_once_then_fetched_and_captioned_by_the_worker(
    worker, api, photo_server, settings
):
    settings.IMGCAP_URL_ALLOW_PRIVATE = True  # the photo server is on 127.0.0.1 (the worker's env too)
    urls = [f"{photo_server}/slow/a.jpg", f"{photo_server}/gone.jpg", f"{photo_server}/b.jpg"]
    started = time.monotonic()
    response = api.post("/api/v1/batches/", {"urls": urls}, format="json")
    assert time.monotonic() - started < 1.5  # the slow URL takes 2 s: the answer did not wait for it
    assert response.status_code == 202 and response.json()["status"] == "fetching"

    def finished() -> dict | None:
        body = api.get(response.json()["urls"]["self"]).json()
        return body if body["status"] == "done" else None

    body = wait_for(finished, CAPTION_TIMEOUT_S, "the URL batch to be fetched and captioned", worker.log)
    assert [i["name"] for i in body["items"]] == ["a.jpg", "b.jpg"] and body["fetching"] == []
    assert [(r["name"], r["code"]) for r in body["rejected"]] == [(urls[1], "url_error")]
    assert body["counts"]["done"] == 2
    assert f"imgcap batch {body['id']}: fetched 2 URLs, refused 1" in worker.log.read_text()


def test_a_webhook_hears_of_an_uploaded_images_caption_and_a_long_poll_answers_with_it(
    worker, api, webhook_receiver, settings
):
    from standardwebhooks import Webhook as Verifier

    settings.IMGCAP_URL_ALLOW_PRIVATE = True  # the receiver is on 127.0.0.1 (the worker's env too)
    registered = api.post(
        "/api/v1/webhooks/", {"url": webhook_receiver.url, "events": ["caption.done"]}, format="json"
    )
    assert registered.status_code == 201, registered.content
    hook = registered.json()
    photo = real_photos(FLICKR_IMAGES, 1)[0]
    image_id = upload(api, photo.name, unique_jpeg(photo))["id"]

    # One request that waits for the worker, instead of polling.
    polled = api.get(f"/api/v1/images/{image_id}/", {"wait": 30})
    assert polled.status_code == 200 and polled.json()["status"] == "done", polled.json()
    assert float(polled["X-Imgcap-Waited"]) < 30

    # The worker's fetch queue POSTs caption.done, signed with the webhook's secret.
    (post,) = webhook_receiver.wait_for(1, CAPTION_TIMEOUT_S)
    body = Verifier(hook["secret"]).verify(post["body"], post["headers"])
    assert (body["type"], body["data"]["id"], body["data"]["status"]) == ("caption.done", image_id, "done")
    assert body["data"]["caption"] == polled.json()["caption"]["text"]
    assert body["data"]["model_version"] == polled.json()["caption"]["model"]

    def delivered() -> list | None:
        found = api.get(hook["urls"]["deliveries"]).json()["results"]
        return found if found and found[0]["status"] == "delivered" else None

    (delivery,) = wait_for(delivered, 30, "the delivery to be recorded", worker.log)
    assert (delivery["attempts"], delivery["response_status"], delivery["image"]) == (1, 200, image_id)
    assert f"delivery {delivery['id']} (caption.done) delivered" in worker.log.read_text()


def test_broken_file_fails_with_its_error_and_recaption_then_retry_recover(worker, api):
    photo = real_photos(FLICKR_IMAGES, 3)[2]
    image_id = upload(api, photo.name, unique_jpeg(photo))["id"]
    assert wait_until(api, image_id, {"done", "failed"}, worker)["status"] == "done"

    path = Path(Image.objects.get(pk=image_id).file.path)
    good = path.read_bytes()
    path.write_bytes(good[:500])  # damaged on disk after it was validated
    assert api.post(f"/api/v1/images/{image_id}/recaption/").status_code == 202
    failed = wait_until(api, image_id, {"failed"}, worker)
    assert "unreadable or truncated" in failed["error"] and photo.name in failed["error"]
    assert str(path) not in failed["error"]
    # The first run's captions are kept; a failure does not erase them.
    assert failed["caption"] is not None

    path.write_bytes(good)
    assert api.post(f"/api/v1/images/{image_id}/retry/").status_code == 202
    done = wait_until(api, image_id, {"done"}, worker)
    assert done["error"] == "" and done["attempts"] == 1
    assert len(done["candidates"]) == len({c["rank"] for c in done["candidates"]})  # retry did not duplicate


def test_reaper_requeues_an_image_stuck_in_processing_and_the_worker_captions_it(worker, api):
    stuck_photo, hopeless_photo = real_photos(FLICKR_IMAGES, 5)[3:5]
    stuck = upload(api, stuck_photo.name, unique_jpeg(stuck_photo))["id"]
    hopeless = upload(api, hopeless_photo.name, unique_jpeg(hopeless_photo))["id"]
    for image_id in (stuck, hopeless):
        wait_until(api, image_id, {"done"}, worker)
    first_captioned = Image.objects.get(pk=stuck).captioned_at

    # As if a worker had been killed an hour into their batch (the broker's copy of the task is gone).
    an_hour_ago = timezone.now() - timedelta(hours=1)
    Image.objects.filter(pk=stuck).update(status="processing", processing_started_at=an_hour_ago, attempts=1)
    Image.objects.filter(pk=hopeless).update(
        status="processing", processing_started_at=an_hour_ago, attempts=3
    )

    celery_app.send_task("imgcap.requeue_stale", queue="default")  # what beat sends every few seconds
    done = wait_until(api, stuck, {"done"}, worker)
    assert done["attempts"] == 2
    assert Image.objects.get(pk=stuck).captioned_at > first_captioned
    gave_up = wait_until(api, hopeless, {"failed"}, worker)
    assert gave_up["error"] == "gave up after 3 attempts"
    assert "imgcap reaper: requeued 1 stale image " in worker.log.read_text()


def test_uploads_arriving_together_are_captioned_in_fewer_model_calls(worker, api):
    photos = real_photos(FLICKR_IMAGES, 17)[5:17]
    ids = [upload(api, p.name, unique_jpeg(p))["id"] for p in photos]  # one request each, one task each
    for image_id in ids:
        assert wait_until(api, image_id, {"done", "failed"}, worker)["status"] == "done"

    batches = worker.batches(set(ids))
    assert sorted(i for batch in batches for i in batch if i in ids) == sorted(ids)  # each captioned once
    assert len(batches) < len(ids), batches
    assert max(len(batch) for batch in batches) > 1


def test_a_killed_workers_claims_are_handed_back_and_captioned(worker, api, tiny_run, tmp_path):
    import signal
    import time

    from captions import queue
    from captions.services.intake import IncomingFile, upload_image
    from imgcap_site.queues import CAPTION_TASK

    # A second worker on a broker of its own, so that it (not the module's worker) claims the image;
    # it waits 20 s for more images before captioning, and is killed -9 while it waits.
    victim_url = f"redis://127.0.0.1:6379/{REDIS_DB + 1}"
    redis.Redis.from_url(victim_url).flushdb()
    log = tmp_path / "victim.log"
    victim = start_worker(
        connection.settings_dict["NAME"], tiny_run, log, victim_url, IMGCAP_MICRO_BATCH_WAIT_MS="20000"
    )
    try:
        photo = real_photos(FLICKR_IMAGES, 6)[5]
        with publishing_to(victim_url):
            image = upload_image(owner=api.user, file=IncomingFile(photo.name, unique_jpeg(photo))).image
            celery_app.send_task(CAPTION_TASK, args=[[image.pk]])
        wait_for(lambda: Image.objects.get(pk=image.pk).status == "processing", 60, "the victim's claim", log)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
    finally:
        stop(victim)
    assert Image.objects.get(pk=image.pk).status == "processing"  # claimed by a dead worker

    time.sleep(2.5)  # its claim falls silent (no heartbeat); the reaper hands it to the live worker
    assert queue.requeue_stale(older_than_s=2) == [image.pk]
    done = wait_until(api, image.pk, {"done"}, worker)
    assert done["attempts"] == 2 and done["caption"]


def test_a_fetch_only_worker_downloads_urls_without_loading_the_model(
    worker, api, photo_server, settings, tmp_path
):
    # What docker-compose's `fetcher` runs, on a broker of its own (so the module's worker, which
    # consumes `fetch` too, cannot be the one that fetches), with no model to load.
    settings.IMGCAP_URL_ALLOW_PRIVATE = True
    url = f"redis://127.0.0.1:6379/{REDIS_DB + 2}"
    redis.Redis.from_url(url).flushdb()
    log = tmp_path / "fetcher.log"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "imgcap_site.settings.test",
        "DATABASE_URL": database_url(connection.settings_dict["NAME"]),
        "CELERY_BROKER_URL": url,
        "IMGCAP_MODEL_DIR": str(tmp_path / "no-model-here"),
        "IMGCAP_URL_ALLOW_PRIVATE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "imgcap_site",
        "worker",
        "-Q",
        "fetch",
        "--pool",
        "threads",
    ]
    command += ["--concurrency", "2", "--loglevel", "INFO", "-n", f"fetch-{uuid.uuid4().hex[:8]}@%h"]
    with log.open("w") as out:
        fetcher = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: " ready." in log.read_text(), 60, "the fetch worker to start", log)
        with publishing_to(url):
            response = api.post("/api/v1/batches/", {"urls": [f"{photo_server}/a.jpg"]}, format="json")
        assert response.status_code == 202

        def fetched() -> dict | None:
            body = api.get(response.json()["urls"]["self"]).json()
            return body if not body["fetching"] else None

        body = wait_for(fetched, 30, "the fetch worker to download the URL", log)
        assert [i["name"] for i in body["items"]] == ["a.jpg"] and body["status"] == "pending"
        # The task logs its summary after the commit the page reads, so the line may trail the state.
        line = f"imgcap batch {body['id']}: fetched 1 URL, refused 0"
        wait_for(lambda: line in log.read_text(), 10, "the fetch worker to log its summary", log)
        text = log.read_text()
        assert "captioner" not in text  # never tried to load one (it would have logged the failure)
        # The captioning worker yields the CPU to web requests (IMGCAP_WORKER_NICE); the fetcher need not.
        assert os.getpriority(os.PRIO_PROCESS, worker.process.pid) == 10
        assert os.getpriority(os.PRIO_PROCESS, fetcher.pid) == 0
        maps = Path(f"/proc/{fetcher.pid}/maps").read_text()
        assert "tensorflow" not in maps and "libtensorflow" not in maps
    finally:
        stop(fetcher)
