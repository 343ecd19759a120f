"""inspect_image on real photos and on crafted bad files (bombs, truncations, foreign formats)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from captions.ingest import ALLOWED_FORMATS, ImageInfo, RejectedInput, inspect_image

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
FLICKR_IMAGES = DATA / "flickr8k" / "images"
COCO_IMAGES = DATA / "coco-mini" / "val2017"
LIMITS = dict(max_bytes=20 * 2**20, max_pixels=40_000_000)


def real_photo(folder: Path) -> bytes:
    if not folder.is_dir():
        pytest.skip(f"real photos not found at {folder}")
    return sorted(folder.glob("*.jpg"))[0].read_bytes()


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def gradient(size: tuple[int, int] = (64, 48), mode: str = "RGB") -> Image.Image:
    image = Image.linear_gradient("L").resize(size).convert(mode)
    return image


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height but whose pixel data is a few bytes (never decodable)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 100))
        + chunk(b"IEND", b"")
    )


def rejected(data: bytes, **kwargs) -> RejectedInput:
    with pytest.raises(RejectedInput) as info:
        inspect_image(data, **{**LIMITS, **kwargs})
    return info.value


# --- accepted ---------------------------------------------------------------------------------


def test_real_flickr_jpeg():
    data = real_photo(FLICKR_IMAGES)
    info = inspect_image(data, **LIMITS, name="a.jpg")
    assert info == ImageInfo(
        width=224,
        height=224,
        format="JPEG",
        mime="image/jpeg",
        size=len(data),
        extension="jpg",
        perceptual_hashes=info.perceptual_hashes,
    )
    # 64 bits upright, then its three quarter turns (near-duplicates, captions/duplicates.py).
    assert len(info.perceptual_hashes) == 4 and all(
        len(h) == 64 and set(h) <= {"0", "1"} for h in info.perceptual_hashes
    )


def test_real_full_size_coco_jpeg_keeps_its_proportions():
    data = real_photo(COCO_IMAGES)
    with Image.open(io.BytesIO(data)) as image:
        expected = image.size
    info = inspect_image(data, **LIMITS)
    assert (info.width, info.height) == expected
    assert info.width != info.height


def test_png_with_alpha():
    data = encode(gradient(mode="RGBA"), "PNG")
    info = inspect_image(data, **LIMITS)
    assert (info.format, info.mime, info.extension, info.width, info.height) == (
        "PNG",
        "image/png",
        "png",
        64,
        48,
    )


def test_webp():
    info = inspect_image(encode(gradient(), "WEBP", quality=80), **LIMITS)
    assert (info.format, info.mime, info.extension) == ("WEBP", "image/webp", "webp")


def test_animated_gif_is_accepted_and_flagged():
    frames = [gradient().rotate(angle).convert("P") for angle in (0, 90, 180)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    info = inspect_image(data, **LIMITS)
    assert (info.format, info.animated, info.width, info.height) == ("GIF", True, 64, 48)
    still = inspect_image(encode(gradient().convert("P"), "GIF"), **LIMITS)
    assert still.animated is False


def test_tall_exif_rotated_jpeg_reports_displayed_size():
    # Stored 300 wide x 100 high; orientation 6 ("rotate 90 CW") displays it 100 x 300, as a phone does.
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(gradient((300, 100)), "JPEG", exif=exif.tobytes())
    info = inspect_image(data, **LIMITS)
    assert (info.width, info.height) == (100, 300)


@pytest.mark.parametrize(("fmt", "extension"), [("BMP", "bmp"), ("TIFF", "tif")])
def test_bmp_and_tiff(fmt, extension):
    info = inspect_image(encode(gradient(), fmt), **LIMITS)
    assert (info.format, info.extension) == (fmt, extension)


def test_multi_picture_jpeg_counts_as_jpeg():
    data = encode(gradient(), "MPO", save_all=True, append_images=[gradient().rotate(180)])
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "MPO"  # what Pillow calls many camera JPEGs
    assert inspect_image(data, **LIMITS).format == "JPEG"


def test_allowed_formats_are_the_documented_six():
    assert list(ALLOWED_FORMATS) == ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"]


# --- refused ----------------------------------------------------------------------------------


def test_empty_file():
    error = rejected(b"", name="nothing.jpg")
    assert (error.code, error.status) == ("empty_file", 400)
    assert "nothing.jpg" in error.message


def test_over_max_bytes():
    data = real_photo(FLICKR_IMAGES)
    error = rejected(data, max_bytes=len(data) - 1, name="big.jpg")
    assert (error.code, error.status) == ("file_too_large", 413)
    assert "big.jpg" in error.message and "limit" in error.message
    assert inspect_image(data, max_bytes=len(data), max_pixels=LIMITS["max_pixels"]).size == len(data)


def test_over_max_bytes_by_less_than_the_rounding_shows_exact_bytes():
    data = real_photo(FLICKR_IMAGES)
    data += bytes(2**20 + 10 - len(data))
    error = rejected(data, max_bytes=2**20, name="big.jpg")
    assert (
        error.message == "big.jpg: 1,048,586 bytes is over the limit of 1,048,576 bytes (1.0 MiB) per image"
    )
    far_over = rejected(data, max_bytes=2**19, name="big.jpg").message
    assert far_over == "big.jpg: 1.0 MiB is over the limit of 512.0 KiB per image"


def test_not_an_image():
    error = rejected(b"just some text, not a picture\n" * 20, name="notes.txt")
    assert (error.code, error.status) == ("not_an_image", 415)
    assert "JPEG" in error.message


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n", "PDF"),
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "SVG"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"><rect width="5" height="5"/></svg>', "SVG"),
        (b"8BPS\x00\x01" + b"\x00" * 100, "PSD"),
        (b"\x00\x00\x00\x1cftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64, "HEIC"),
    ],
)
def test_foreign_formats_are_named(data, named):
    error = rejected(data, name="upload.bin")
    assert (error.code, error.status) == ("unsupported_format", 415)
    assert named in error.message
    assert "JPEG, PNG, WEBP, GIF, BMP, TIFF" in error.message


@pytest.mark.parametrize(("fmt", "named"), [("ICO", "ICO"), ("PCX", "PCX"), ("TGA", "TGA")])
def test_real_files_in_formats_pillow_reads_but_we_do_not(fmt, named):
    error = rejected(encode(gradient((32, 32)), fmt))
    assert (error.code, error.status) == ("unsupported_format", 415)
    assert named in error.message


def test_bomb_over_our_limit_is_refused_from_the_header_before_decoding():
    # 7000 x 7000 = 49 M pixels > 40 M, but under Pillow's own limit. The pixel data is a stub:
    # decoding would fail as "corrupt", so "too_many_pixels" proves the header check came first.
    data = png_declaring(7000, 7000)
    assert len(data) < 200
    error = rejected(data, name="bomb.png")
    assert (error.code, error.status) == ("too_many_pixels", 413)
    assert "7000x7000" in error.message and "40,000,000" in error.message
    assert rejected(png_declaring(100, 100)).code == "image_corrupt"  # the same stub, small: corrupt


@pytest.mark.parametrize("side", [10_000, 30_000])  # Pillow warns above 89 M pixels, raises above 179 M
def test_pillow_decompression_bomb_checks_become_rejections(side):
    error = rejected(png_declaring(side, side), max_pixels=10**12)
    assert (error.code, error.status) == ("too_many_pixels", 413)


def test_a_real_compressible_bomb_made_with_pillow():
    # A genuine, fully decodable 1-bit PNG of 8000 x 6000 = 48 M pixels compresses to a few KB.
    data = encode(Image.new("1", (8000, 6000)), "PNG")
    assert len(data) < 100_000
    assert rejected(data).code == "too_many_pixels"
    assert inspect_image(data, max_bytes=LIMITS["max_bytes"], max_pixels=48_000_000).width == 8000


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_files_are_refused(fmt):
    whole = real_photo(FLICKR_IMAGES) if fmt == "JPEG" else encode(Image.effect_noise((200, 200), 60), "PNG")
    inspect_image(whole, **LIMITS)
    error = rejected(whole[: len(whole) * 2 // 3], name=f"cut.{fmt.lower()}")
    assert (error.code, error.status) == ("image_corrupt", 422)
    assert "truncated or corrupt" in error.message


def test_corrupt_pixel_data_is_refused():
    whole = encode(Image.effect_noise((200, 200), 60), "PNG")
    damaged = bytearray(whole)
    middle = len(damaged) // 2
    damaged[middle : middle + 64] = bytes(64)  # zeroes in the middle of the compressed IDAT stream
    assert rejected(bytes(damaged)).code == "image_corrupt"


def test_rejection_is_a_client_error():
    error = rejected(b"")
    assert 400 <= error.status < 500
    assert str(error) == error.message
    with pytest.raises(ValueError):
        RejectedInput("x", "server faults are not rejections", status=500)
