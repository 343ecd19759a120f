"""One change to many of an owner's images at once (the gallery's selection, `POST /api/v1/images/bulk/`):
delete, make public or private, re-caption, put in or take out of an album. Each action is one
transaction: all the images change, or none."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from django.db import transaction
from django.utils import timezone

from captions import queue
from captions.ingest import RejectedInput
from captions.models import Album, Image
from captions.services import albums
from captions.services.images import delete_images

MAX_IMAGES = 500

ACTIONS = {
    "delete": "deleted",
    "make_public": "made public",
    "make_private": "made private",
    "recaption": "queued for captioning",
    "add_to_album": "put in the album",
    "remove_from_album": "taken out of the album",
}
ALBUM_ACTIONS = ("add_to_album", "remove_from_album")


@dataclass(frozen=True)
class Skipped:
    id: int
    code: str
    message: str


@dataclass
class BulkResult:
    action: str
    changed: list[int] = field(default_factory=list)  # the images the action changed
    skipped: list[Skipped] = field(default_factory=list)  # those it left as they were, and why

    def summary(self, album_name: str | None = None) -> str:
        """'3 images made public; 1 left as it was (already public)', for the gallery's message."""
        n = len(self.changed)
        text = f"{n} image{'s' if n != 1 else ''} {ACTIONS[self.action]}"
        if album_name:
            text += f" “{album_name}”"
        if self.skipped:
            reasons = sorted({s.message.split(": ", 1)[-1] for s in self.skipped})
            text += f"; {len(self.skipped)} left as {'they were' if len(self.skipped) != 1 else 'it was'}"
            text += f" ({'; '.join(reasons)})"
        return text


def check_images(owner, image_ids: Sequence[int]) -> list[Image]:
    """The owner's images `image_ids`, in id order; RejectedInput (400) naming those that are not theirs,
    or when there are none or too many, before anything changes."""
    ids = sorted(set(image_ids))
    if not ids:
        raise RejectedInput("no_images", "choose one or more images")
    if len(ids) > MAX_IMAGES:
        raise RejectedInput("too_many_images", f"at most {MAX_IMAGES} images at once; got {len(ids)}")
    images = list(Image.objects.filter(owner=owner, pk__in=ids).order_by("id"))
    unknown = sorted(set(ids) - {image.pk for image in images})
    if unknown:
        shown = ", ".join(map(str, unknown[:10])) + (" …" if len(unknown) > 10 else "")
        raise RejectedInput("unknown_images", f"these are not images of yours: {shown}")
    return images


def apply_to_images(
    *, owner, image_ids: Sequence[int], action: str, album: Album | None = None
) -> BulkResult:
    """Do `action` to the owner's images `image_ids` (all of them theirs, else RejectedInput and nothing
    changes). Album actions need `album`, one of the owner's."""
    if action not in ACTIONS:
        raise RejectedInput("bad_action", f"action must be one of {', '.join(ACTIONS)}; got {action!r}")
    if action in ALBUM_ACTIONS and (album is None or album.owner_id != owner.pk):
        raise RejectedInput("unknown_album", "choose one of your albums")
    images = check_images(owner, image_ids)
    ids = [image.pk for image in images]
    result = BulkResult(action=action)
    with transaction.atomic():
        if action == "delete":
            delete_images(images=images)
            result.changed = ids
        elif action in ("make_public", "make_private"):
            wanted = Image.Visibility.PUBLIC if action == "make_public" else Image.Visibility.PRIVATE
            change = [image.pk for image in images if image.visibility != wanted]
            Image.objects.filter(pk__in=change).update(visibility=wanted, updated_at=timezone.now())
            result.changed = change
            result.skipped = [
                Skipped(image.pk, "unchanged", f"image {image.pk}: already {wanted}")
                for image in images
                if image.visibility == wanted
            ]
        elif action == "recaption":
            locked = Image.objects.select_for_update().filter(pk__in=ids).order_by("id")
            busy = {Image.Status.PENDING, Image.Status.PROCESSING}
            result.changed = [image.pk for image in locked if image.status not in busy]
            result.skipped = [
                Skipped(image.pk, "already_queued", f"image {image.pk}: already queued")
                for image in images
                if image.pk not in result.changed
            ]
            queue.set_pending(result.changed)
        else:
            assert album is not None
            inside = set(album.items.filter(image_id__in=ids).values_list("image_id", flat=True))
            if action == "add_to_album":
                albums.change_images(album=album, add=ids)
                result.changed = [pk for pk in ids if pk not in inside]
                state = "already in it"
            else:
                albums.change_images(album=album, remove=ids)
                result.changed = [pk for pk in ids if pk in inside]
                state = "not in it"
            result.skipped = [
                Skipped(pk, "unchanged", f"image {pk}: {state}") for pk in ids if pk not in result.changed
            ]
    return result
