"""The captioning queue: which images need captions, who works on them, and their results.

Postgres is the record of the work (an image's `status`); Celery messages (names in
imgcap_site/queues.py) only wake workers with ids to start from. A claim takes rows with
SKIP LOCKED and checks their status, so a message sent twice, or re-sent by the reaper, is
harmless. captions/ never imports worker/ or TensorFlow: work is sent by task name.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, Window
from django.db.models.functions import RowNumber
from django.template.defaultfilters import pluralize
from django.utils import timezone

from captions.attention import encode_attention
from captions.models import IMAGE_FEATURE_DIM, Caption, Image, ImageTag, ModelVersion
from captions.services import webhooks
from imgcap_site.queues import CAPTION_TASK, FETCH_TASK

logger = logging.getLogger(__name__)


@dataclass
class CandidateData:
    """One caption of the model's N-best list, as the worker hands it over (best first)."""

    text: str
    score: float
    words: list[str] = field(default_factory=list)
    attention: np.ndarray | None = None
    confidence: float | None = None  # the model's P(right); only the best candidate carries it


@dataclass
class ImageAnalysis:
    """What the worker saw in an image besides its captions, from the same forward pass."""

    tags: list[tuple[str, float]] = field(default_factory=list)  # (label, probability), most probable first
    features: np.ndarray | None = None  # the encoder's pooled features [C] (similar images)
    image_embedding: np.ndarray | None = None  # the photo in the sentence-embedding space [384]
    caption_embedding: np.ndarray | None = None  # the best candidate's sentence embedding [384]


def enqueue_captioning(image_ids: Sequence[int]) -> None:
    """Ask the workers to caption these images once the current transaction commits.

    A broker outage is logged, not raised: the images stay pending and the reaper
    (`requeue_stale`) sends them again, so an upload never fails after its data was stored.
    """
    ids = [int(i) for i in image_ids]
    if not ids:
        return

    def send() -> None:
        from imgcap_site.celery import app as celery_app

        chunk = max(1, settings.IMGCAP_MICRO_BATCH_MAX)
        for start in range(0, len(ids), chunk):
            part = ids[start : start + chunk]
            try:
                # Routed to its queue by CELERY_TASK_ROUTES (settings), as every sender of the task is.
                celery_app.send_task(CAPTION_TASK, args=[part])
            except Exception:  # noqa: BLE001 - any broker failure; the reaper recovers
                logger.exception("could not enqueue images %s; the reaper will retry", part)

    transaction.on_commit(send)


def enqueue_url_fetch(batch_id: int) -> None:
    """Ask a fetch worker to download the batch's waiting URLs once the current transaction commits.
    A broker outage is logged: the reaper sends it again (captions/services/url_fetches.py)."""

    def send() -> None:
        from imgcap_site.celery import app as celery_app

        try:
            celery_app.send_task(FETCH_TASK, args=[batch_id])
        except Exception:  # noqa: BLE001 - any broker failure; the reaper recovers
            logger.exception("could not ask for batch %s's URLs; the reaper will retry", batch_id)

    transaction.on_commit(send)


def claim_images(*, limit: int) -> list[Image]:
    """Atomically take up to `limit` pending images for captioning, fairly across owners: each owner's
    oldest first, owners taking turns, so one person's 10,000 uploads do not hold back another's one.

    Rows locked by another worker are skipped (SKIP LOCKED), so concurrent workers never share an image.
    """
    if limit <= 0:
        return []
    with transaction.atomic():
        pending = Image.objects.select_for_update(skip_locked=True).filter(status=Image.Status.PENDING)
        # A few more candidates than wanted: another worker may hold some of them this moment.
        candidates = _in_turn(limit * 4)
        locked = set(pending.filter(id__in=candidates).values_list("id", flat=True))
        ids = [i for i in candidates if i in locked][:limit]
        if not ids and candidates:
            # Every candidate was taken meanwhile: whatever is left, oldest first.
            ids = list(pending.order_by("created_at", "id").values_list("id", flat=True)[:limit])
        if not ids:
            return []
        now = timezone.now()
        Image.objects.filter(id__in=ids).update(
            status=Image.Status.PROCESSING,
            attempts=F("attempts") + 1,
            processing_started_at=now,
            heartbeat_at=now,
            updated_at=now,
            error="",
        )
        by_id = Image.objects.in_bulk(ids)
    return [by_id[i] for i in ids if i in by_id]


