"""Attention figures: geometry, where the heat lands, input checks."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ml.attention_plot import (
    canvas_size,
    colormap,
    render_attention,
    save_attention,
    tile_boxes,
    tile_size,
)


def _grey(size=(224, 224)) -> Image.Image:
    return Image.new("RGB", size, (128, 128, 128))


def _heat(pixel) -> float:
    # The ramp runs dark -> bright, so brightness ranks heat on a flat grey photo.
    return float(np.sum(pixel))


@pytest.mark.parametrize(
    ("n_words", "columns", "grid"), [(7, 4, (4, 2)), (3, 4, (4, 1)), (5, 2, (2, 3)), (0, 4, (1, 1))]
)
def test_output_size_follows_columns_and_rows(n_words, columns, grid):
    cell = 64
    image = _grey((120, 80))  # landscape: tiles are 64 x 43
    out = render_attention(image, ["w"] * n_words, np.ones((n_words, 3, 3)) / 9, columns=columns, cell=cell)
    assert out.size == canvas_size(image.size, n_words + 1, columns, cell)
    boxes = tile_boxes(image.size, n_words + 1, columns, cell)
    cols, rows = grid
    assert len({b[0] for b in boxes}) == cols and len({b[1] for b in boxes}) == rows
    tw, th = tile_size(image.size, cell)
    assert (tw, th) == (64, 43)  # longer side = cell, aspect ratio kept
    assert all((b[2] - b[0], b[3] - b[1]) == (tw, th) for b in boxes)
    assert out.width >= cols * tw and out.height >= rows * th
    assert all(b[2] <= out.width and b[3] <= out.height for b in boxes)


def test_portrait_tiles_keep_aspect_ratio():
    assert tile_size((100, 200), 224) == (112, 224)


def test_first_tile_is_the_untouched_image():
    image = Image.new("RGB", (224, 224), (10, 200, 30))
    out = render_attention(image, ["a"], np.ones((1, 7, 7)), cell=224)
    left, top, right, bottom = tile_boxes(image.size, 2, 4, 224)[0]
    assert out.getpixel(((left + right) // 2, (top + bottom) // 2)) == (10, 200, 30)


@pytest.mark.parametrize(("row", "col"), [(2, 5), (0, 0), (6, 3)])
def test_one_hot_attention_makes_its_cell_the_hottest(row, col):
    grid, cell = 7, 224
    attention = np.zeros((2, grid, grid))
    attention[0, row, col] = 1.0
    attention[1, grid - 1 - row, grid - 1 - col] = 0.3  # a different word looks elsewhere
    out = np.asarray(render_attention(_grey(), ["dog", "grass"], attention, cell=cell)).astype(int)
    left, top, right, bottom = tile_boxes((224, 224), 3, 4, cell)[1]
    tile = out[top:bottom, left:right]
    heat = tile.sum(axis=-1)
    y, x = np.unravel_index(np.argmax(heat), heat.shape)
    step = cell / grid
    assert int(y // step) == row and int(x // step) == col
    centre = tile[int((row + 0.5) * step), int((col + 0.5) * step)]
    # Peak colour: the pale-yellow end of the ramp (blended over the dimmed grey).
    r, g, b = centre
    assert r > 180 and g > 180 and b < 0.8 * min(r, g)
    far = tile[int((grid - 1 - row + 0.5) * step), int((grid - 1 - col + 0.5) * step)]
    assert _heat(far) < _heat(centre) / 3


def test_each_map_is_normalised_to_its_own_peak():
    # A weak map (peak 0.3) must look as hot at its peak as a strong one.
    attention = np.zeros((2, 7, 7))
    attention[0, 3, 3] = 1.0
    attention[1, 3, 3] = 0.3
    attention[1] += 0.7 / 49
    out = np.asarray(render_attention(_grey(), ["a", "b"], attention, cell=224)).astype(int)
    boxes = tile_boxes((224, 224), 3, 4, 224)
    peaks = [out[b[1] + 112, b[0] + 112] for b in boxes[1:]]
    assert abs(_heat(peaks[0]) - _heat(peaks[1])) < 15


def test_colormap_is_ordered_dark_to_bright():
    values = colormap(np.linspace(0, 1, 50))
    brightness = values @ np.array([0.299, 0.587, 0.114])
    assert values.shape == (50, 3)
    assert np.all(np.diff(brightness) > 0)
    assert np.allclose(colormap(np.array([-1.0, 2.0])), colormap(np.array([0.0, 1.0])))


@pytest.mark.parametrize(
    ("words", "attention", "kwargs", "message"),
    [
        (["a", "b"], np.ones((3, 7, 7)), {}, "3 maps but there are 2 words"),
        (["a"], np.ones((1, 49)), {}, r"shape \[T, h, w\]"),
        (["a"], np.ones((1, 7, 7, 1)), {}, r"shape \[T, h, w\]"),
        (["a"], np.ones((1, 0, 7)), {}, "at least 1x1"),
        (["a"], np.full((1, 7, 7), np.nan), {}, "NaN"),
        (["a"], -np.ones((1, 7, 7)), {}, "non-negative"),
        (["a"], np.ones((1, 7, 7)), {"columns": 0}, "columns"),
        (["a"], np.ones((1, 7, 7)), {"cell": 4}, "cell"),
    ],
)
def test_bad_inputs_raise_value_error(words, attention, kwargs, message):
    with pytest.raises(ValueError, match=message):
        render_attention(_grey(), words, attention, **kwargs)


def test_save_attention_writes_a_png(tmp_path):
    attention = np.random.default_rng(0).dirichlet(np.ones(49), size=3).reshape(3, 7, 7)
    path = save_attention(
        tmp_path / "sub" / "att.png", _grey(), ["a", "very-long-word-indeed", "<end>"], attention
    )
    with Image.open(path) as saved:
        assert saved.format == "PNG"
        assert saved.size == canvas_size((224, 224), 4, 4, 224)
