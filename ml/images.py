"""Turn whatever a user hands us into an RGB PIL image.

Handles EXIF orientation, every common mode (RGBA, LA, P with transparency, L, 1,
CMYK, I;16, I, F), HEIC/HEIF (through pillow-heif) and refuses decompression bombs, so
encoders only ever see RGB. A caller that needs only a small picture (an encoder's
224-300 px input) says so with `min_size`: a big photo is then decoded at a reduced
scale and shrunk before anything else touches it, so a 48-megapixel photo costs a few
megapixels of memory instead of 144 MB.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

ImageInput = str | os.PathLike | bytes | Image.Image

# Refuse images above this many pixels (a decompression bomb guard, checked on the header before any
# pixel is decoded). Pillow itself refuses anything above twice its MAX_IMAGE_PIXELS (~179 M), so this
# is the most any caller can allow; the platform's own, lower cap is IMGCAP_MAX_PIXELS.
MAX_PIXELS = 178_956_970
IMAGE_EXTENSIONS = {
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".webp",
    ".tif",
    ".tiff",
    ".ppm",
    ".pgm",
    ".heic",
    ".heif",
}
# Modes Image.reduce takes; the others (P, 1, I;16) become RGB first.
_REDUCIBLE_MODES = {"L", "LA", "La", "RGB", "RGBA", "RGBa", "CMYK", "YCbCr", "I", "F", "PA"}


def register_heif() -> None:
    """Let Pillow open HEIC/HEIF files (iPhones' default) through pillow-heif, the maintained plugin.

    Registration is process-wide and idempotent; every module that opens user images calls it at import,
    so none depends on another having been imported first.
    """
    pillow_heif.register_heif_opener()


register_heif()


class ImageError(ValueError):
    """An input that cannot be read as an image; the message says why."""


def load_image(
    source: ImageInput,
    max_pixels: int = MAX_PIXELS,
    name: str | None = None,
    *,
    min_size: int | None = None,
) -> Image.Image:
    """Read `source` (path, bytes or PIL image) and return an upright RGB image. Errors call it
    `name` (e.g. the file name its owner knows, not a server path), by default its path.

    With `min_size`, the caller needs no more than that many pixels on each side: a picture at least
    twice as large on both comes back scaled down (a JPEG decoded at 1/2, 1/4 or 1/8 scale, a HEIF from
    an embedded thumbnail when it has one that large, then a box filter), never below `min_size` on
    either side. Smaller pictures come back exactly as without it.
    """
    if isinstance(source, Image.Image):
        image = source
    else:
        name = name or ("<bytes>" if isinstance(source, bytes) else str(source))
        try:
            fp = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
        except OSError as exc:
            raise ImageError(f"{name}: cannot open ({exc.strerror or exc})") from exc
        with fp:
            try:
                with warnings.catch_warnings():
                    # Pillow warns from ~89 M pixels; the limit that counts is max_pixels, checked next.
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    image = Image.open(fp)
                if image.width * image.height > max_pixels:
                    raise ImageError(
                        f"{name}: {image.width}x{image.height} exceeds the {max_pixels} pixel limit"
                    )
                if min_size:
                    # Only changes anything when a whole reduced scale still leaves min_size on each side.
                    image.draft(image.mode, (min_size, min_size))
                image.load()
            except ImageError:
                raise
            except UnidentifiedImageError as exc:
                raise ImageError(f"{name}: not a recognised image format") from exc
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
                raise ImageError(f"{name}: unreadable or truncated image ({exc})") from exc
    if min_size:
        image = _shrunk(image, min_size)
    # A broken EXIF block should not lose the picture.
    with contextlib.suppress(Exception):
        image = ImageOps.exif_transpose(image)
    return to_rgb(image)


def _shrunk(image: Image.Image, min_size: int) -> Image.Image:
    """`image` reduced by the largest whole factor that keeps both sides at least `min_size` (itself
    below a factor of 2): a box filter, before the EXIF turn and the mode conversion copy the picture."""
    factor = min(image.width, image.height) // min_size
    if factor < 2:
        return image
    if image.mode not in _REDUCIBLE_MODES:
        image = to_rgb(image)
    return image.reduce(factor)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB; transparency is composited on white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16/32-bit greyscale: scale the actual range to 8 bits instead of clipping.
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        arr = ((arr - lo) * scale).clip(0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def expand_paths(paths: list[str | os.PathLike]) -> list[Path]:
    """Files as given, folders expanded (recursively, sorted) to the image files inside."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and is_image_path(f)))
        else:
            out.append(p)
    return out
