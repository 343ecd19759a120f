"""Gallery thumbnails: made once per image content and size, lazily on first request, kept in media storage.

A thumbnail is stored as thumbs/<size>/<sha[:2]>/<sha>.webp, so owners sharing the same bytes share it and
it never needs invalidating (an image's bytes never change). Serving goes through the same visibility check
as the full image (captions.api.views.ThumbnailView).

The largest size, DISPLAY_SIZE, is what the image page shows instead of the original when browsers cannot
display the original's format (HEIC/HEIF, TIFF); the original stays the download.
"""

from __future__ import annotations

import io
import logging

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image as PILImage
from PIL import ImageOps

from captions.models import Image
from ml.images import register_heif

logger = logging.getLogger(__name__)

# Longest side in pixels: 320 fills a gallery card, 640 the same card on a high-density screen, 1600 the
# image page's photo (about 800 CSS pixels wide) on one.
SIZES = (320, 640, 1600)
DEFAULT_SIZE = SIZES[0]
DISPLAY_SIZE = SIZES[-1]
# Formats we accept that browsers cannot show (only Safari shows HEIC; none shows TIFF but Safari).
UNDISPLAYABLE_FORMATS = frozenset({"HEIF", "TIFF"})
CONTENT_TYPE = "image/webp"
_QUALITY = 80

register_heif()


class ThumbnailError(Exception):
    """The original could not be read or resized (it passed the upload checks, so this is rare)."""


def thumbnail_name(sha256: str, size: int) -> str:
    return f"thumbs/{size}/{sha256[:2]}/{sha256}.webp"


def needs_display_copy(image: Image) -> bool:
    """Whether pages show `image` through its DISPLAY_SIZE WebP rather than its original file."""
    return image.format in UNDISPLAYABLE_FORMATS


def thumbnail_for(image: Image, size: int = DEFAULT_SIZE) -> str:
    """The storage name of `image`'s thumbnail at `size`, made now if it does not exist yet."""
    if size not in SIZES:
        raise ValueError(f"thumbnail size must be one of {SIZES}; got {size}")
    name = thumbnail_name(image.sha256, size)
    if default_storage.exists(name):
        return name
    data = make_thumbnail(_read(image.file.name), size)
    saved = default_storage.save(name, ContentFile(data))
    if saved != name:
        # Another request made the same thumbnail meanwhile; storage gave ours another name.
        default_storage.delete(saved)
    return name


def make_thumbnail(data: bytes, size: int) -> bytes:
    """WebP bytes of the picture in `data`, its longest side `size` pixels (never enlarged), EXIF-rotated."""
    try:
        with PILImage.open(io.BytesIO(data)) as picture:
            # JPEG: decode at a reduced scale; HEIF: decode an embedded thumbnail at least this large if any.
            picture.draft("RGB", (size, size))
            picture = ImageOps.exif_transpose(picture)
            has_alpha = picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info
            picture = picture.convert("RGBA" if has_alpha else "RGB")
            picture.thumbnail((size, size), PILImage.Resampling.LANCZOS)
            out = io.BytesIO()
            picture.save(out, format="WEBP", quality=_QUALITY, method=4)
    except (OSError, ValueError, PILImage.DecompressionBombError) as exc:
        raise ThumbnailError(str(exc)) from exc
    return out.getvalue()


def delete_thumbnails(sha256: str) -> None:
    """Remove every size of the thumbnails of these bytes (when no image uses them any more)."""
    for size in SIZES:
        name = thumbnail_name(sha256, size)
        try:
            if default_storage.exists(name):
                default_storage.delete(name)
        except OSError:
            logger.warning("could not delete thumbnail %s", name, exc_info=True)


def _read(name: str) -> bytes:
    try:
        with default_storage.open(name, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise ThumbnailError(f"cannot read {name}: {exc}") from exc
