"""The micro-batcher in-process against the real database, with the real tiny TF captioner.

The end-to-end path through a real Celery worker process is in test_pipeline_e2e.py.
"""

from __future__ import annotations

import json
import logging
import struct
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from captions import queue
from captions.attention import decode_attention
from captions.models import Caption, Image, ModelVersion
from captions.services.images import add_human_caption, recaption_image, retry_image
from captions.services.intake import IncomingFile, upload_image
from ml.vocab import detokenize
from worker import micro_batches, runtime

FLICKR_IMAGES = Path(__file__).resolve().parents[3] / "shared" / "data" / "flickr8k" / "images"

pytestmark = pytest.mark.django_db


def photos(n: int) -> list[Path]:
    found = sorted(FLICKR_IMAGES.glob("*.jpg"))[:n]
    if len(found) < n:
        pytest.skip(f"real Flickr8k photos not found in {FLICKR_IMAGES}")
    return found


def unique_jpeg(path: Path) -> bytes:
    """The photo's bytes with a JPEG comment segment added: same pixels, bytes no other test shares.

    Stored files are named by content hash, so tests that damage a stored file need bytes of their own.
    """
    data = path.read_bytes()
    comment = f"imgcap test {uuid.uuid4()}".encode()
    return data[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + data[2:]


@pytest.fixture
def tiny_settings(settings, tiny_run):
    settings.IMGCAP_MODEL_DIR = str(tiny_run)
    settings.IMGCAP_MICRO_BATCH_MAX = 16
    settings.IMGCAP_MICRO_BATCH_WAIT_MS = 0
    settings.IMGCAP_N_BEST = 3
    settings.IMGCAP_BEAM_SIZE = None
    return settings


@pytest.fixture
def owner(django_user_model):
    return django_user_model.objects.create_user(
        username=f"worker-{uuid.uuid4().hex[:8]}", password="pw-12345-x"
    )


def upload(owner, path: Path, data: bytes | None = None) -> Image:
    return upload_image(owner=owner, file=IncomingFile(path.name, data or unique_jpeg(path))).image


def test_batch_stores_n_best_with_ranks_words_and_attention(tiny_settings, tiny_captioner, owner, tiny_run):
    images = [upload(owner, p) for p in photos(3)]
    report = micro_batches.caption_pending(captioner=tiny_captioner)

    # One model call for the three, oldest first.
    assert report.claimed == [im.pk for im in images]
    assert sorted(report.claimed) == sorted(im.pk for im in images)
    assert sorted(report.done) == sorted(report.claimed) and report.failed == []

    version = ModelVersion.objects.get(name=tiny_captioner.version)
    assert version.active and version.encoder == tiny_captioner.config["encoder"]["name"]
    metrics_file = Path(tiny_run) / "metrics.json"
    assert version.metrics == (json.loads(metrics_file.read_text()) if metrics_file.is_file() else {})

    direct = tiny_captioner.caption([im.file.path for im in images], n_best=3)
    for image, expected in zip(images, direct, strict=True):
        image.refresh_from_db()
        assert image.status == Image.Status.DONE and image.error == ""
        assert image.captioned_at is not None and image.processing_started_at is None
        assert image.attempts == 1
        stored = list(image.captions.order_by("rank"))
        assert [c.rank for c in stored] == list(range(len(expected.candidates)))
        assert [c.text for c in stored] == [c.text for c in expected.candidates]
        assert len(stored) == min(3, len(expected.candidates)) >= 1
        scores = [c.score for c in stored]
        assert scores == sorted(scores, reverse=True)
        # The calibrated confidence belongs to the best caption only (None when the model has none).
        assert stored[0].confidence == (
            None if expected.confidence is None else pytest.approx(expected.confidence, abs=1e-6)
        )
        assert all(c.confidence is None for c in stored[1:])
        for caption, candidate in zip(stored, expected.candidates, strict=True):
            assert caption.source == Caption.Source.MODEL and caption.model_version_id == version.pk
            assert caption.words == candidate.words and detokenize(caption.words) == caption.text
            assert caption.score == pytest.approx(candidate.score, abs=1e-4)
            attention = decode_attention(caption.attention)
            assert (
                attention.shape == candidate.attention.shape == (len(candidate.words), *attention.shape[1:])
            )
            # uint8 quantisation per word: error at most max/510 per cell
            tolerance = candidate.attention.reshape(len(candidate.words), -1).max(axis=1) / 500 + 1e-6
            assert np.all(np.abs(attention - candidate.attention) <= tolerance[:, None, None])


def test_n_best_setting_limits_candidates(tiny_settings, tiny_captioner, owner):
    tiny_settings.IMGCAP_N_BEST = 1
    image = upload(owner, photos(1)[0])
    micro_batches.caption_pending(captioner=tiny_captioner)
    assert list(image.captions.values_list("rank", flat=True)) == [0]


def test_claims_respect_batch_max_and_each_image_is_claimed_once(tiny_settings, owner):
    images = [upload(owner, p) for p in photos(5)]
    ids = [im.pk for im in images]
    first = micro_batches.claim_micro_batch(max_images=2, wait_ms=0)
    assert [im.pk for im in first] == ids[:2]
    # Those are taken: this claim gets the others, oldest first.
    second = micro_batches.claim_micro_batch(max_images=8, wait_ms=0)
    assert [im.pk for im in second] == ids[2:]
    assert micro_batches.claim_micro_batch(max_images=8, wait_ms=0) == []
    for image in Image.objects.filter(pk__in=ids):
        assert image.status == Image.Status.PROCESSING
        assert image.attempts == 1 and image.processing_started_at is not None


def test_partial_batch_waits_for_more_but_empty_claim_returns_at_once(tiny_settings, owner):
    image = upload(owner, photos(1)[0])
    started = time.monotonic()
    got = micro_batches.claim_micro_batch(max_images=4, wait_ms=300)
    waited = time.monotonic() - started
    assert [im.pk for im in got] == [image.pk]
    assert 0.3 <= waited < 3

    started = time.monotonic()
    assert micro_batches.claim_micro_batch(max_images=4, wait_ms=5000) == []
    assert time.monotonic() - started < 1


def test_task_for_images_already_captioned_does_nothing(tiny_settings, tiny_captioner, owner):
    images = [upload(owner, p) for p in photos(2)]
    ids = [im.pk for im in images]
    micro_batches.caption_pending(captioner=tiny_captioner)
    before = list(Caption.objects.filter(image_id__in=ids).order_by("id").values_list("id", flat=True))

    again = micro_batches.caption_pending(captioner=tiny_captioner)  # a duplicate or re-sent message
    assert again.claimed == []
    after = list(Caption.objects.filter(image_id__in=ids).order_by("id").values_list("id", flat=True))
    assert after == before


def test_recaption_replaces_that_models_captions_and_keeps_human_ones(tiny_settings, tiny_captioner, owner):
    image = upload(owner, photos(1)[0])
    micro_batches.caption_pending(captioner=tiny_captioner)
    model_count = image.captions.filter(source=Caption.Source.MODEL).count()
    add_human_caption(image=image, text="a person wrote this", author=owner)

    recaption_image(image=image)
    report = micro_batches.caption_pending(captioner=tiny_captioner)
    assert report.done == [image.pk]
    image.refresh_from_db()
    assert image.status == Image.Status.DONE and image.attempts == 1
    assert image.captions.filter(source=Caption.Source.MODEL).count() == model_count
    assert image.captions.filter(source=Caption.Source.HUMAN, text="a person wrote this").count() == 1


def test_damaged_and_missing_files_fail_alone_and_retry_works(tiny_settings, tiny_captioner, owner):
    good, damaged, missing = (upload(owner, p) for p in photos(3))
    damaged_bytes = Path(damaged.file.path).read_bytes()
    missing_bytes = Path(missing.file.path).read_bytes()
    Path(damaged.file.path).write_bytes(damaged_bytes[:600])  # passed validation, broke on disk later
    Path(missing.file.path).unlink()

    report = micro_batches.caption_pending(captioner=tiny_captioner)
    assert report.done == [good.pk]
    assert sorted(report.failed) == sorted([damaged.pk, missing.pk])
    # The missing file never reached the model; the damaged one did (and failed there).
    assert report.summary().startswith(
        "imgcap micro-batch: 3 images claimed, 2 of them in one model call, 1 captioned, 2 failed, "
    )

    for image in (damaged, missing):
        image.refresh_from_db()
        assert image.status == Image.Status.FAILED and image.captions.count() == 0
        assert image.processing_started_at is None
        # Users see the name they uploaded, not the server's file path.
        assert image.original_name in image.error and image.file.path not in image.error
    assert "unreadable or truncated" in damaged.error
    assert "cannot be read" in missing.error

    Path(damaged.file.path).write_bytes(damaged_bytes)
    Path(missing.file.path).write_bytes(missing_bytes)
    for image in (damaged, missing):
        retry_image(image=image)
    retried = micro_batches.caption_pending(captioner=tiny_captioner)
    assert sorted(retried.done) == sorted([damaged.pk, missing.pk])
    for image in (damaged, missing):
        image.refresh_from_db()
        assert image.status == Image.Status.DONE and image.error == "" and image.captions.count() >= 1


def test_the_batch_log_line_says_what_happened(tiny_settings, tiny_captioner, owner, caplog):
    caplog.set_level(logging.INFO, logger="worker.micro_batches")
    upload(owner, photos(1)[0])
    report = micro_batches.caption_pending(captioner=tiny_captioner)
    assert report.summary().startswith(
        "imgcap micro-batch: 1 image in one model call, 1 captioned, 0 failed, "
    )

    lost = upload(owner, photos(2)[1])
    Path(lost.file.path).unlink()
    report = micro_batches.caption_pending(captioner=tiny_captioner)
    assert report.failed == [lost.pk] and report.model_inputs == 0
    line = "imgcap micro-batch: 1 image claimed, none readable, no model call, 0 captioned, 1 failed, "
    assert report.summary().startswith(line)
    assert any(r.getMessage() == report.summary() for r in caplog.records)


def test_a_model_call_that_raises_fails_the_whole_batch(tiny_settings, tiny_captioner, owner):
    tiny_settings.IMGCAP_BEAM_SIZE = 0  # the captioner refuses it: a real error from inside the model call
    images = [upload(owner, p) for p in photos(2)]
    report = micro_batches.caption_pending(captioner=tiny_captioner)
    assert sorted(report.failed) == sorted(im.pk for im in images) and report.done == []
    for image in images:
        image.refresh_from_db()
        assert image.status == Image.Status.FAILED
        assert image.error == "captioning failed: ValueError: beam_size must be at least 1"


def test_model_version_metrics_come_from_the_model_directory(tiny_settings, tiny_captioner, tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"dev": {"BLEU-4": 12.5}}))
    version = runtime.register_model_version(tiny_captioner, tmp_path)
    assert version.metrics == {"dev": {"BLEU-4": 12.5}} and version.name == tiny_captioner.version
    # Read once per process and model directory, not once per micro-batch.
    (tmp_path / "metrics.json").write_text(json.dumps({"dev": {"BLEU-4": 99.0}}))
    assert runtime.register_model_version(tiny_captioner, tmp_path).metrics == {"dev": {"BLEU-4": 12.5}}
    assert runtime.read_metrics(tmp_path / "nowhere") == {}


