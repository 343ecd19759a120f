"""Prometheus monitoring of a worker process: what its micro-batches do, served over HTTP on
IMGCAP_WORKER_METRICS_PORT (started when the worker is ready; off when the setting is unset).

Figures are this process's (prefork children: set PROMETHEUS_MULTIPROC_DIR to sum them); the
queue itself is on the web side's /metrics (captions/monitoring.py).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram, start_http_server

if TYPE_CHECKING:
    from worker.micro_batches import MicroBatchReport

logger = logging.getLogger(__name__)

MICRO_BATCH_IMAGES = Histogram(
    "imgcap_worker_micro_batch_images",
    "Images claimed by one micro-batch.",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
MODEL_SECONDS = Histogram(
    "imgcap_worker_model_seconds",
    "Time in the captioner's call (reading, encoding, decoding) per micro-batch.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0),
)
STORE_SECONDS = Histogram(
    "imgcap_worker_store_seconds",
    "Time writing one micro-batch's captions.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0),
)
IMAGES = Counter("imgcap_worker_images_total", "Images this worker finished, by outcome.", ["outcome"])
FAILURES = Counter("imgcap_worker_failures_total", "Images this worker marked failed, by reason.", ["reason"])
MODEL_LOAD_SECONDS = Gauge("imgcap_worker_model_load_seconds", "How long loading the captioner took.")
LAST_BEAT = Gauge(
    "imgcap_worker_last_beat_timestamp_seconds",
    "When this worker last showed it was alive (a task, or a heartbeat of its claims); Unix time.",
)


def record(report: MicroBatchReport) -> None:
    """One micro-batch's figures (called with its report)."""
    LAST_BEAT.set_to_current_time()
    if not report.claimed:
        return
    MICRO_BATCH_IMAGES.observe(len(report.claimed))
    if report.model_inputs:
        MODEL_SECONDS.observe(report.model_seconds)
        STORE_SECONDS.observe(report.store_seconds)
    IMAGES.labels("done").inc(len(report.done))
    IMAGES.labels("failed").inc(len(report.failed))
    for reason in report.failure_reasons:
        FAILURES.labels(reason).inc()


def serve(port: int | None) -> None:
    """Serve this process's figures on `port` (nothing when None)."""
    if port is None:
        return
    try:
        start_http_server(port)
    except OSError as exc:  # e.g. the port is taken: monitoring must never stop the captioning
        logger.warning("imgcap worker metrics not served on port %s: %s", port, exc)
    else:
        logger.info("imgcap worker metrics on http://0.0.0.0:%s/metrics", port)
