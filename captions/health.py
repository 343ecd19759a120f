"""Is this deployment able to take and caption uploads? For load balancers, container health checks and
people: the database and the broker answer, and how the captioning queue is doing."""

from __future__ import annotations

import logging
import time
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


def queue_summary() -> dict[str, Any]:
    """Images waiting and being captioned, and how long the oldest waiting one has waited (seconds)."""
    counts = dict(
        Image.objects.filter(status__in=[Image.Status.PENDING, Image.Status.PROCESSING])
        .values_list("status")
        .annotate(n=Count("id"))
    )
    oldest = Image.objects.filter(status=Image.Status.PENDING).aggregate(at=Min("queued_at"))["at"]
    return {
        "pending": counts.get(Image.Status.PENDING, 0),
        "processing": counts.get(Image.Status.PROCESSING, 0),
        "oldest_pending_s": round((timezone.now() - oldest).total_seconds(), 1) if oldest else None,
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
