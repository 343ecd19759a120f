"""`GET /api/v1/images/{id}/?wait=N`: the answer waits until the image is captioned (done or failed)
or N seconds (at most 30) have passed, so a client hears of its caption in one request, not by polling.

A waiting request holds a web thread (gunicorn's gthread workers have a few per process) and re-reads
only the image's status every POLL_S, by primary key. At most IMGCAP_MAX_WAITING_REQUESTS requests of
one process wait at once; beyond that a request answers at once, as without `wait`, so waits can never
take every thread and leave ordinary requests queueing behind them.
"""

from __future__ import annotations

import math
import threading
import time

from django.conf import settings

from captions.ingest import RejectedInput
from captions.models import Image

MAX_WAIT_S = 30
POLL_S = 0.5
# How long the answer waited, in seconds ("0.0": not at all); the request timing leaves it out.
WAITED_HEADER = "X-Imgcap-Waited"
UNSETTLED = (Image.Status.PENDING, Image.Status.PROCESSING)

_slots_lock = threading.Lock()
_slots: tuple[int, threading.BoundedSemaphore] | None = None


def parse_wait(raw: str | None) -> float | None:
    """The `wait` parameter in seconds (None when absent), or RejectedInput bad_wait (400)."""
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_WAIT_S):
        raise RejectedInput(
            "bad_wait", f"wait must be a number of seconds above 0 and at most {MAX_WAIT_S}; got {raw!r}"
        )
    return seconds


def wait_until_settled(image: Image, seconds: float) -> float:
    """Wait while `image` is pending or processing, re-reading its status, until it is neither (or is
    deleted) or `seconds` have passed. Returns the seconds waited: 0 when it had settled already or
    this process has no waiting slot free."""
    if image.status not in UNSETTLED:
        return 0.0
    slots = _waiting_slots()
    if not slots.acquire(blocking=False):
        return 0.0
    started = time.monotonic()
    deadline = started + seconds
    try:
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(POLL_S, left))
            status = Image.objects.filter(pk=image.pk).values_list("status", flat=True).first()
            if status not in UNSETTLED:
                break
    finally:
        slots.release()
    return time.monotonic() - started


def _waiting_slots() -> threading.BoundedSemaphore:
    """This process's semaphore of waiting requests, made again if the setting changed (tests do)."""
    global _slots
    limit = max(0, settings.IMGCAP_MAX_WAITING_REQUESTS)
    with _slots_lock:
        if _slots is None or _slots[0] != limit:
            _slots = (limit, threading.BoundedSemaphore(limit))
        return _slots[1]
