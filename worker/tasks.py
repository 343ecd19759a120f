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
from worker import micro_batches, runtime

logger = logging.getLogger(__name__)


@shared_task(name="imgcap.caption_images")
def caption_images(image_ids: list[int]) -> dict[str, Any]:
    report = micro_batches.caption_pending(first=image_ids)
    return {"claimed": report.claimed, "done": report.done, "failed": report.failed}


@shared_task(name="imgcap.requeue_stale")
def requeue_stale() -> list[int]:
    ids = queue.requeue_stale(older_than_s=settings.IMGCAP_STALE_AFTER_S)
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
