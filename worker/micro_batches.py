"""The micro-batcher: claim pending images for a short while, caption them in one model call.

A task names the images it was sent for, but claims whatever is pending, in turns across owners
(`queue.claim_images`: a message only wakes a worker), so uploads that arrive within
IMGCAP_MICRO_BATCH_WAIT_MS share one encoder/decoder pass and no owner's backlog holds back another's.
Claiming is `select_for_update(skip_locked)`: a task sent for ids another task has already claimed
finds nothing and returns, which makes duplicate sends and reaper re-sends harmless.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection
from django.template.defaultfilters import pluralize

from captions import queue
from captions.models import Caption, Image, ModelVersion
from captions.services.embeddings import follow_shown_captions
from worker import monitoring, runtime

if TYPE_CHECKING:
    from ml.captioner import Captioner, CaptionResult

logger = logging.getLogger(__name__)

# How often a micro-batch that is not full looks for newly pending images while it waits.
CLAIM_POLL_S = 0.05
# The database away (down, restarting, out of connections): not the images' fault, so never a
# reason to mark them failed. The task is retried (worker/tasks.py); captions already computed are
# stored again after these pauses (about 30 s in all) before the task gives up on them.
DATABASE_AWAY = (OperationalError, InterfaceError)
STORE_RETRY_PAUSES_S = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)


@dataclass
class MicroBatchReport:
    """What one caption_images task did (also its log line)."""

    claimed: list[int] = field(default_factory=list)
    done: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    model_version: str = ""
    seconds: float = 0.0
    model_seconds: float = 0.0  # in the captioner's call (reading, encoding, decoding)
    store_seconds: float = 0.0  # writing the captions
    model_inputs: int = 0  # images given to the model call; 0: no call (none of the files was readable)
    failure_reasons: list[str] = field(default_factory=list)  # one per failed image, for monitoring

    def summary(self) -> str:
        claimed = _images(len(self.claimed))
        if self.model_inputs == len(self.claimed):
            call = f"{claimed} in one model call"
        elif self.model_inputs:
            call = f"{claimed} claimed, {self.model_inputs} of them in one model call"
        else:
            call = f"{claimed} claimed, none readable, no model call"
        return (
            f"imgcap micro-batch: {call}, {len(self.done)} captioned, {len(self.failed)} failed, "
            f"{self.seconds:.2f}s (model {self.model_seconds:.2f}s, store {self.store_seconds:.2f}s), "
            f"model {self.model_version} (ids {self.claimed})"
        )


def _images(n: int) -> str:
    return f"{n} image{pluralize(n)}"


def claim_micro_batch(*, max_images: int | None = None, wait_ms: int | None = None) -> list[Image]:
    """Claim up to max_images pending images (in turns across owners).

    When the first claim finds some but fewer than max_images, keep claiming newly pending ones until
    wait_ms have passed since it or the micro-batch is full. Finding none at all returns at once. A
    database that goes away while it waits ends the wait: what is claimed is captioned (its store
    waits for the database), rather than left `processing` with no worker until the reaper.
    """
    max_images = settings.IMGCAP_MICRO_BATCH_MAX if max_images is None else max_images
    wait_ms = settings.IMGCAP_MICRO_BATCH_WAIT_MS if wait_ms is None else wait_ms
    images = list(queue.claim_images(limit=max_images))
    if not images:
        return images
    deadline = time.monotonic() + wait_ms / 1000
    while len(images) < max_images:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(CLAIM_POLL_S, left))
        try:
            images += queue.claim_images(limit=max_images - len(images))
        except DATABASE_AWAY as exc:
            logger.warning(
                "imgcap micro-batch: database away while waiting for more images (%s); captioning the %s "
                "claimed",
                exc,
                _images(len(images)),
            )
            break
    return images


def caption_pending(*, captioner: Captioner | None = None) -> MicroBatchReport:
    """The caption_images task: claim a micro-batch (see claim_micro_batch) and caption it in one call.

    The model is loaded before anything is claimed, so a model that cannot load leaves images pending.
    """
    captioner = captioner if captioner is not None else runtime.get_captioner()
    # Before claiming: a database that is away here leaves every image pending (the task retries).
    version = runtime.register_model_version(captioner)
    images = claim_micro_batch()
    if not images:
        return MicroBatchReport()
    return caption_micro_batch(images, captioner, version)


def caption_micro_batch(
    images: Sequence[Image], captioner: Captioner, version: ModelVersion | None = None
) -> MicroBatchReport:
    """Caption claimed images with one `captioner.caption` call and store the results in one transaction.

    An image whose result has an error is marked failed with it; if the call itself raises, every
    image of the micro-batch is marked failed with the exception's text (none is left in processing).
    A database that is away is not such a failure: it is raised, the images are not marked.
    """
    started = time.monotonic()
    report = MicroBatchReport(claimed=[im.pk for im in images], model_version=captioner.version)
    with Heartbeat(report.claimed):
        _caption_claimed(report, images, captioner, version)
    report.seconds = time.monotonic() - started
    logger.info(report.summary())
    monitoring.record(report)
    return report


class Heartbeat:
    """While the block runs, the claims of `ids` are refreshed every IMGCAP_HEARTBEAT_S from a thread
    of their own (model calls hold no lock it needs): the reaper hands back only silent claims."""

    def __init__(self, ids: Sequence[int]) -> None:
        self.ids = list(ids)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="imgcap-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            while not self._stop.wait(settings.IMGCAP_HEARTBEAT_S):
                try:
                    queue.beat(self.ids)
                    monitoring.LAST_BEAT.set_to_current_time()
                except Exception as exc:  # the database away: the next beat tries again
                    logger.warning("imgcap heartbeat for %s failed: %s", self.ids, exc)
                    close_old_connections()
        finally:
            connection.close()  # this thread's own connection


def _caption_claimed(
    report: MicroBatchReport, images: Sequence[Image], captioner: Captioner, version: ModelVersion | None
) -> None:
    inputs, readable = [], []
    for image in images:
        try:
            inputs.append(_model_input(image))
            readable.append(image)
        except OSError as exc:
            _fail(
                report,
                image,
                f"the stored file of {image.original_name} cannot be read ({exc})",
                "file_missing",
            )
    if readable:
        report.model_inputs = len(readable)
        try:
            version = version or runtime.register_model_version(captioner)
            model_started = time.monotonic()
            results = captioner.caption(
                inputs,
                n_best=settings.IMGCAP_N_BEST,
                beam_size=settings.IMGCAP_BEAM_SIZE,
                batch_size=len(inputs),
                names=[image.original_name or f"image {image.pk}" for image in readable],
            )
            report.model_seconds = time.monotonic() - model_started
        except DATABASE_AWAY:
            raise
        except Exception as exc:
            logger.exception("imgcap micro-batch %s: captioning failed", [im.pk for im in readable])
            for image in readable:
                _fail(report, image, f"captioning failed: {type(exc).__name__}: {exc}", "model_error")
        else:
            store_started = time.monotonic()
            _store(report, list(zip(readable, results, strict=True)), version)
            report.store_seconds = time.monotonic() - store_started


def _model_input(image: Image) -> str | bytes:
    """A path when the storage has one (the encoder reads it), else the file's bytes."""
    try:
        path = image.file.path
    except NotImplementedError:  # storages without local files (e.g. object stores)
        with image.file.open("rb") as fp:
            return fp.read()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no file for image {image.pk}")
    return path


