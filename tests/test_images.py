"""Any size, mode and EXIF orientation comes out as upright RGB; broken files give ImageError."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ml.images import ImageError, expand_paths, load_image


def _encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("RGBA", "PNG"),
        ("LA", "PNG"),
        ("P", "PNG"),
        ("L", "JPEG"),
        ("1", "PNG"),
        ("CMYK", "JPEG"),
        ("I;16", "PNG"),
        ("I", "TIFF"),
        ("F", "TIFF"),
        ("RGB", "WEBP"),
        ("RGB", "GIF"),
    ],
)
def test_every_mode_becomes_rgb(mode, fmt):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8))
    source = rgb.convert(mode) if mode not in ("I;16", "I", "F") else Image.new(mode, (30, 20))
    if mode == "I;16":
        source = Image.fromarray((np.arange(600).reshape(20, 30) * 100).astype(np.uint16))
    out = load_image(_encode(source, fmt))
    assert out.mode == "RGB" and out.size == (30, 20)


def test_sixteen_bit_range_is_scaled_not_clipped():
    arr = np.linspace(0, 65535, 600).reshape(20, 30).astype(np.uint16)
    out = np.asarray(load_image(_encode(Image.fromarray(arr), "PNG")))
    assert out.min() == 0 and out.max() == 255


def test_transparent_pixels_are_composited_on_white():
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert np.asarray(load_image(_encode(image, "PNG")))[0, 0].tolist() == [255, 255, 255]


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    out = load_image(_encode(image, "JPEG", exif=exif.tobytes()))
    assert out.size == (20, 40)


def test_broken_inputs_raise_image_error(tmp_path):
    jpeg = _encode(Image.new("RGB", (64, 64), "blue"), "JPEG")
    cases = {
        "not an image": b"hello, this is text",
        "empty": b"",
        "truncated": jpeg[: len(jpeg) // 3],
    }
    for label, data in cases.items():
        with pytest.raises(ImageError):
            load_image(data)
        path = tmp_path / f"{label}.jpg"
        path.write_bytes(data)
        with pytest.raises(ImageError, match=str(path)):
            load_image(path)
    with pytest.raises(ImageError, match="cannot open"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="pixel limit"):
        load_image(_encode(Image.new("L", (2000, 2000)), "PNG"), max_pixels=1_000_000)


def test_expand_paths_walks_folders(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("a/x.jpg", "a/y.PNG", "a/notes.txt", "z.jpg"):
        (tmp_path / name).write_bytes(b"")
    found = expand_paths([tmp_path / "a", tmp_path / "z.jpg"])
    assert [p.name for p in found] == ["x.jpg", "y.PNG", "z.jpg"]
