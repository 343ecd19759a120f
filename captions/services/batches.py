"""Changes to a batch after it came in: its name, and deleting it (its images stay unless asked)."""

from __future__ import annotations

from django.db import transaction

from captions.ingest import RejectedInput
from captions.models import Batch, Image
from captions.services.images import InvalidState, delete_images

MAX_NAME_CHARS = 200


def rename_batch(*, batch: Batch, name: str) -> Batch:
    """Name the batch ("Lisbon, day 2"); an empty name goes back to "Batch N"."""
    clean = " ".join((name or "").split())
    if len(clean) > MAX_NAME_CHARS:
        raise RejectedInput("batch_name_too_long", f"a batch name has at most {MAX_NAME_CHARS} characters")
    if clean != batch.name:
        batch.name = clean
        batch.save(update_fields=["name"])
    return batch


def delete_batch(*, batch: Batch, with_images: bool = False) -> int:
    """Delete the batch (its page, its record of what was refused). Its images stay in the library
    (and in their albums) unless `with_images`, which deletes them too, from everywhere. Returns how
    many images were deleted. 409 while a worker still fetches its URLs."""
    if batch.urls_waiting:
        raise InvalidState("batch_fetching", f"batch {batch.pk} is still fetching URLs; delete it once done")
    deleted = 0
    with transaction.atomic():
        if with_images:
            images = list(Image.objects.filter(batch_items__batch=batch, owner=batch.owner))
            delete_images(images=images)
            deleted = len(images)
        batch.delete()
    return deleted
