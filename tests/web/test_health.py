"""GET /api/v1/health/: the database and the broker, checked for real, and the captioning queue."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from captions import queue
from imgcap_site.celery import app as celery_app

pytestmark = pytest.mark.django_db

HEALTH = "/api/v1/health/"


@contextmanager
def broker(url: str) -> Iterator[None]:
    before = celery_app.conf.broker_url
    celery_app.conf.broker_url = url
    try:
        yield
    finally:
        celery_app.conf.broker_url = before


@pytest.mark.parametrize("broker_url", [None, "redis://127.0.0.1:6379/9"], ids=["filesystem", "redis"])
def test_health_is_ok_with_the_queue_and_the_active_model(
    anon_api, user, make_image, model_version, broker_url
):
    make_image(user)
    done = make_image(user)
    queue.store_captions(model_version=model_version, results=[(done, [])])
    with broker(broker_url or celery_app.conf.broker_url):
        response = anon_api.get(HEALTH, HTTP_AUTHORIZATION="Token not-a-real-token")  # never a 401
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok" and body["checks"] == {"database": "ok", "broker": "ok"}
    assert (body["queue"]["pending"], body["queue"]["processing"]) == (1, 0)
    assert body["queue"]["oldest_pending_s"] >= 0
    assert body["model"] == model_version.name
    assert response["Cache-Control"] == "no-store"


def test_health_is_503_naming_the_broker_that_does_not_answer(anon_api):
    with broker("redis://127.0.0.1:1/0"):  # nothing listens on port 1: refused at once
        response = anon_api.get(HEALTH)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok" and body["checks"]["broker"].startswith("unavailable")


def test_oldest_pending_keeps_growing_through_reaper_resends(anon_api, user, make_image):
    from datetime import timedelta

    from django.utils import timezone

    from captions.models import Image

    image = make_image(user)
    asked = timezone.now() - timedelta(seconds=300)
    Image.objects.filter(pk=image.pk).update(queued_at=asked, updated_at=asked)
    assert queue.requeue_stale(older_than_s=60) == [image.pk]  # no worker: the reaper sends it again
    body = anon_api.get(HEALTH).json()
    assert body["queue"]["pending"] == 1 and body["queue"]["oldest_pending_s"] >= 300
    # Asking again (a retry or re-caption) is a new wait.
    Image.objects.filter(pk=image.pk).update(status="failed")
    queue.set_pending([image.pk])
    assert anon_api.get(HEALTH).json()["queue"]["oldest_pending_s"] < 60