def test_a_result_that_cannot_be_stored_fails_alone(tiny_settings, tiny_captioner, owner):
    from ml.captioner import Candidate, CaptionResult

    images = [upload(owner, p) for p in photos(3)]
    claimed = queue.claim_images(limit=3)
    assert [im.pk for im in claimed] == [im.pk for im in images]
    results = tiny_captioner.caption([im.file.path for im in claimed], n_best=2)
    broken = results[1].candidates[0]
    # Attention of the wrong rank cannot be encoded: storing the batch at once fails, each is stored alone.
    flat = np.zeros(3)
    results[1].candidates[0] = Candidate(broken.text, broken.score, broken.log_prob, broken.words, flat)
    assert all(isinstance(r, CaptionResult) and r.error is None for r in results)
    report = micro_batches.MicroBatchReport(claimed=[im.pk for im in claimed])
    version = runtime.register_model_version(tiny_captioner)

    micro_batches._store(report, list(zip(claimed, results, strict=True)), version)

    assert sorted(report.done) == sorted([claimed[0].pk, claimed[2].pk])
    assert report.failed == [claimed[1].pk]
    bad = Image.objects.get(pk=claimed[1].pk)
    assert bad.status == "failed" and bad.error.startswith("storing captions failed: ValueError")
    assert bad.captions.count() == 0
    for good in (claimed[0], claimed[2]):
        assert Image.objects.get(pk=good.pk).status == "done"
        assert Caption.objects.filter(image_id=good.pk, source="model").count() == 2


