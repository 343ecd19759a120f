"""The stored image files: named by their SHA-256 (images/ab/abcdef….jpg), written once, removed
when no image row uses them any more."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from captions import thumbnails
from captions.models import Image

logger = logging.getLogger(__name__)


def store_file(sha: str, extension: str, data: bytes, new_files: list[str]) -> str:
    """Write the bytes under their hash (images/ab/abcdef….jpg) unless that file already exists."""
    name = f"images/{sha[:2]}/{sha}.{extension.lstrip('.').lower() or 'bin'}"
    if default_storage.exists(name):
        return name
    saved = default_storage.save(name, ContentFile(data))
    new_files.append(saved)
    return saved


@contextmanager
def cleanup_new_files_on_error(new_files: list[str] | None = None) -> Iterator[list[str]]:
    """Files written inside the block (added to the list it yields: `new_files`, or a new one) are
    removed again if it fails (the rows were rolled back)."""
    new_files = [] if new_files is None else new_files
    try:
        yield new_files
    except BaseException:
        for name in new_files:
            delete_file_if_unused(name)
        raise


def delete_file_if_unused(name: str) -> None:
    """Remove a stored file (and its thumbnails) unless an image row still uses it."""
    if name and not Image.objects.filter(file=name).exists():
        try:
            default_storage.delete(name)
        except OSError:
            logger.warning("could not delete media file %s", name, exc_info=True)
        thumbnails.delete_thumbnails(Path(name).stem)  # files are named by their SHA-256 (store_file)