def _store(
    report: MicroBatchReport, outcomes: list[tuple[Image, CaptionResult]], version: ModelVersion
) -> None:
    """Mark the images the model could not caption failed, then store the others' captions together;
    should that fail, store them one by one so that one bad image does not fail the whole micro-batch."""
    captioned: list[tuple[Image, list[queue.CandidateData]]] = []
    analyses: dict[int, queue.ImageAnalysis] = {}
    readable = []
    for image, result in outcomes:
        if result.error is not None:  # it names the file as its owner does (`names` above)
            _fail(report, image, result.error, "unreadable_image")
            continue
        candidates = [
            queue.CandidateData(
                text=c.text,
                score=float(c.score),
                words=list(c.words),
                attention=c.attention,
                confidence=None if rank or result.confidence is None else float(result.confidence),
            )
            for rank, c in enumerate(result.candidates)
        ]
        captioned.append((image, candidates))
        readable.append((image, result))
    if not captioned:
        return
    embedded = runtime.embed_captions([result.caption for _, result in readable])
    for j, (image, result) in enumerate(readable):
        analyses[image.pk] = queue.ImageAnalysis(
            tags=[(t.label, float(t.score)) for t in result.tags],
            features=result.features,
            image_embedding=result.image_embedding,
            caption_embedding=None if embedded is None else embedded[j],
        )
    try:
        _store_with_retries(version, captioned, analyses)
    except DATABASE_AWAY:
        raise
    except Exception:
        logger.exception("imgcap micro-batch: storing %d images at once failed; storing each", len(captioned))
    else:
        report.done += [image.pk for image, _ in captioned]
        _embed_descriptions([image.pk for image, _ in captioned])
        return
    for image, candidates in captioned:
        try:
            queue.store_captions(
                model_version=version, results=[(image, candidates)], analyses={image.pk: analyses[image.pk]}
            )
        except DATABASE_AWAY:
            raise
        except Exception as exc:
            logger.exception("imgcap image %s: storing captions failed", image.pk)
            _fail(report, image, f"storing captions failed: {type(exc).__name__}: {exc}", "store_error")
        else:
            report.done.append(image.pk)
    _embed_descriptions([image.pk for image, _ in captioned])


def _embed_descriptions(image_ids: list[int]) -> None:
    """Images that show the description their file carried (not the model's caption just stored) get
    it as their search vector here, in the worker, which has the embedding model loaded: intake, in
    the web process, does not embed."""
    try:
        described = set(
            Caption.objects.filter(image_id__in=image_ids, source=Caption.Source.METADATA).values_list(
                "image_id", flat=True
            )
        )
    except Exception:  # the captions are stored: `manage.py embed_captions` catches up
        logger.exception("imgcap micro-batch: looking for described images failed")
        return
    if described:
        follow_shown_captions(sorted(described))


def _store_with_retries(
    version: ModelVersion,
    captioned: list[tuple[Image, list[queue.CandidateData]]],
    analyses: dict[int, queue.ImageAnalysis],
) -> None:
    """queue.store_captions, again after each pause of STORE_RETRY_PAUSES_S while the database is away."""
    for pause in (*STORE_RETRY_PAUSES_S, None):
        try:
            queue.store_captions(model_version=version, results=captioned, analyses=analyses)
            return
        except DATABASE_AWAY as exc:
            if pause is None:
                raise
            logger.warning("imgcap micro-batch: database away (%s); storing again in %.1fs", exc, pause)
            time.sleep(pause)
            close_old_connections()  # a broken connection is dropped, the next query opens a new one


def _fail(report: MicroBatchReport, image: Image, error: str, reason: str) -> None:
    logger.warning("imgcap image %s failed: %s", image.pk, error)
    queue.mark_failed(image=image, error=error)
    report.failed.append(image.pk)
    report.failure_reasons.append(reason)
