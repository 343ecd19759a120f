"""Celery tasks (thin): the work is in worker/micro_batches.py, captions/queue.py,
captions/services/url_fetches.py and captions/services/webhooks.py.

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
from captions.services import url_fetches, webhooks
from imgcap_site.queues import CAPTION_QUEUE, CAPTION_TASK, DELIVER_TASK, FETCH_TASK, REAPER_TASK
from worker import micro_batches, monitoring, runtime
from worker.micro_batches import DATABASE_AWAY

logger = logging.getLogger(__name__)


# Every task: a database that is away is retried with backoff (1, 2, 4 … 30 s) for as long as it
# takes, instead of acknowledging the message, so nothing is marked failed for it. Only this; any
# other error is the work's own (micro_batches marks images failed, a URL is the batch's rejection,
# a receiver that fails is the delivery's own retry in webhooks.py).
RETRY_WHILE_DATABASE_AWAY: dict[str, Any] = {
    "autoretry_for": DATABASE_AWAY,
    "retry_backoff": 1,
    "retry_backoff_max": 30,
    "retry_jitter": False,
    "max_retries": None,
}


@shared_task(name=CAPTION_TASK, **RETRY_WHILE_DATABASE_AWAY)
def caption_images(image_ids: list[int]) -> dict[str, Any]:
    # The ids say what woke us; what is claimed is decided fairly across owners (queue.claim_images).
    report = micro_batches.caption_pending()
    return {"claimed": report.claimed, "done": report.done, "failed": report.failed}


@shared_task(name=FETCH_TASK, bind=True, **RETRY_WHILE_DATABASE_AWAY)
def fetch_urls(self, batch_id: int) -> dict[str, Any]:
    # The task id is the claim: a retry of this message goes on with the URLs it claimed.
    report = url_fetches.fetch_waiting_urls(batch_id, claim=self.request.id or f"batch-{batch_id}")
    if not report.skipped:
        logger.info(
            "imgcap batch %d: fetched %d URL%s, refused %d",
            batch_id,
            len(report.fetched),
            pluralize(len(report.fetched)),
            len(report.rejected),
        )
    return {"fetched": len(report.fetched), "rejected": len(report.rejected), "skipped": report.skipped}


# On the fetch queue (settings' routes): it waits on other servers.
@shared_task(name=DELIVER_TASK, **RETRY_WHILE_DATABASE_AWAY)
def deliver_webhook(delivery_id: int) -> dict[str, Any]:
    report = webhooks.deliver(delivery_id)
    return {"delivery": report.delivery, "status": report.status, "skipped": report.skipped}


@shared_task(name=REAPER_TASK)
def requeue_stale() -> list[int]:
    ids = queue.requeue_stale(
        older_than_s=settings.IMGCAP_STALE_AFTER_S,
        pending_after_s=settings.IMGCAP_RESEND_PENDING_AFTER_S,
        pending_limit=settings.IMGCAP_RESEND_PENDING_MAX,
    )
    if ids:
        logger.info("imgcap reaper: requeued %d stale image%s %s", len(ids), pluralize(len(ids)), ids)
    batches = url_fetches.resend_lost_fetches(after_s=settings.IMGCAP_RESEND_PENDING_AFTER_S)
    if batches:
        logger.info(
            "imgcap reaper: asked again for the URLs of batch%s %s", pluralize(len(batches), "es"), batches
        )
    deliveries = webhooks.resend_due_deliveries(after_s=settings.IMGCAP_RESEND_PENDING_AFTER_S)
    if deliveries:
        logger.info(
            "imgcap reaper: sent webhook deliver%s %s again",
            pluralize(len(deliveries), "y,ies"),
            deliveries,
        )
    return ids


@worker_process_init.connect
def _load_model_in_pool_process(**kwargs: Any) -> None:
    # prefork: each child process captions, so each loads its own model, once. The solo pool sends
    # this signal too, from the main process and before `-B` forks beat; that case waits for
    # worker_ready, so beat is not forked from a process running TensorFlow's threads.
    if current_process().name != "MainProcess" and _captions():
        runtime.lower_priority()
        runtime.warm_up()


@worker_ready.connect
def _load_model_in_worker(sender: Any = None, **kwargs: Any) -> None:
    # solo/threads pools caption in the main worker process; prefork's parent never does.
    from celery.concurrency.prefork import TaskPool as PreforkPool

    if not isinstance(getattr(sender, "pool", None), PreforkPool) and _captions():
        runtime.lower_priority()
        runtime.warm_up()
    monitoring.serve(settings.IMGCAP_WORKER_METRICS_PORT)


def _captions() -> bool:
    """Whether this worker takes caption tasks (`-Q`): a fetch-only worker never loads the model."""
    from imgcap_site.celery import app

    consume_from = app.amqp.queues.consume_from
    return not consume_from or CAPTION_QUEUE in consume_from
