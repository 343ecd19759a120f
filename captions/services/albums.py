"""Albums: named sets of an owner's images, and their public read-only links."""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from django.db import IntegrityError, transaction
from django.utils import timezone

from captions.ingest import RejectedInput
from captions.models import Album, AlbumItem, Image

MAX_NAME_CHARS = 200
MAX_DESCRIPTION_CHARS = 2000


def _clean_name(name: str) -> str:
    clean = " ".join((name or "").split())
    if not clean:
        raise RejectedInput("empty_album_name", "an album needs a name")
    if len(clean) > MAX_NAME_CHARS:
        raise RejectedInput("album_name_too_long", f"an album name has at most {MAX_NAME_CHARS} characters")
    return clean


def _clean_description(description: str) -> str:
    clean = (description or "").strip()
    if len(clean) > MAX_DESCRIPTION_CHARS:
        raise RejectedInput(
            "album_description_too_long", f"a description has at most {MAX_DESCRIPTION_CHARS} characters"
        )
    return clean


def _name_taken(name: str) -> RejectedInput:
    return RejectedInput("album_name_taken", f"you already have an album called {name!r}", status=409)


def create_album(*, owner, name: str, description: str = "") -> Album:
    clean = _clean_name(name)
    try:
        with transaction.atomic():
            return Album.objects.create(owner=owner, name=clean, description=_clean_description(description))
    except IntegrityError:
        raise _name_taken(clean) from None


def get_or_create_album(*, owner, name: str) -> tuple[Album, bool]:
    """The owner's album of that name, made if there is none (uploads "into album X")."""
    clean = _clean_name(name)
    album = Album.objects.filter(owner=owner, name=clean).first()
    if album is not None:
        return album, False
    try:
        return create_album(owner=owner, name=clean), True
    except RejectedInput:  # made by a concurrent request between the two statements
        return Album.objects.get(owner=owner, name=clean), False


def update_album(*, album: Album, name: str | None = None, description: str | None = None) -> Album:
    if name is not None:
        album.name = _clean_name(name)
    if description is not None:
        album.description = _clean_description(description)
    try:
        with transaction.atomic():
            album.save(update_fields=["name", "description", "updated_at"])
    except IntegrityError:
        raise _name_taken(album.name) from None
    return album


def delete_album(*, album: Album) -> None:
    """The album goes; its images stay in the library (and in other albums)."""
    album.delete()


def add_images(*, album: Album, images: Iterable[Image]) -> int:
    """Put the owner's `images` into `album`; those already in it are skipped. Returns how many were added."""
    ids = {image.pk for image in images if image.owner_id == album.owner_id}
    if not ids:
        return 0
    with transaction.atomic():
        have = set(AlbumItem.objects.filter(album=album, image_id__in=ids).values_list("image_id", flat=True))
        new = [AlbumItem(album=album, image_id=pk) for pk in sorted(ids - have)]
        AlbumItem.objects.bulk_create(new, ignore_conflicts=True)
        Album.objects.filter(pk=album.pk).update(updated_at=timezone.now())
    return len(new)


def remove_images(*, album: Album, images: Iterable[Image]) -> int:
    """Take `images` out of `album` (they stay in the library). Returns how many were in it."""
    removed, _ = AlbumItem.objects.filter(album=album, image__in=[image.pk for image in images]).delete()
    if removed:
        Album.objects.filter(pk=album.pk).update(updated_at=timezone.now())
    return removed


def share_album(*, album: Album) -> Album:
    """Give the album a public read-only link; an album already shared keeps its link."""
    if album.share_token is None:
        album.share_token = secrets.token_urlsafe(24)  # 192 bits: not guessable, fits a URL
        album.shared_at = timezone.now()
        album.save(update_fields=["share_token", "shared_at", "updated_at"])
    return album


def revoke_share(*, album: Album) -> Album:
    """The album's link stops working at once; sharing again makes a new one."""
    if album.share_token is not None:
        album.share_token = None
        album.shared_at = None
        album.save(update_fields=["share_token", "shared_at", "updated_at"])
    return album


def change_images(*, album: Album, add: Iterable[int] = (), remove: Iterable[int] = ()) -> tuple[int, int]:
    """Put the owner's images `add` (ids) in `album` and take `remove` out, in one transaction; ids of
    other people's images are skipped (the API refuses them first). Returns (added, removed)."""
    add, remove = list(add), list(remove)
    with transaction.atomic():
        added = add_images(album=album, images=Image.objects.filter(owner_id=album.owner_id, pk__in=add))
        removed = remove_images(album=album, images=Image.objects.filter(pk__in=remove)) if remove else 0
    return added, removed