def _in_turn(limit: int) -> list[int]:
    """Ids of pending images in claiming order: every owner's oldest, then every owner's second... (on
    the partial index image_pending_owner)."""
    turn = Window(RowNumber(), partition_by=[F("owner_id")], order_by=[F("created_at"), F("id")])
    pending = Image.objects.filter(status=Image.Status.PENDING).annotate(turn=turn)
    return list(pending.order_by("turn", "created_at", "id").values_list("id", flat=True)[:limit])


def store_captions(
    *,
    model_version: ModelVersion,
    results: Sequence[tuple[Image, Sequence[CandidateData]]],
    analyses: Mapping[int, ImageAnalysis] | None = None,
) -> list[int]:
    """Store each image's N-best captions of `model_version` and mark the images done, in one transaction.

    One commit for a worker's whole micro-batch rather than one per image. Replaces only that model version's
    captions (a retry never duplicates them); human captions and other versions' captions stay. Images
    deleted meanwhile are skipped. Returns the ids stored. The owners' webhooks get a caption.done
    delivery from the same transaction (captions/services/webhooks.py).

    `analyses` (by image id): the images' tags replace their earlier tags; their features and photo
    embedding are stored; the best candidate's embedding becomes the image's search vector unless a
    human caption (or the photo's own description) is what the image shows.
    """
    keep = max(1, settings.IMGCAP_N_BEST)
    wanted = {image.pk: (image, list(candidates)[:keep]) for image, candidates in results}
    if not wanted:
        return []
    with transaction.atomic():
        # In id order, so that two transactions locking overlapping images cannot deadlock.
        locked = list(
            Image.objects.select_for_update()
            .filter(pk__in=wanted)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        if not locked:
            return []
        Caption.objects.filter(
            image_id__in=locked, model_version=model_version, source=Caption.Source.MODEL
        ).delete()
        created = Caption.objects.bulk_create(
            [
                Caption(
                    image_id=image_id,
                    text=candidate.text,
                    score=float(candidate.score),
                    confidence=candidate.confidence,
                    rank=rank,
                    model_version=model_version,
                    source=Caption.Source.MODEL,
                    words=list(candidate.words),
                    attention=encode_attention(candidate.attention)
                    if candidate.attention is not None
                    else None,
                )
                for image_id in locked
                for rank, candidate in enumerate(wanted[image_id][1])
            ]
        )
        if analyses:
            best = {c.image_id: c.pk for c in created if c.rank == 0}
            _store_analyses(model_version, {pk: analyses[pk] for pk in locked if pk in analyses}, best)
        now = timezone.now()
        Image.objects.filter(pk__in=locked).update(
            status=Image.Status.DONE,
            error="",
            captioned_at=now,
            processing_started_at=None,
            heartbeat_at=None,
            updated_at=now,
        )
        webhooks.images_captioned(locked, model_version=model_version)  # caption.done, same transaction
    for image_id in locked:
        image = wanted[image_id][0]
        image.status, image.error, image.captioned_at = Image.Status.DONE, "", now
    return locked


def _store_analyses(version: ModelVersion, analyses: dict[int, ImageAnalysis], best: dict[int, int]) -> None:
    """Tags, features and embeddings of images locked by store_captions (its transaction)."""
    ImageTag.objects.filter(image_id__in=analyses).delete()
    ImageTag.objects.bulk_create(
        ImageTag(image_id=pk, model_version=version, label=label[:100], score=float(score), rank=rank)
        for pk, analysis in analyses.items()
        for rank, (label, score) in enumerate(analysis.tags)
    )
    # A person's caption, or the description the photo carried, is what these show: their vector stays
    # (the worker embeds a description after storing: worker/micro_batches.py).
    shown_by_people = set(
        Caption.objects.filter(
            image_id__in=analyses, source__in=(Caption.Source.HUMAN, Caption.Source.METADATA)
        ).values_list("image_id", flat=True)
    )
    updated = []
    for pk, analysis in analyses.items():
        image = Image(pk=pk, features_model_version=version)
        features = analysis.features
        # Other encoders' features have another size: those images get no "similar images".
        image.features = features if features is not None and len(features) == IMAGE_FEATURE_DIM else None
        image.visual_embedding = analysis.image_embedding
        fields = ["features", "visual_embedding", "features_model_version"]
        if pk not in shown_by_people and analysis.caption_embedding is not None and pk in best:
            image.caption_embedding, image.embedded_caption_id = analysis.caption_embedding, best[pk]
            fields += ["caption_embedding", "embedded_caption"]
        updated.append((image, tuple(fields)))
    for fields in {f for _, f in updated}:  # images with the same fields to write: one statement
        Image.objects.bulk_update([image for image, f in updated if f == fields], list(fields))


def mark_failed(*, image: Image, error: str) -> None:
    """Record that captioning `image` failed, with the reason; `retry_image` can queue it again."""
    with transaction.atomic():
        Image.objects.filter(pk=image.pk).update(
            status=Image.Status.FAILED,
            error=error or "failed",
            processing_started_at=None,
            heartbeat_at=None,
            updated_at=timezone.now(),
        )
        webhooks.images_failed([image.pk])  # caption.failed, same transaction
    image.status, image.error = Image.Status.FAILED, error or "failed"


def requeue_stale(
    *, older_than_s: int, pending_after_s: int | None = None, pending_limit: int | None = None
) -> list[int]:
    """Re-queue images processing without a heartbeat for `older_than_s` (a killed worker), and send
    again the oldest `pending_limit` images pending without a send for `pending_after_s` (default:
    `older_than_s`): their message may be lost (a broker restarted with nothing on disk). Sending
    twice is harmless (claims skip taken rows and check status), so the second can be short.

    Images that already had IMGCAP_MAX_ATTEMPTS tries are marked failed instead. Returns the requeued ids.
    """
    now = timezone.now()
    cutoff = now - timedelta(seconds=older_than_s)
    pending_cutoff = now - timedelta(seconds=older_than_s if pending_after_s is None else pending_after_s)
    max_attempts = settings.IMGCAP_MAX_ATTEMPTS
    with transaction.atomic():
        locked = Image.objects.select_for_update(skip_locked=True).order_by("created_at", "id")
        # A claim is alive while its worker's heartbeat is (claims from before heartbeats: their start).
        silent = Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, processing_started_at__lt=cutoff)
        rows = list(locked.filter(silent, status=Image.Status.PROCESSING).values_list("id", "attempts"))
        rows += list(
            locked.filter(status=Image.Status.PENDING, updated_at__lt=pending_cutoff).values_list(
                "id", "attempts"
            )[:pending_limit]
        )
        give_up = [image_id for image_id, attempts in rows if attempts >= max_attempts]
        requeue = [image_id for image_id, attempts in rows if attempts < max_attempts]
        if give_up:
            Image.objects.filter(id__in=give_up).update(
                status=Image.Status.FAILED,
                error=f"gave up after {max_attempts} attempts",
                processing_started_at=None,
                heartbeat_at=None,
                updated_at=now,
            )
            webhooks.images_failed(give_up)  # caption.failed, same transaction
        if requeue:
            Image.objects.filter(id__in=requeue).update(
                status=Image.Status.PENDING, processing_started_at=None, heartbeat_at=None, updated_at=now
            )
            enqueue_captioning(requeue)
    if give_up or requeue:
        logger.info(
            "reaper: requeued %d stale image%s, gave up on %d",
            len(requeue),
            pluralize(len(requeue)),
            len(give_up),
        )
    return requeue


def beat(ids: Sequence[int]) -> int:
    """The worker captioning these images is alive: their claims stay theirs. Returns how many."""
    return Image.objects.filter(pk__in=ids, status=Image.Status.PROCESSING).update(
        heartbeat_at=timezone.now()
    )


def set_pending(ids: Sequence[int]) -> None:
    """Mark these images pending again (a fresh count of attempts) and queue them."""
    if not ids:
        return
    now = timezone.now()
    Image.objects.filter(id__in=ids).update(
        status=Image.Status.PENDING,
        error="",
        attempts=0,
        processing_started_at=None,
        heartbeat_at=None,
        queued_at=now,
        updated_at=now,
    )
    enqueue_captioning(ids)
