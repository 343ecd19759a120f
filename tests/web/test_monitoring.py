"""Prometheus monitoring: the web side's /metrics (the queue, request latency) and the workers' figures."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.django_db


def scrape(client, **headers) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"].startswith("text/plain") and response["Cache-Control"] == "no-store"
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def test_metrics_show_the_queue_and_how_fast_requests_are_answered(client, api, user, make_image):
    make_image(user)
    make_image(user)
    assert api.get("/api/v1/images/").status_code == 200
    samples = scrape(client)
    assert samples[("imgcap_images", (("status", "pending"),))] == 2
    assert samples[("imgcap_images", (("status", "done"),))] == 0
    assert samples[("imgcap_oldest_pending_seconds", ())] >= 0
    assert samples[("imgcap_silent_claims", ())] == 0
    listed = (
        "imgcap_http_request_duration_seconds_count",
        (("method", "GET"), ("status", "2xx"), ("view", "api:image-list")),
    )
    assert samples[listed] >= 1


def test_metrics_can_require_a_bearer_token(client, settings):
    settings.IMGCAP_METRICS_TOKEN = "s3cret-token"
    assert client.get("/metrics").status_code == 401
    assert ("imgcap_silent_claims", ()) in scrape(client, HTTP_AUTHORIZATION="Bearer s3cret-token")


def test_worker_figures_count_each_micro_batch(settings, tiny_run, tiny_captioner, user, make_image):
    from worker import micro_batches

    settings.IMGCAP_MODEL_DIR = str(tiny_run)
    settings.IMGCAP_MICRO_BATCH_WAIT_MS = 0

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = (
        value("imgcap_worker_images_total", outcome="done"),
        value("imgcap_worker_micro_batch_images_count"),
    )
    images = [make_image(user) for _ in range(2)]
    report = micro_batches.caption_pending(captioner=tiny_captioner)
    assert sorted(report.done) == sorted(im.pk for im in images)
    assert value("imgcap_worker_images_total", outcome="done") == before[0] + 2
    assert value("imgcap_worker_micro_batch_images_count") == before[1] + 1
    assert value("imgcap_worker_model_seconds_count") >= 1
    assert value("imgcap_worker_last_beat_timestamp_seconds") > 0