@pytest.mark.django_db(transaction=True)
def test_captions_computed_while_the_database_is_away_are_stored_once_it_is_back(
    tiny_settings, tiny_captioner, owner, database_outage
):
    images = [upload(owner, p) for p in photos(2)]
    claimed = queue.claim_images(limit=2)
    results = tiny_captioner.caption([im.file.path for im in claimed])
    version = runtime.register_model_version(tiny_captioner)
    report = micro_batches.MicroBatchReport(claimed=[im.pk for im in claimed])

    database_outage.start(1.2)  # away for 1.2 s: the first stores fail, a later one succeeds
    micro_batches._store(report, list(zip(claimed, results, strict=True)), version)

    assert sorted(report.done) == sorted(im.pk for im in images) and report.failed == []
    assert set(Image.objects.values_list("status", flat=True)) == {"done"}
    assert Caption.objects.filter(image__in=images, source="model").count() == 2 * 3


@pytest.mark.django_db(transaction=True)
def test_a_database_away_never_fails_an_image(tiny_settings, tiny_captioner, owner, database_outage):
    from django.db import OperationalError

    images = [upload(owner, p) for p in photos(2)]
    database_outage.start()
    with pytest.raises(OperationalError):  # the task retries (worker/tasks.py); nothing is marked
        micro_batches.caption_pending(captioner=tiny_captioner)
    database_outage.end()

    assert set(Image.objects.values_list("status", flat=True)) == {"pending"}
    report = micro_batches.caption_pending(captioner=tiny_captioner)
    assert sorted(report.done) == sorted(im.pk for im in images)


