"""Any size, mode and EXIF orientation comes out as upright RGB; broken files give ImageError."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

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


# --- HEIC and big photos: what the worker reads -------------------------------------------------------

COCO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco-mini" / "val2017"


def _first_coco() -> Path:
    found = sorted(COCO.glob("*.jpg"))
    if not found:
        pytest.skip(f"real photos not found in {COCO}")
    return found[0]


def _mean_difference(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean())


def test_a_heic_from_a_real_photo_is_read_upright(make_heic):
    source = Image.open(_first_coco()).convert("RGB")
    out = load_image(make_heic())
    assert out.mode == "RGB" and out.size == source.size == (640, 426)
    assert _mean_difference(out, source) < 6  # the same photo, through HEVC at quality 70

    # Orientation 6: pillow-heif turns the picture as it decodes and the EXIF tag reads 1 after it, so
    # it is turned once, not twice.
    exif = Image.Exif()
    exif[0x0112] = 6
    turned = load_image(make_heic(exif=exif.tobytes()))
    assert turned.size == (426, 640)
    assert _mean_difference(turned, source.transpose(Image.Transpose.ROTATE_270)) < 6


def test_a_48_megapixel_jpeg_is_decoded_at_a_reduced_scale(jpeg_48mp):
    # 1/8 scale, the largest that leaves both sides at least 448 (twice the encoder's input): 1000x750.
    out = load_image(jpeg_48mp, min_size=448)
    assert out.mode == "RGB" and out.size == (1000, 750)
    source = Image.open(_first_coco()).convert("RGB").resize((1000, 750), Image.Resampling.BILINEAR)
    assert _mean_difference(out, source) < 8


def test_min_size_leaves_pictures_under_twice_its_size_exactly_as_they_were(make_heic):
    for data in (_first_coco().read_bytes(), make_heic(), _encode(Image.new("P", (890, 890)), "PNG")):
        plain, reduced = load_image(data), load_image(data, min_size=448)
        assert plain.size == reduced.size and plain.tobytes() == reduced.tobytes()
    # A big palette PNG (no reduced decoding): shrunk by a box filter after it is made RGB, still >= 448.
    big = load_image(_encode(Image.new("P", (2000, 1000), 3), "PNG"), min_size=448)
    assert big.size == (1000, 500) and big.mode == "RGB"


def test_the_encoder_reads_a_heic_and_a_48_megapixel_jpeg_into_its_input(make_heic, jpeg_48mp):
    from ml.encoders import get_encoder

    encoder = get_encoder("efficientnet_lite0")  # no TensorFlow: reading happens before the model
    pixels, readable, errors = encoder.read_readable([make_heic(), str(jpeg_48mp)], names=["a.heic", "b.jpg"])
    assert errors == {} and readable == [0, 1]
    assert pixels.shape == (2, 224, 224, 3) and pixels.dtype == np.uint8
    # Both are the same COCO photo: read from HEVC, or from 48 M pixels at 1/8 scale, the input agrees
    # with the photo itself read at its own size.
    (direct,) = encoder.read_readable([_first_coco()])[0]
    for got in pixels:
        assert np.abs(got.astype(np.float32) - direct).mean() < 8


def test_reading_a_48_megapixel_jpeg_costs_the_worker_little_memory(jpeg_48mp):
    # A fresh interpreter, warmed up on the small photo (imports, allocator arenas): its peak resident
    # memory then grows by what reading the big one took. Decoded whole, that photo alone is 144 MB of
    # RGB (the peak grows by ~360 MB with the full-size resize); read as the encoder reads, a few MB.
    probe = (
        "import resource, sys\n"
        "from ml.encoders import get_encoder\n"
        "encoder = get_encoder('efficientnet_lite0')\n"
        "encoder.read_readable([sys.argv[2]])\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "pixels = encoder.read_readable([sys.argv[1]] * 3)[0]\n"
        "print(pixels.shape, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n"
    )
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", probe, str(jpeg_48mp), str(_first_coco())],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    shape, grown_mb = done.stdout.rsplit(" ", 1)
    assert shape == "(3, 224, 224, 3)"
    assert int(grown_mb) < 30, f"reading three 48-megapixel photos grew the peak by {grown_mb} MB"
