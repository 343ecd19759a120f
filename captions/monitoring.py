"""Prometheus monitoring of the web side: `GET /metrics` and the latency of every request.

The queue is read from the database at each scrape (images by status, the oldest pending one's
wait, claims whose worker fell silent), so any web process answers for the whole deployment.
Request latency is per process; under gunicorn with several workers set PROMETHEUS_MULTIPROC_DIR
(prometheus-client's multiprocess mode) so that a scrape sums them. The worker processes serve
their own figures (worker/monitoring.py). See docs/operations.md for a scrape config and alerts.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

from django.conf import settings
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import REGISTRY, CollectorRegistry, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from captions import health
from captions.long_poll import WAITED_HEADER
from captions.models import Caption, Image

REQUEST_SECONDS = Histogram(
    "imgcap_http_request_duration_seconds",
    "Time to answer an HTTP request, by view (URL name), method and status class.",
    ["view", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)


class QueueCollector:
    """The captioning queue as the database records it, read when scraped."""

    def collect(self) -> Iterator[Metric]:
        images = GaugeMetricFamily("imgcap_images", "Images by captioning status.", labels=["status"])
        for status, count in health.images_by_status().items():
            images.add_metric([status], count)
        yield images
        yield GaugeMetricFamily(
            "imgcap_oldest_pending_seconds",
            "How long the image waiting longest has waited since it was asked for (0: none waits).",
            value=health.oldest_pending_s() or 0.0,
        )
        silent_since = timezone.now() - timedelta(seconds=3 * settings.IMGCAP_HEARTBEAT_S)
        yield GaugeMetricFamily(
            "imgcap_silent_claims",
            "Images processing whose worker has not beaten for three heartbeats (killed or stuck).",
            value=Image.objects.filter(status=Image.Status.PROCESSING, heartbeat_at__lt=silent_since).count(),
        )
        captions = GaugeMetricFamily("imgcap_captions", "Stored captions by source.", labels=["source"])
        by_source = dict(Caption.objects.values_list("source").annotate(n=Count("id")).order_by())
        for source in Caption.Source.values:
            captions.add_metric([source], by_source.get(source, 0))
        yield captions


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus' text format: this process's (or, in multiprocess mode, every process's) request
    figures, then the queue. With IMGCAP_METRICS_TOKEN set, scrapers send it as a bearer token."""
    token = settings.IMGCAP_METRICS_TOKEN
    if token and request.headers.get("Authorization") != f"Bearer {token}":
        return HttpResponse("metrics need the bearer token (IMGCAP_METRICS_TOKEN)\n", status=401)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        processes = CollectorRegistry()
        multiprocess.MultiProcessCollector(processes)
    else:
        processes = REGISTRY
    queue = CollectorRegistry()
    queue.register(QueueCollector())
    body = generate_latest(processes) + generate_latest(queue)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})


class RequestTimingMiddleware:
    """Observes every request's duration into REQUEST_SECONDS (early in MIDDLEWARE: nearly all of it),
    less the time a long poll spent waiting for its image (captions/long_poll.py): the client asked
    for that wait, so it must not read as a slow server."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        view = (match.view_name or "unnamed") if match else "unresolved"
        try:
            waited = float(response.get(WAITED_HEADER, 0))
        except ValueError:
            waited = 0.0
        REQUEST_SECONDS.labels(view, request.method, f"{response.status_code // 100}xx").observe(
            max(0.0, time.perf_counter() - started - waited)
        )
        return response
