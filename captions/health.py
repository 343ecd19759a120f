"""Is this deployment able to take and caption uploads? For load balancers, container health checks and
people: the database and the broker answer, and how the captioning queue is doing."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import connection
from django.db.models import Count, Min
from django.utils import timezone

from captions.models import Image, ModelVersion

logger = logging.getLogger(__name__)

BROKER_TIMEOUT_S = 2.0


@dataclass
class Health:
    checks: dict[str, str] = field(default_factory=dict)  # name -> "ok" or what is wrong
    queue: dict[str, Any] = field(default_factory=dict)
    model: str | None = None

    @property
    def ok(self) -> bool:
        return all(value == "ok" for value in self.checks.values())


def check() -> Health:
    """Each dependency checked on its own, so one that is down does not hide the others."""
    health = Health()
    health.checks["database"] = _database()
    health.checks["broker"] = _broker()
    if health.checks["database"] == "ok":
        health.queue = queue_summary()
        active = ModelVersion.objects.filter(active=True).values_list("name", flat=True).first()
        health.model = active
    return health


def images_by_status(statuses: Sequence[str] = tuple(Image.Status.values)) -> dict[str, int]:
    """How many images are in each of `statuses` (0 when none); the health check asks only for the
    queue's two, which the status index answers without reading finished images."""
    counts = dict(
        Image.objects.filter(status__in=statuses).values_list("status").annotate(n=Count("id")).order_by()
    )
    return {status: counts.get(status, 0) for status in statuses}


def oldest_pending_s() -> float | None:
    """How long the image waiting longest has waited since it was asked for (None: none waits)."""
    oldest = Image.objects.filter(status=Image.Status.PENDING).aggregate(at=Min("queued_at"))["at"]
    return (timezone.now() - oldest).total_seconds() if oldest else None


def queue_summary() -> dict[str, Any]:
    """Images waiting and being captioned, and how long the oldest waiting one has waited (seconds)."""
    counts = images_by_status((Image.Status.PENDING, Image.Status.PROCESSING))
    oldest = oldest_pending_s()
    return {
        "pending": counts[Image.Status.PENDING],
        "processing": counts[Image.Status.PROCESSING],
        "oldest_pending_s": round(oldest, 1) if oldest is not None else None,
    }


def _database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any driver error means the same thing here: not reachable
        logger.warning("health: database check failed: %s", exc)
        return f"unavailable: {type(exc).__name__}"
    return "ok"


def _broker() -> str:
    from imgcap_site.celery import app  # the publisher only: no task or model code is imported

    started = time.monotonic()
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_S)
    except Exception as exc:  # kombu raises transport-specific errors
        logger.warning("health: broker check failed after %.1fs: %s", time.monotonic() - started, exc)
        return f"unavailable: {type(exc).__name__}"
    return "ok"
