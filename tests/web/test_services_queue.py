"""The services the worker calls (claim, save, fail, reap) and how the best caption is chosen."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

import numpy as np
import pytest
from django.db import connection, transaction
from django.utils import timezone

from captions import queue, selectors
from captions.attention import AttentionFormatError, decode_attention, encode_attention
from captions.ingest import RejectedInput
from captions.models import Caption, Image, ModelVersion
from captions.services.images import add_human_caption, recaption_image, retry_image
from captions.services.model_versions import ensure_model_version, set_active_model

pytestmark = pytest.mark.django_db


def test_queueing_on_the_filesystem_broker_logs_no_kombu_warning(
    settings, caplog, user, make_image, queued_ids, django_capture_on_commit_callbacks
):
    # A bare "filesystem://" made kombu warn "No hostname was supplied" on each new connection,
    # which every command that queues images printed.
    from imgcap_site.celery import app as celery_app

    caplog.set_level(logging.WARNING, logger="kombu")
    with django_capture_on_commit_callbacks(execute=True):
        image = make_image(user)
    with celery_app.connection_for_write() as conn:  # a fresh connection, as a new process makes
        conn.info()
    assert queued_ids() == [image.pk]  # the message still reaches the broker folder
    assert [r.getMessage() for r in caplog.records if r.name.startswith("kombu")] == []


def test_claim_takes_the_oldest_first_and_only_pending_images(user, make_image):
    a, b, c, d = (make_image(user) for _ in range(4))
    claimed = queue.claim_images(limit=3)
    assert [i.pk for i in claimed] == [a.pk, b.pk, c.pk]
    for image in claimed:
        assert image.status == "processing"
        assert image.attempts == 1
        assert image.processing_started_at is not None
    assert Image.objects.get(pk=d.pk).status == "pending"
    # Only pending images are taken: a second claim gets what is left.
    assert [i.pk for i in queue.claim_images(limit=10)] == [d.pk]
    assert queue.claim_images(limit=10) == []


def test_owners_take_turns_so_a_big_backlog_does_not_hold_back_anothers_upload(
    user, django_user_model, make_image
):
    other = django_user_model.objects.create_user(username="late", password="pw-late-123")
    backlog = [make_image(user) for _ in range(6)]
    late = make_image(other)  # after all six of the first owner's

    first = queue.claim_images(limit=2)
    # One of each owner, oldest first: the late owner's only image does not wait for the six.
    assert [i.pk for i in first] == [backlog[0].pk, late.pk]
    assert [i.pk for i in queue.claim_images(limit=10)] == [im.pk for im in backlog[1:]]


@pytest.mark.django_db(transaction=True)
def test_claim_skips_rows_another_transaction_has_locked(user, make_image, queued_ids):
    locked, free = make_image(user), make_image(user)
    assert sorted(queued_ids()) == sorted([locked.pk, free.pk])  # autocommit: sent at once
    holding, release = threading.Event(), threading.Event()

    def hold_lock() -> None:
        try:
            with transaction.atomic():
                list(Image.objects.select_for_update().filter(pk=locked.pk))
                holding.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=hold_lock)
    thread.start()
    try:
        assert holding.wait(10)
        claimed = queue.claim_images(limit=10)
        assert [i.pk for i in claimed] == [free.pk]
    finally:
        release.set()
        thread.join()
    assert Image.objects.get(pk=locked.pk).status == "pending"
    assert [i.pk for i in queue.claim_images(limit=10)] == [locked.pk]


def test_store_captions_replaces_that_versions_captions_only(user, make_image, model_version, save_captions):
    image = make_image(user)
    other_version = ensure_model_version(name="imgcap-older", encoder="inception_v3", metrics={})
    save_captions(image, other_version, ["an old caption"])
    add_human_caption(image=image, text="  my  dog Rex  ", author=user)

    save_captions(image, model_version, ["a dog runs", "a dog is running", "a brown dog"])
    save_captions(image, model_version, ["a dog runs on grass", "a dog plays"])  # a retry: replaces

    mine = Caption.objects.filter(image=image, model_version=model_version).order_by("rank")
    assert [(c.text, c.rank) for c in mine] == [("a dog runs on grass", 0), ("a dog plays", 1)]
    assert Caption.objects.filter(image=image, model_version=other_version).count() == 1
    human = Caption.objects.get(image=image, source="human")
    assert human.text == "my dog Rex" and human.score is None and human.model_version is None

    image.refresh_from_db()
    assert image.status == "done" and image.error == "" and image.captioned_at is not None

    first = mine[0]
    assert first.words == ["a", "dog", "runs", "on", "grass"]
    assert decode_attention(first.attention).shape == (5, 4, 4)


def test_save_keeps_at_most_n_best(user, make_image, model_version, save_captions, settings):
    settings.IMGCAP_N_BEST = 2
    image = make_image(user)
    save_captions(image, model_version, ["one", "two", "three"])
    assert Caption.objects.filter(image=image).count() == 2


def test_save_for_a_deleted_image_is_a_no_op(user, make_image, model_version, save_captions):
    image = make_image(user)
    Image.objects.filter(pk=image.pk).delete()
    save_captions(image, model_version, ["a dog"])
    assert Caption.objects.count() == 0


def test_mark_failed_then_retry(user, make_image, queued_ids, django_capture_on_commit_callbacks):
    image = make_image(user)
    queue.claim_images(limit=1)
    queue.mark_failed(image=image, error="cannot decode")
    image.refresh_from_db()
    assert (image.status, image.error) == ("failed", "cannot decode")

    with django_capture_on_commit_callbacks(execute=True):
        retry_image(image=image)
    image.refresh_from_db()
    assert (image.status, image.error, image.attempts) == ("pending", "", 0)
    assert queued_ids() == [image.pk]
    with pytest.raises(RejectedInput) as caught:
        retry_image(image=image)
    assert caught.value.status == 409


def test_recaption_keeps_old_captions_and_refuses_while_queued(
    user, make_image, model_version, save_captions
):
    image = make_image(user)
    with pytest.raises(RejectedInput) as caught:
        recaption_image(image=image)
    assert caught.value.status == 409
    save_captions(image, model_version, ["a dog"])
    recaption_image(image=image)
    image.refresh_from_db()
    assert image.status == "pending"
    assert Caption.objects.filter(image=image).count() == 1


def test_requeue_stale_requeues_or_gives_up(
    user, make_image, settings, queued_ids, django_capture_on_commit_callbacks
):
    settings.IMGCAP_MAX_ATTEMPTS = 3
    stuck, lost, worn_out, fresh, fresh_pending = (make_image(user) for _ in range(5))
    long_ago = timezone.now() - timedelta(seconds=3600)
    Image.objects.filter(pk=stuck.pk).update(status="processing", processing_started_at=long_ago, attempts=1)
    Image.objects.filter(pk=lost.pk).update(updated_at=long_ago)
    Image.objects.filter(pk=worn_out.pk).update(
        status="processing", processing_started_at=long_ago, attempts=3
    )
    Image.objects.filter(pk=fresh.pk).update(
        status="processing", processing_started_at=timezone.now(), attempts=1
    )

    with django_capture_on_commit_callbacks(execute=True):
        requeued = queue.requeue_stale(older_than_s=600)

    assert sorted(requeued) == sorted([stuck.pk, lost.pk])
    assert sorted(queued_ids()) == sorted([stuck.pk, lost.pk])
    states = dict(Image.objects.values_list("pk", "status"))
    assert states[stuck.pk] == "pending" and states[lost.pk] == "pending"
    assert states[fresh.pk] == "processing" and states[fresh_pending.pk] == "pending"
    worn_out.refresh_from_db()
    assert worn_out.status == "failed" and worn_out.error == "gave up after 3 attempts"
    # Just requeued, so not stale again right away.
    assert queue.requeue_stale(older_than_s=600) == []


def test_pending_images_are_sent_again_soon_processing_ones_only_when_stale(
    user, make_image, queued_ids, django_capture_on_commit_callbacks
):
    # A broker that restarted lost the messages of pending images: they are sent again after 20 s,
    # oldest first and at most `pending_limit` a run; a worker's claim has its own, longer timeout.
    lost = [make_image(user) for _ in range(3)]
    working = make_image(user)
    a_minute_ago = timezone.now() - timedelta(seconds=60)
    Image.objects.filter(pk__in=[im.pk for im in lost]).update(updated_at=a_minute_ago)
    Image.objects.filter(pk=working.pk).update(status="processing", processing_started_at=a_minute_ago)

    with django_capture_on_commit_callbacks(execute=True):
        first = queue.requeue_stale(older_than_s=600, pending_after_s=20, pending_limit=2)
        second = queue.requeue_stale(older_than_s=600, pending_after_s=20, pending_limit=2)

    assert first == [lost[0].pk, lost[1].pk] and second == [lost[2].pk]
    assert sorted(queued_ids()) == sorted(im.pk for im in lost)
    assert Image.objects.get(pk=working.pk).status == "processing"


def test_enqueue_sends_chunks_to_the_caption_queue(
    settings, broker_messages, django_capture_on_commit_callbacks
):
    settings.IMGCAP_MICRO_BATCH_MAX = 2
    with django_capture_on_commit_callbacks(execute=True):
        queue.enqueue_captioning([11, 12, 13])
    messages = broker_messages()
    assert sorted(m["args"][0] for m in messages) == [[11, 12], [13]]
    assert {(m["task"], m["queue"]) for m in messages} == {("imgcap.caption_images", "caption")}


def test_the_first_model_version_becomes_active(model_version):
    assert model_version.active
    second = ensure_model_version(name="imgcap-newer", encoder="efficientnet_lite2", metrics={"bleu4": 0.3})
    assert not second.active
    assert ensure_model_version(name="imgcap-newer", encoder="efficientnet_lite2", metrics={}).pk == second.pk
    set_active_model(model_version=second)
    assert list(ModelVersion.objects.filter(active=True)) == [second]


def test_best_caption_prefers_human_then_active_model_then_newest(
    user, make_image, model_version, save_captions
):
    image = make_image(user)
    newer = ensure_model_version(name="imgcap-newer", encoder="efficientnet_lite2", metrics={})
    save_captions(image, newer, ["newer model says cat", "newer second"])
    save_captions(image, model_version, ["active model says dog", "active second"])

    def best():
        return selectors.choose_captions(
            selectors.get_image(user, image.pk), selectors.active_model_version()
        )

    choice = best()
    assert choice.best.text == "active model says dog"
    assert [c.text for c in choice.candidates] == ["active model says dog", "active second"]

    set_active_model(model_version=newer)
    assert best().best.text == "newer model says cat"

    ModelVersion.objects.update(active=False)
    # No active version: the newest model captions (the ones saved last).
    assert best().best.text == "active model says dog"

    add_human_caption(image=image, text="first human", author=user)
    add_human_caption(image=image, text="second human", author=user)
    choice = best()
    assert choice.best.text == "second human"
    assert [c.text for c in choice.human] == ["second human", "first human"]


def test_empty_human_caption_is_refused(user, make_image):
    image = make_image(user)
    with pytest.raises(RejectedInput):
        add_human_caption(image=image, text="   ", author=user)


def test_attention_round_trip_is_compact_and_close():
    rng = np.random.default_rng(0)
    attention = rng.random((7, 14, 14), dtype=np.float32)
    attention /= attention.sum(axis=(1, 2), keepdims=True)
    data = encode_attention(attention)
    assert len(data) == 9 + 7 * 4 + 7 * 14 * 14
    back = decode_attention(data)
    assert back.shape == attention.shape and back.dtype == np.float32
    assert np.abs(back - attention).max() <= attention.max() / 510 + 1e-7
    assert np.array_equal(decode_attention(encode_attention(np.zeros((2, 3, 3)))), np.zeros((2, 3, 3)))
    with pytest.raises(AttentionFormatError):
        decode_attention(data[:-1])


def test_store_captions_stores_many_images_at_once_and_skips_deleted_ones(
    user, make_image, model_version, django_assert_max_num_queries
):
    images = [make_image(user) for _ in range(4)]
    gone = images.pop()
    Image.objects.filter(pk=gone.pk).delete()
    results = [
        (image, [queue.CandidateData(text=f"caption {i} {rank}", score=-rank) for rank in range(2)])
        for i, image in enumerate([*images, gone])
    ]
    # The same few statements for any number of images: lock, delete old, insert all, mark done, and
    # one to find the owners' webhooks (none here).
    with django_assert_max_num_queries(7):
        stored = queue.store_captions(model_version=model_version, results=results)

    assert stored == sorted(image.pk for image in images)
    for i, image in enumerate(images):
        texts = list(Caption.objects.filter(image=image).order_by("rank").values_list("text", flat=True))
        assert texts == [f"caption {i} 0", f"caption {i} 1"]
        image.refresh_from_db()
        assert image.status == "done" and image.captioned_at is not None
    assert Caption.objects.filter(image_id=gone.pk).count() == 0
