"""Show-Attend-and-Tell style attention figures, drawn with numpy and Pillow only.

The figure is a grid: the input image first, then one tile per generated word showing
where the decoder looked (that word's attention map as a heatmap over the dimmed image),
with the word written under the tile.

The encoders stretch the whole image to a square before the CNN, so the h x w attention
grid covers the whole picture: each map is stretched back to the image's own aspect ratio.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ml.images import to_rgb

# An inferno-like ramp (black -> purple -> red -> orange -> pale yellow): perceptually
# ordered and still readable in greyscale, so "hotter" always means "brighter".
_RAMP_STOPS = np.linspace(0.0, 1.0, 9)
_RAMP_RGB = np.array(
    [
        [0, 0, 4],
        [31, 12, 72],
        [85, 15, 109],
        [136, 34, 106],
        [186, 54, 85],
        [227, 89, 51],
        [249, 140, 10],
        [249, 201, 50],
        [252, 255, 164],
    ],
    dtype=np.float32,
)

DIM = 0.5  # brightness kept from the photo under the heatmap
ALPHA_MIN, ALPHA_MAX = 0.35, 0.7  # heatmap opacity at zero / peak attention: context stays visible
MARGIN = 6
BACKGROUND = (255, 255, 255)
TEXT_COLOUR = (20, 20, 20)
MIN_CELL = 32


def colormap(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] (clipped) to float32 RGB in [0, 255], shape values.shape + (3,)."""
    v = np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)
    return np.stack([np.interp(v, _RAMP_STOPS, _RAMP_RGB[:, c]) for c in range(3)], axis=-1).astype(
        np.float32
    )


def tile_size(image_size: tuple[int, int], cell: int) -> tuple[int, int]:
    """(width, height) of one tile: the image scaled so its longer side is `cell`."""
    w, h = image_size
    if w >= h:
        return cell, max(1, round(cell * h / w))
    return max(1, round(cell * w / h)), cell


def _label_height(cell: int) -> int:
    return round(_font_size(cell) * 1.7)


def _font_size(cell: int) -> int:
    return max(10, cell // 12)


def grid_shape(count: int, columns: int) -> tuple[int, int]:
    """(columns, rows) used for `count` tiles: never more columns than tiles."""
    cols = max(1, min(columns, count))
    return cols, math.ceil(count / cols)


def tile_boxes(
    image_size: tuple[int, int], count: int, columns: int = 4, cell: int = 224
) -> list[tuple[int, int, int, int]]:
    """Canvas (left, top, right, bottom) of each tile's picture, in reading order (label excluded)."""
    tw, th = tile_size(image_size, cell)
    cols, _ = grid_shape(count, columns)
    step_x, step_y = tw + MARGIN, th + _label_height(cell) + MARGIN
    boxes = []
    for i in range(count):
        left, top = MARGIN + (i % cols) * step_x, MARGIN + (i // cols) * step_y
        boxes.append((left, top, left + tw, top + th))
    return boxes


def canvas_size(
    image_size: tuple[int, int], count: int, columns: int = 4, cell: int = 224
) -> tuple[int, int]:
    """(width, height) of the figure for `count` tiles."""
    tw, th = tile_size(image_size, cell)
    cols, rows = grid_shape(count, columns)
    return MARGIN + cols * (tw + MARGIN), MARGIN + rows * (th + _label_height(cell) + MARGIN)


def _validate(words: list[str], attention: np.ndarray, columns: int, cell: int) -> np.ndarray:
    att = np.asarray(attention, dtype=np.float64)
    if att.ndim != 3:
        raise ValueError(f"attention must have shape [T, h, w], got {att.shape}")
    if att.shape[0] != len(words):
        raise ValueError(f"attention has {att.shape[0]} maps but there are {len(words)} words")
    if att.shape[1] < 1 or att.shape[2] < 1:
        raise ValueError(f"attention grid must be at least 1x1, got {att.shape[1]}x{att.shape[2]}")
    if not np.all(np.isfinite(att)):
        raise ValueError("attention contains NaN or infinite values")
    if np.any(att < 0):
        raise ValueError("attention weights must be non-negative (softmax outputs)")
    if not all(isinstance(w, str) for w in words):
        raise ValueError("words must be strings")
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    if cell < MIN_CELL:
        raise ValueError(f"cell must be >= {MIN_CELL} pixels, got {cell}")
    return att


def _heat_tile(base: np.ndarray, amap: np.ndarray) -> Image.Image:
    """Blend one attention map (normalised to its own peak) over the dimmed tile `base`."""
    peak = amap.max()
    norm = (amap / peak if peak > 0 else np.zeros_like(amap)).astype(np.float32)
    h, w = base.shape[:2]
    # Bicubic on a float image: smooth, and the grid stays aligned (cell centres map to cell centres).
    up = np.asarray(Image.fromarray(norm).resize((w, h), Image.BICUBIC))
    up = np.clip(up, 0.0, 1.0)[..., None]  # bicubic overshoots slightly around a peak
    alpha = ALPHA_MIN + (ALPHA_MAX - ALPHA_MIN) * up
    out = base * DIM * (1.0 - alpha) + colormap(up[..., 0]) * alpha
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))


def _fit_label(
    draw: ImageDraw.ImageDraw, text: str, width: int, size: int
) -> tuple[str, ImageFont.ImageFont]:
    """Largest font (down to 8 px) that fits `width`; truncate with '...' if even that is too wide."""
    font = ImageFont.load_default(size=size)
    while size > 8 and draw.textlength(text, font=font) > width:
        size -= 1
        font = ImageFont.load_default(size=size)
    if draw.textlength(text, font=font) > width:
        while text and draw.textlength(text + "...", font=font) > width:
            text = text[:-1]
        text += "..."
    return text, font


def render_attention(
    image: Image.Image, words: list[str], attention: np.ndarray, columns: int = 4, cell: int = 224
) -> Image.Image:
    """Figure of the image plus one heatmap tile per word; attention is [T, h, w], T == len(words).

    Tiles keep the image's aspect ratio with the longer side `cell` pixels; the grid has
    min(columns, T + 1) columns (see canvas_size / tile_boxes for the exact geometry).
    """
    att = _validate(words, attention, columns, cell)
    image = to_rgb(image)
    count = len(words) + 1
    boxes = tile_boxes(image.size, count, columns, cell)
    canvas = Image.new("RGB", canvas_size(image.size, count, columns, cell), BACKGROUND)
    draw = ImageDraw.Draw(canvas)

    tw, th = tile_size(image.size, cell)
    photo = image.resize((tw, th), Image.LANCZOS)
    base = np.asarray(photo, dtype=np.float32)
    canvas.paste(photo, boxes[0][:2])
    label_h = _label_height(cell)
    for word, amap, box in zip(words, att, boxes[1:], strict=True):
        canvas.paste(_heat_tile(base, amap), box[:2])
        text, font = _fit_label(draw, word, tw, _font_size(cell))
        centre = ((box[0] + box[2]) / 2, box[3] + label_h / 2)
        draw.text(centre, text, fill=TEXT_COLOUR, font=font, anchor="mm")
    return canvas


def save_attention(
    path: str | os.PathLike,
    image: Image.Image,
    words: list[str],
    attention: np.ndarray,
    columns: int = 4,
    cell: int = 224,
) -> Path:
    """render_attention() written to `path` (format from its suffix, e.g. .png); returns the path."""
    figure = render_attention(image, words, attention, columns=columns, cell=cell)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.save(path)
    return path