@pytest.mark.django_db(transaction=True)
def test_a_claim_stays_its_workers_while_its_heartbeat_runs(tiny_settings, owner):
    from datetime import timedelta

    from django.utils import timezone

    tiny_settings.IMGCAP_HEARTBEAT_S = 0.1
    image = upload(owner, photos(1)[0])
    assert [im.pk for im in queue.claim_images(limit=1)] == [image.pk]
    a_minute_ago = timezone.now() - timedelta(seconds=60)
    Image.objects.filter(pk=image.pk).update(heartbeat_at=a_minute_ago)
    with micro_batches.Heartbeat([image.pk]):
        time.sleep(0.5)  # a few beats
        assert queue.requeue_stale(older_than_s=30) == []  # its worker is alive
    # The worker killed: its heartbeat stops, and the reaper hands the claim back.
    Image.objects.filter(pk=image.pk).update(heartbeat_at=a_minute_ago)
    assert queue.requeue_stale(older_than_s=30) == [image.pk]
    assert Image.objects.get(pk=image.pk).status == "pending"


@pytest.mark.django_db(transaction=True)
def test_images_claimed_before_the_database_goes_away_are_captioned_not_left_processing(
    tiny_settings, tiny_captioner, owner, database_outage
):
    import threading

    import psycopg2
    from django.db import connection

    image = upload(owner, photos(1)[0])
    tiny_settings.IMGCAP_MICRO_BATCH_WAIT_MS = 5000  # claimed, then waiting for more when the database goes
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    server = connection.get_connection_params()  # where the server really is, for a second connection
    dropped = []

    def database_goes() -> None:
        # Reconnecting fails from now on, and the server drops the connection the claims use, as a
        # database that stops does; back 1.5 s later.
        connection.settings_dict.update(HOST="127.0.0.1", PORT="9")
        admin = psycopg2.connect(**server)
        try:
            with admin.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(%s)", [backend])
                dropped.append(cursor.fetchone()[0])
        finally:
            admin.close()
        database_outage.timers.append(threading.Timer(1.5, database_outage.back))
        database_outage.timers[-1].start()

    database_outage.timers.append(threading.Timer(0.5, database_goes))
    database_outage.timers[-1].start()
    report = micro_batches.caption_pending(captioner=tiny_captioner)

    assert dropped == [True]
    assert report.claimed == report.done == [image.pk]
    assert Image.objects.get(pk=image.pk).status == "done"
