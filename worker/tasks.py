"""Celery tasks (thin): the work is in worker/micro_batches.py and captions/queue.py.

acks_late and reject_on_worker_lost come from settings: a message is acknowledged only after its
batch is stored, so one taken by a worker that dies before claiming is delivered again (Redis).
Images a dead worker had claimed stay `processing` until the reaper (requeue_stale) re-sends them.
"""

from __future__ import annotations

import logging
from typing import Any

from billiard.process import current_process
from celery import shared_task
from celery.signals import worker_process_init, worker_ready
from django.conf import settings
from django.template.defaultfilters import pluralize

from captions import queue
from imgcap_site.queues import CAPTION_TASK, REAPER_TASK
from worker import micro_batches, monitoring, runtime
from worker.micro_batches import DATABASE_AWAY

logger = logging.getLogger(__name__)


# A database that is away is retried with backoff (1, 2, 4 … 30 s) for as long as it takes, instead
# of acknowledging the message: its images stay pending (or processing: the reaper) and are never
# marked failed for it. Only this; any other error is the images' (micro_batches marks them).
@shared_task(
    name=CAPTION_TASK,
    autoretry_for=DATABASE_AWAY,
    retry_backoff=1,
    retry_backoff_max=30,
    retry_jitter=False,
    max_retries=None,
)
def caption_images(image_ids: list[int]) -> dict[str, Any]:
    # The ids say what woke us; what is claimed is decided fairly across owners (queue.claim_images).
    report = micro_batches.caption_pending()
    return {"claimed": report.claimed, "done": report.done, "failed": report.failed}


@shared_task(name=REAPER_TASK)
def requeue_stale() -> list[int]:
    ids = queue.requeue_stale(
        older_than_s=settings.IMGCAP_STALE_AFTER_S,
        pending_after_s=settings.IMGCAP_RESEND_PENDING_AFTER_S,
        pending_limit=settings.IMGCAP_RESEND_PENDING_MAX,
    )
    if ids:
        logger.info("imgcap reaper: requeued %d stale image%s %s", len(ids), pluralize(len(ids)), ids)
    return ids


@worker_process_init.connect
def _load_model_in_pool_process(**kwargs: Any) -> None:
    # prefork: each child process captions, so each loads its own model, once. The solo pool sends
    # this signal too, from the main process and before `-B` forks beat; that case waits for
    # worker_ready, so beat is not forked from a process running TensorFlow's threads.
    if current_process().name != "MainProcess":
        runtime.warm_up()


@worker_ready.connect
def _load_model_in_worker(sender: Any = None, **kwargs: Any) -> None:
    # solo/threads pools caption in the main worker process; prefork's parent never does.
    from celery.concurrency.prefork import TaskPool as PreforkPool

    if not isinstance(getattr(sender, "pool", None), PreforkPool):
        runtime.warm_up()
    monitoring.serve(settings.IMGCAP_WORKER_METRICS_PORT)
