"""The changes people make to their images: captions (added, or removed to go back to the model's),
visibility, re-captioning, deletion."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction
from django.utils import timezone

from captions import queue
from captions.ingest import RejectedInput
from captions.models import Caption, Image
from captions.services.embeddings import follow_shown_captions
from captions.services.files import delete_file_if_unused

MAX_CAPTION_CHARS = 1000


class InvalidState(RejectedInput):
    """The request conflicts with the image's current state (409)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message, status=409)


def check_visibility(visibility: str) -> None:
    if visibility not in Image.Visibility.values:
        raise RejectedInput(
            "bad_visibility",
            f"visibility must be one of {', '.join(Image.Visibility.values)}; got {visibility!r}",
        )


def add_human_caption(*, image: Image, text: str, author=None) -> Caption:
    """Record a person's caption; it becomes the image's best caption. Model captions are kept."""
    clean = " ".join((text or "").split())
    if not clean:
        raise RejectedInput("empty_caption", "the caption is empty")
    if len(clean) > MAX_CAPTION_CHARS:
        raise RejectedInput("caption_too_long", f"a caption has at most {MAX_CAPTION_CHARS} characters")
    caption = Caption.objects.create(
        image=image,
        text=clean,
        score=None,
        rank=0,
        model_version=None,
        source=Caption.Source.HUMAN,
        author=author,
    )
    Image.objects.filter(pk=image.pk).update(updated_at=timezone.now())
    follow_shown_captions([image.pk])
    return caption


def add_human_captions(*, rows: Iterable[tuple[Image, str]], author=None) -> int:
    """`add_human_caption` in bulk (dataset imports); skips exact duplicates. Returns how many were added."""
    have: dict[int, set[str]] = {}
    new: list[Caption] = []
    for image, text in rows:
        clean = " ".join((text or "").split())[:MAX_CAPTION_CHARS]
        if not clean:
            continue
        if image.pk not in have:
            have[image.pk] = set(
                Caption.objects.filter(image=image, source=Caption.Source.HUMAN).values_list(
                    "text", flat=True
                )
            )
        if clean in have[image.pk]:
            continue
        have[image.pk].add(clean)
        new.append(Caption(image=image, text=clean, rank=0, source=Caption.Source.HUMAN, author=author))
    Caption.objects.bulk_create(new, batch_size=1000)
    follow_shown_captions(have)
    return len(new)


def remove_human_captions(*, image: Image, caption_id: int | None = None) -> int:
    """Remove people's captions of the image (all of them, or only `caption_id`), so that what the
    model wrote is shown again; its search vector follows. Returns how many were removed.
    RejectedInput (404) when there is nothing to remove."""
    captions = Caption.objects.filter(image=image, source=Caption.Source.HUMAN)
    if caption_id is not None:
        captions = captions.filter(pk=caption_id)
    with transaction.atomic():
        removed, _ = captions.delete()
        if not removed:
            what = (
                f"no caption {caption_id} written by a person"
                if caption_id is not None
                else ("no caption written by a person")
            )
            raise RejectedInput("no_human_caption", f"image {image.pk} has {what}", status=404)
        changed = {"updated_at": timezone.now()}
        if not Caption.objects.filter(image=image).exists():
            # Nothing left to show: no vector either, or search by meaning would find removed words.
            changed |= {"caption_embedding": None, "embedded_caption": None}
        Image.objects.filter(pk=image.pk).update(**changed)
    follow_shown_captions([image.pk])
    return removed


def recaption_image(*, image: Image) -> Image:
    """Queue the image again so the workers' current model captions it; existing captions are kept."""
    with transaction.atomic():
        locked = Image.objects.select_for_update().get(pk=image.pk)
        if locked.status in (Image.Status.PENDING, Image.Status.PROCESSING):
            raise InvalidState("already_queued", f"image {locked.pk} is already {locked.status}")
        queue.set_pending([locked.pk])
    image.refresh_from_db()
    return image


def retry_image(*, image: Image) -> Image:
    """Queue a failed image again, with a fresh count of attempts."""
    with transaction.atomic():
        locked = Image.objects.select_for_update().get(pk=image.pk)
        if locked.status != Image.Status.FAILED:
            raise InvalidState(
                "not_failed", f"only failed images can be retried; image {locked.pk} is {locked.status}"
            )
        queue.set_pending([locked.pk])
    image.refresh_from_db()
    return image


def requeue_images(*, images) -> list[int]:
    """Queue finished (done or failed) images of a queryset again; for `recaption_all`. Returns their ids."""
    with transaction.atomic():
        ids = list(
            images.select_for_update()
            .filter(status__in=[Image.Status.DONE, Image.Status.FAILED])
            .order_by("id")
            .values_list("id", flat=True)
        )
        queue.set_pending(ids)
    return ids


def delete_image(*, image: Image) -> None:
    """Delete the image and its captions; its file goes too unless another image row uses the same bytes."""
    delete_images(images=[image])


def delete_images(*, images: Iterable[Image]) -> None:
    """`delete_image` for many, in one transaction (the gallery's bulk delete)."""
    images = list(images)
    names = sorted({image.file.name for image in images})
    with transaction.atomic():
        Image.objects.filter(pk__in=[image.pk for image in images]).delete()
        transaction.on_commit(lambda: [delete_file_if_unused(name) for name in names])


def set_share_location(*, image: Image, share: bool) -> Image:
    """Whether people other than the owner get the photo's GPS position (captions/location.py)."""
    if image.share_location != share:
        image.share_location = share
        image.save(update_fields=["share_location", "updated_at"])
    return image


def set_visibility(*, image: Image, visibility: str) -> Image:
    check_visibility(visibility)
    if image.visibility != visibility:
        image.visibility = visibility
        image.save(update_fields=["visibility", "updated_at"])
    return image
