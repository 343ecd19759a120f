"""Check that uploaded bytes are one image we accept, without trusting the file's name or headers.

Animated images (GIF, WEBP, APNG, HEIF sequences) are accepted: the first frame is what gets captioned.
HEIC/HEIF (iPhones' default) is read by pillow-heif, registered with Pillow by ml.images.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageFile, UnidentifiedImageError
from PIL.Image import Image as PILImage

from captions.duplicates import perceptual_hashes
from ml.images import register_heif

from .errors import RejectedInput, human_sizes, label

# Pillow format name -> (MIME type, file extension without the dot).
ALLOWED_FORMATS: dict[str, tuple[str, str]] = {
    "JPEG": ("image/jpeg", "jpg"),
    "PNG": ("image/png", "png"),
    "WEBP": ("image/webp", "webp"),
    "GIF": ("image/gif", "gif"),
    "BMP": ("image/bmp", "bmp"),
    "TIFF": ("image/tiff", "tif"),
    # HEVC-coded HEIF is "HEIC" (brands heic, heix, ...): what iPhones write. Other brands (mif1) are
    # stored as .heif with image/heif (see _heif_type).
    "HEIF": ("image/heic", "heic"),
}
# ISOBMFF brands (the `ftyp` box): HEVC-coded HEIF, which pillow-heif reads, the generic ones (HEVC or
# AV1 inside) and AVIF's, which it does not read (its AVIF support went to Pillow's own plugin).
_HEVC_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs")
_HEIF_BRANDS = (*_HEVC_BRANDS, b"mif1", b"msf1")
_AVIF_BRANDS = (b"avif", b"avis")
# Multi-picture JPEGs (many phone and camera photos) open as "MPO" through Pillow's JPEG decoder.
_ALIASES = {"MPO": "JPEG"}
# EXIF orientations that turn the picture by 90 degrees, so width and height swap on display.
_TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}
# What turns a picture of each EXIF orientation upright (as ImageOps.exif_transpose does).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_ORIENTATION = 0x0112

register_heif()


@dataclass(frozen=True)
class ImageInfo:
    """What `inspect_image` learnt about an accepted image.

    `width`/`height` are as displayed (after the EXIF orientation), `format` one of ALLOWED_FORMATS,
    `size` the byte count, `extension` lower case without the dot ("jpg"), `animated` whether the file
    holds more than one frame (only the first is captioned).
    """

    width: int
    height: int
    format: str
    mime: str
    size: int
    extension: str
    animated: bool = False
    # The upright picture's perceptual hash and its quarter turns' (captions/duplicates.py).
    perceptual_hashes: tuple[str, ...] = ()


def allowed_formats_text() -> str:
    return ", ".join(ALLOWED_FORMATS)


def inspect_image(data: bytes, *, max_bytes: int, max_pixels: int, name: str = "") -> ImageInfo:
    """Validate `data` as one image and describe it; raise RejectedInput otherwise.

    Checks, in order: not empty; at most `max_bytes`; recognised as an image; one of ALLOWED_FORMATS;
    at most `max_pixels` pixels as declared by the header (checked before any pixel is decoded, so a
    decompression bomb costs nothing); then the first frame is fully decoded, so truncated or corrupt
    files are refused here rather than in the worker. This relies on Pillow's default
    `ImageFile.LOAD_TRUNCATED_IMAGES = False`, which nothing in the project changes.

    Animated images are accepted; the first frame is what gets captioned.
    """
    who = label(name)
    size = len(data)
    if size == 0:
        raise RejectedInput("empty_file", f"{who}: the file is empty", status=400)
    if size > max_bytes:
        shown, allowed = human_sizes(size, max_bytes)
        raise RejectedInput(
            "file_too_large", f"{who}: {shown} is over the limit of {allowed} per image", status=413
        )

    unsupported = _sniff_unsupported(data)
    if unsupported:
        raise _unsupported(who, unsupported)

    # Pillow warns above MAX_IMAGE_PIXELS (~89 M) and raises above twice that (a refusal here too);
    # between the two our own max_pixels check below decides, so the setting may be 100 M. (The
    # warning filter is process-wide; a concurrent call could at worst log the warning.)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = _open(data, who, max_pixels)
        try:
            fmt = _ALIASES.get(image.format or "", image.format or "")
            if fmt not in ALLOWED_FORMATS:
                raise _unsupported(who, fmt or "this format")
            width, height = image.size
            _check_pixels(who, width, height, max_pixels)
            _decode_first_frame(image, who, max_pixels)
            orientation = _orientation(image)
            animated = bool(getattr(image, "is_animated", False))
            hashes = perceptual_hashes(_small_upright(image, orientation))
        finally:
            image.close()

    if orientation in _TRANSPOSED_ORIENTATIONS:
        width, height = height, width
    mime, extension = _heif_type(data) if fmt == "HEIF" else ALLOWED_FORMATS[fmt]
    return ImageInfo(
        width=width,
        height=height,
        format=fmt,
        mime=mime,
        size=size,
        extension=extension,
        animated=animated,
        perceptual_hashes=hashes,
    )


def _open(data: bytes, who: str, max_pixels: int) -> ImageFile.ImageFile:
    """Parse the header only (Pillow opens lazily), trying just the decoders we accept."""
    try:
        return Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS))
    except Image.DecompressionBombError:
        raise _bomb(who, max_pixels, detail="a likely decompression bomb") from None
    except UnidentifiedImageError:
        if data[8:12] in _HEIF_BRANDS:  # a HEIF brand whose boxes pillow-heif could not parse
            raise RejectedInput(
                "image_corrupt",
                f"{who}: the HEIF file is truncated or corrupt and cannot be read",
                status=422,
            ) from None
        other = _name_other_format(data)
        if other:
            raise _unsupported(who, other) from None
        raise RejectedInput(
            "not_an_image",
            f"{who}: this is not an image we can read; allowed formats: {allowed_formats_text()}",
            status=415,
        ) from None
    except Exception as exc:  # a recognised format whose header is broken
        raise _corrupt(who, exc) from None


def _decode_first_frame(image: ImageFile.ImageFile, who: str, max_pixels: int) -> None:
    if image.format == "JPEG":
        # Decoding at 1/8 scale still reads the whole stream (truncation and corruption are caught) for
        # a quarter of the cost: 11 ms instead of 46 for a 12-megapixel photo on one core here.
        image.draft(image.mode, (max(1, image.size[0] // 8), max(1, image.size[1] // 8)))
    try:
        image.load()
    except Image.DecompressionBombError:
        raise _bomb(who, max_pixels, detail="a likely decompression bomb") from None
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, EOFError...) on bad data
        raise _corrupt(who, exc) from None
    # Some formats only learn their true size while decoding; check again.
    _check_pixels(who, image.size[0], image.size[1], max_pixels)


def _small_upright(image: ImageFile.ImageFile, orientation: int) -> PILImage:
    """The decoded picture, upright, reduced (a box filter) to 256-511 px for its perceptual hash (made
    at 128 px): a big HEIF, PNG or TIFF is not copied whole by the turn and the greyscale conversion."""
    factor = min(image.size) // 256
    small: PILImage = image
    if factor >= 2 and image.mode not in ("P", "1", "I;16", "I;16B", "I;16L"):  # modes reduce() refuses
        small = image.reduce(factor)
    turn = _UPRIGHT.get(orientation)
    return small.transpose(turn) if turn is not None else small


def _check_pixels(who: str, width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise RejectedInput(
            "image_corrupt", f"{who}: the image declares no pixels ({width}x{height})", status=422
        )
    if width * height > max_pixels:
        raise _bomb(who, max_pixels, detail=f"{width}x{height} = {width * height:,} pixels")


def _orientation(image: ImageFile.ImageFile) -> int:
    try:
        return int(image.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # a broken EXIF block does not make the picture unusable
        return 1


def _bomb(who: str, max_pixels: int, *, detail: str) -> RejectedInput:
    return RejectedInput(
        "too_many_pixels",
        f"{who}: the image is too large ({detail}); the limit is {max_pixels:,} pixels",
        status=413,
    )


def _corrupt(who: str, exc: Exception) -> RejectedInput:
    reason = str(exc) or type(exc).__name__
    return RejectedInput(
        "image_corrupt",
        f"{who}: the image is truncated or corrupt and cannot be decoded ({reason})",
        status=422,
    )


def _unsupported(who: str, fmt: str) -> RejectedInput:
    return RejectedInput(
        "unsupported_format",
        f"{who}: {fmt} is not a supported image format; allowed formats: {allowed_formats_text()}",
        status=415,
    )


def _sniff_unsupported(data: bytes) -> str | None:
    """Name common formats Pillow cannot or must not open, so the message can say what was sent."""
    head = data[:64]
    if head.startswith(b"%PDF-"):
        return "PDF"
    if head.startswith(b"8BPS"):
        return "PSD (Photoshop)"
    if head.startswith(b"\x00\x00\x01\x00"):
        return "ICO"
    if head.startswith(b"%!PS"):
        return "PostScript"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "a ZIP archive"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _AVIF_BRANDS or (brand in (b"mif1", b"msf1") and _is_avif(data)):
            return "AVIF"
        if brand in _HEIF_BRANDS:
            return None  # pillow-heif reads it
        return "a video or ISO media file"
    if head.startswith((b"\x00\x00\x00\x0cjP  ", b"\xff\x4f\xff\x51")):
        return "JPEG 2000"
    if head.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL ")):
        return "JPEG XL"
    text = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<?xml", b"<svg", b"<!doctype svg")) and b"<svg" in data[:4096].lower():
        return "SVG"
    return None


def _ftyp_brands(data: bytes) -> list[bytes]:
    """The major and compatible brands of an ISOBMFF file's leading `ftyp` box."""
    size = int.from_bytes(data[:4], "big")
    if data[4:8] != b"ftyp" or not 16 <= size <= min(len(data), 4096):
        return []
    return [data[8:12]] + [data[i : i + 4] for i in range(16, size - 3, 4)]


def _is_hevc(data: bytes) -> bool:
    return any(brand in _HEVC_BRANDS for brand in _ftyp_brands(data))


def _is_avif(data: bytes) -> bool:
    """A generic-brand (mif1) file is AVIF when it names AV1's brands and none of HEVC's."""
    return any(brand in _AVIF_BRANDS for brand in _ftyp_brands(data)) and not _is_hevc(data)


def _heif_type(data: bytes) -> tuple[str, str]:
    """(MIME type, extension) of an accepted HEIF: HEIC when its brands say HEVC (as iPhones' do)."""
    return ALLOWED_FORMATS["HEIF"] if _is_hevc(data) else ("image/heif", "heif")


def _name_other_format(data: bytes) -> str | None:
    """Ask every Pillow plugin to read the header, only to name the format in the message; never decode."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as other:
                return other.format
    except Exception:
        return None
