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


def test_allowed_formats_are_the_documented_seven():
    assert list(ALLOWED_FORMATS) == ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF"]


# --- HEIC/HEIF ----------------------------------------------------------------------------------------


def test_a_heic_made_from_a_real_flickr_photo(make_heic):
    source = sorted(FLICKR_IMAGES.glob("*.jpg"))[:1] or pytest.skip("no Flickr8k photos")
    data = make_heic(source[0])
    assert data[4:12] == b"ftypheic"  # what iPhones write
    info = inspect_image(data, **LIMITS, name="IMG_0001.HEIC")
    assert (info.format, info.mime, info.extension, info.width, info.height, info.animated) == (
        "HEIF",
        "image/heic",
        "heic",
        224,
        224,
        False,
    )
    # Near-duplicates: the HEIC of a photo hashes like the photo's JPEG.
    jpeg = inspect_image(source[0].read_bytes(), **LIMITS).perceptual_hashes[0]
    assert sum(a != b for a, b in zip(info.perceptual_hashes[0], jpeg, strict=True)) <= 4


def test_a_turned_heic_reports_its_displayed_size(make_heic):
    # pillow-heif turns the picture while decoding and resets the EXIF tag to 1: swapped once, not twice.
    exif = Image.Exif()
    exif[0x0112] = 6
    upright = make_heic()
    turned = make_heic(exif=exif.tobytes())
    assert (inspect_image(upright, **LIMITS).width, inspect_image(upright, **LIMITS).height) == (640, 426)
    info = inspect_image(turned, **LIMITS)
    assert (info.width, info.height) == (426, 640)


def test_a_heif_without_hevc_brands_is_stored_as_heif(make_heic):
    # The generic brand (mif1) with HEVC inside but no HEVC brand named: image/heif, .heif.
    data = bytearray(make_heic())
    size = int.from_bytes(data[:4], "big")
    data[8:12] = b"mif1"
    data[16:size] = b"mif1" * ((size - 16) // 4)
    info = inspect_image(bytes(data), **LIMITS)
    assert (info.format, info.mime, info.extension) == ("HEIF", "image/heif", "heif")


def test_a_truncated_heic_is_corrupt(make_heic):
    data = make_heic()
    for cut in (data[: len(data) // 2], data[:200]):
        error = rejected(cut, name="cut.heic")
        assert (error.code, error.status) == ("image_corrupt", 422), error.message
        assert "cut.heic" in error.message


def test_avif_is_still_refused_by_name():
    # Pillow reads AVIF itself, but pillow-heif does not and we do not take it: named in the message.
    data = encode(gradient(), "AVIF", quality=60)
    assert data[4:12] == b"ftypavif"
    error = rejected(data, name="a.avif")
    assert (error.code, error.status) == ("unsupported_format", 415)
    assert "AVIF" in error.message
    # The generic brand with AV1's brands among its compatible ones is AVIF too.
    generic = bytearray(data)
    generic[8:12] = b"mif1"
    assert "AVIF" in rejected(bytes(generic)).message


# --- big photos: the platform's own limits ------------------------------------------------------------


def platform_limits() -> dict[str, int]:
    from django.conf import settings

    return dict(max_bytes=settings.IMGCAP_MAX_UPLOAD_BYTES, max_pixels=settings.IMGCAP_MAX_PIXELS)


def test_a_48_megapixel_phone_photo_is_accepted_with_the_default_limits(jpeg_48mp):
    info = inspect_image(jpeg_48mp.read_bytes(), **platform_limits(), name="PXL_0001.jpg")
    assert (info.format, info.width, info.height) == ("JPEG", 8000, 6000)


def test_a_150_megapixel_header_is_refused_before_decoding_with_the_default_limits():
    # 15000 x 10000 = 150 M pixels in the header, over the 100 M default; the pixel data is a stub, so
    # decoding would say "corrupt": too_many_pixels proves nothing was decoded.
    error = rejected(png_declaring(15_000, 10_000), **platform_limits(), name="pano.png")
    assert (error.code, error.status) == ("too_many_pixels", 413)
    assert "15000x10000" in error.message and "100,000,000" in error.message


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
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + b"\x00" * 64, "AVIF"),
        (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00isommp42" + b"\x00" * 64, "video"),
    ],
)
def test_foreign_formats_are_named(data, named):
    error = rejected(data, name="upload.bin")
    assert (error.code, error.status) == ("unsupported_format", 415)
    assert named in error.message
    assert "JPEG, PNG, WEBP, GIF, BMP, TIFF, HEIF" in error.message


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


def test_between_pillows_warning_and_its_refusal_our_limit_decides():
    # Pillow warns above 89 M pixels: 10000 x 10000 = 100 M is ours to take or refuse (the 100 M default
    # takes it; the stub then fails to decode), and refused one pixel lower.
    stub = png_declaring(10_000, 10_000)
    assert rejected(stub, max_pixels=100_000_000).code == "image_corrupt"
    assert rejected(stub, max_pixels=99_999_999).code == "too_many_pixels"


def test_pillows_own_refusal_is_a_rejection_whatever_our_limit():
    # Above 179 M pixels Pillow refuses to open at all (ml.images.MAX_PIXELS).
    error = rejected(png_declaring(30_000, 30_000), max_pixels=10**12)
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


def test_a_pixel_cap_above_what_pillow_opens_is_a_check_warning(settings):
    from captions.checks import pixel_cap_within_pillows

    assert pixel_cap_within_pillows() == []  # the 100 M default
    settings.IMGCAP_MAX_PIXELS = 200_000_000
    (warning,) = pixel_cap_within_pillows()
    assert warning.id == "imgcap.W002" and "178,956,970" in warning.msg
