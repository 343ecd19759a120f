"""What one user may keep and have waiting: the bytes of their stored images and their images not yet
captioned (settings IMGCAP_USER_STORAGE_BYTES, IMGCAP_USER_QUEUE_IMAGES; 0 is no limit).

Checked by the intake (services/intake.py) before anything is stored. Soft limits: two uploads racing
may both pass, which overshoots by at most one request; a per-user lock would serialise every upload.
"""

from __future__ import annotations

from django.conf import settings
from django.db.models import Count, Q, Sum

from captions.ingest import RejectedInput
from captions.ingest.errors import human_bytes
from captions.models import Image

QUEUE_RETRY_AFTER_S = 60  # workers caption a few images a second: in a minute there is room again


def check_quotas(owner, *, images: int, size: int) -> None:
    """Raise RejectedInput (403 storage, 429 queue) if `images` new images of `size` bytes in all
    would take `owner` over a quota."""
    if images <= 0:
        return
    storage, queue = settings.IMGCAP_USER_STORAGE_BYTES, settings.IMGCAP_USER_QUEUE_IMAGES
    if not storage and not queue:
        return
    # Both figures from one pass over the owner's images.
    waiting_statuses = [Image.Status.PENDING, Image.Status.PROCESSING]
    usage = Image.objects.filter(owner=owner).aggregate(
        used=Sum("size"), waiting=Count("id", filter=Q(status__in=waiting_statuses))
    )
    used, waiting = usage["used"] or 0, usage["waiting"]
    if storage and used + size > storage:
        raise RejectedInput(
            "storage_quota",
            f"your images take {human_bytes(used)} of your {human_bytes(storage)}; "
            f"{_these(images)} would need {human_bytes(size)} more: delete some, or ask the "
            "administrator for more room",
            status=403,
        )
    if queue and waiting + images > queue:
        raise RejectedInput(
            "queue_quota",
            f"{waiting:,} of your images are still waiting for captions (at most {queue:,} may "
            f"wait); send {_these(images)} again once some are done",
            status=429,
            retry_after=QUEUE_RETRY_AFTER_S,
        )


def _these(images: int) -> str:
    return "this image" if images == 1 else f"these {images:,} images"
