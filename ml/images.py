"""Turn whatever a user hands us into an RGB PIL image.

Handles EXIF orientation, every common mode (RGBA, LA, P with transparency, L, 1,
CMYK, I;16, I, F) and refuses decompression bombs, so encoders only ever see RGB.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ImageInput = str | os.PathLike | bytes | Image.Image

# Refuse images above this many pixels (a decompression bomb guard); 64 Mpx covers real cameras.
MAX_PIXELS = 64_000_000
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


class ImageError(ValueError):
    """An input that cannot be read as an image; the message says why."""


def load_image(source: ImageInput, max_pixels: int = MAX_PIXELS, name: str | None = None) -> Image.Image:
    """Read `source` (path, bytes or PIL image) and return an upright RGB image. Errors call it
    `name` (e.g. the file name its owner knows, not a server path), by default its path."""
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
                image = Image.open(fp)
                if image.width * image.height > max_pixels:
                    raise ImageError(
                        f"{name}: {image.width}x{image.height} exceeds the {max_pixels} pixel limit"
                    )
                image.load()
            except ImageError:
                raise
            except UnidentifiedImageError as exc:
                raise ImageError(f"{name}: not a recognised image format") from exc
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
                raise ImageError(f"{name}: unreadable or truncated image ({exc})") from exc
    # A broken EXIF block should not lose the picture.
    with contextlib.suppress(Exception):
        image = ImageOps.exif_transpose(image)
    return to_rgb(image)


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
