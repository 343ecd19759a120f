"""A photo's own metadata in and out, with pyexiv2 (exiv2 inside its wheels): what intake reads (date taken,
camera, orientation, an existing description) and what downloads write (the shown caption as XMP
dc:description and EXIF ImageDescription, or an .xmp sidecar for formats that cannot hold it).

Pure functions on bytes. Metadata is whatever a camera, an editor or a stranger wrote: nothing here
raises on it (unreadable metadata reads as none), and writing never re-encodes the picture: exiv2
rewrites the metadata blocks only.

Where each format stands (pyexiv2 2.16, exiv2 0.28): JPEG, PNG, WebP and TIFF are read and written;
HEIC/HEIF (BMFF) is read only, GIF and BMP hold none: those get a sidecar.
"""

from __future__ import annotations

import datetime
import logging
import re
import unicodedata
from dataclasses import dataclass
from xml.sax.saxutils import escape

import pyexiv2

logger = logging.getLogger(__name__)

# exiv2 writes its own warnings to stderr for every odd tag it meets; failures reach us as exceptions.
pyexiv2.set_log_level(4)

# Intake's format names (captions/ingest/images.py) whose files embed_caption writes; the others
# (HEIF, GIF, BMP) get an .xmp sidecar.
CAPTION_IN_FILE_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "TIFF"})
MAX_DESCRIPTION_CHARS = 1000  # as a person's caption (services/images.py MAX_CAPTION_CHARS)
MAX_CAMERA_CHARS = 200  # Image.camera

# What cameras and phone apps write into ImageDescription when nobody described the photo: not a
# description. Compared case-insensitively after cleaning.
PLACEHOLDER_DESCRIPTIONS = frozenset(
    s.casefold()
    for s in (
        "OLYMPUS DIGITAL CAMERA",
        "SONY DSC",
        "DCIM",
        "default",
        "Exif_JPEG_PICTURE",
        "EXIF_JPEG_420",
        "DIGITAL CAMERA",
        "SAMSUNG DIGITAL CAMERA",
        "KONICA MINOLTA DIGITAL CAMERA",
        "MINOLTA DIGITAL CAMERA",
        "KODAK Digital Still Camera",
        "Digital Camera",
        "LEICA DIGITAL CAMERA",
        "Created with GIMP",
        "Image",
        "Picture",
        "Photo",
        "Untitled",
        "Description",
        "ImageDescription",
        "JPEG",
        "DSC",
        "none",
        "n/a",
    )
)

_XMP_DESCRIPTION = "Xmp.dc.description"
_IPTC_CAPTION = "Iptc.Application2.Caption"
_IPTC_CHARSET = "Iptc.Envelope.CharacterSet"
_EXIF_DESCRIPTION = "Exif.Image.ImageDescription"
_X_DEFAULT = 'lang="x-default"'
_UTF8_ESCAPE = "\x1b%G"  # IPTC's "this record is UTF-8"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_DATE = re.compile(r"(\d{4})[:\-](\d{2})[:\-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_OFFSET = re.compile(r"([+-])(\d{2}):?(\d{2})")


@dataclass(frozen=True)
class PhotoMetadata:
    """What intake keeps of a photo's metadata; empty fields where the file says nothing usable."""

    taken_at: datetime.datetime | None = None  # aware: the camera's offset, else read as UTC
    # Minutes east of UTC of the camera's clock (EXIF OffsetTimeOriginal); None when it wrote none.
    taken_offset: int | None = None
    camera: str = ""  # "Apple iPhone 13"
    description: str = ""  # the photo's own caption, cleaned; "" for none or a camera's placeholder
    orientation: int | None = None  # EXIF Orientation 1-8 (intake's sizes already follow it)


def read_photo_metadata(data: bytes) -> PhotoMetadata:
    """The date taken, camera, orientation and description of the photo in `data` (any format exiv2
    reads); an empty PhotoMetadata when its metadata cannot be read at all."""
    try:
        image = pyexiv2.ImageData(data)
    except (RuntimeError, ValueError) as exc:
        logger.debug("no readable metadata: %s", exc)
        return PhotoMetadata()
    try:
        exif = _read(image.read_exif)
        iptc = _read(image.read_iptc)
        xmp = _read(image.read_xmp)
    finally:
        image.close()
    description = ""
    found = (_lang_default(xmp.get(_XMP_DESCRIPTION)), iptc.get(_IPTC_CAPTION), exif.get(_EXIF_DESCRIPTION))
    for raw in found:
        description = clean_description(raw)
        if description:
            break
    camera = camera_name(exif.get("Exif.Image.Make"), exif.get("Exif.Image.Model"))
    if description.casefold() in {camera.casefold(), _text(exif.get("Exif.Image.Make")).casefold()}:
        description = ""  # "Canon EOS 5D" as a description is the camera's name again
    offset = exif.get("Exif.Photo.OffsetTimeOriginal") or exif.get("Exif.Photo.OffsetTimeDigitized")
    taken_at = parse_exif_datetime(
        exif.get("Exif.Photo.DateTimeOriginal") or exif.get("Exif.Photo.DateTimeDigitized"), offset
    )
    minutes = parse_exif_offset(offset)
    return PhotoMetadata(
        taken_at=taken_at,
        taken_offset=minutes if taken_at is not None else None,
        camera=camera,
        description=description,
        orientation=_orientation(exif.get("Exif.Image.Orientation")),
    )


def _read(reader) -> dict:
    """One block (EXIF, IPTC or XMP): UTF-8, else Latin-1 (old cameras' IPTC); {} when unreadable."""
    return _read_encoded(reader)[0]


def _read_encoded(reader) -> tuple[dict, str]:
    """`_read`, and the encoding that read it."""
    for encoding in ("utf-8", "latin-1"):
        try:
            return reader(encoding=encoding), encoding
        except UnicodeDecodeError:
            continue
        except (RuntimeError, ValueError) as exc:
            logger.debug("metadata block unreadable: %s", exc)
            break
    return {}, "utf-8"


def _text(value: object) -> str:
    """A tag's value as one string: repeated tags (lists) joined, anything else ""."""
    if isinstance(value, list):
        value = " ".join(v for v in value if isinstance(v, str))
    return value if isinstance(value, str) else ""


def _lang_default(value: object) -> str:
    """XMP's language alternatives: the x-default one, else the first."""
    if isinstance(value, dict):
        return value.get(_X_DEFAULT) or next((v for v in value.values() if isinstance(v, str) and v), "")
    return _text(value)


def clean_description(value: object) -> str:
    """A description as a caption: control characters gone, whitespace collapsed, at most
    MAX_DESCRIPTION_CHARS; "" for a camera's placeholder or nothing but punctuation."""
    text = unicodedata.normalize("NFC", _CONTROL.sub(" ", _text(value)))
    text = " ".join(text.split())[:MAX_DESCRIPTION_CHARS].strip()
    if text.casefold() in PLACEHOLDER_DESCRIPTIONS or not any(ch.isalnum() for ch in text):
        return ""
    return text


def camera_name(make: object, model: object) -> str:
    """EXIF Make + Model without saying the maker twice: "Apple iPhone 13", "Canon EOS 5D" (not
    "Canon Canon EOS 5D"), "NIKON D750" (from "NIKON CORPORATION" + "NIKON D750")."""
    make_text = " ".join(_CONTROL.sub(" ", _text(make)).split())
    model_text = " ".join(_CONTROL.sub(" ", _text(model)).split())
    brand = make_text.split(" ", 1)[0].casefold() if make_text else ""
    if not model_text:
        name = make_text
    elif not brand or model_text.casefold().startswith(brand):
        name = model_text
    else:
        name = f"{make_text} {model_text}"
    return name[:MAX_CAMERA_CHARS]


def parse_exif_datetime(value: object, offset: object = None) -> datetime.datetime | None:
    """EXIF's "YYYY:MM:DD HH:MM:SS" with its offset ("+02:00") when given, else as UTC; None for
    blank ("0000:00:00 00:00:00") or impossible dates."""
    match = _DATE.match(_text(value).strip())
    if not match:
        return None
    try:
        naive = datetime.datetime(*(int(part) for part in match.groups()))
    except ValueError:
        return None
    minutes = parse_exif_offset(offset)
    zone = datetime.UTC if minutes is None else datetime.timezone(datetime.timedelta(minutes=minutes))
    return naive.replace(tzinfo=zone)


def on_camera_clock(instant: datetime.datetime | None, offset: int | None) -> datetime.datetime | None:
    """A stored date taken back on the clock of the camera that wrote `offset` (minutes east of UTC;
    None: it wrote none, and the date was read as UTC)."""
    if instant is None:
        return None
    return instant.astimezone(datetime.timezone(datetime.timedelta(minutes=offset or 0)))


def parse_exif_offset(value: object) -> int | None:
    """EXIF's OffsetTime ("+02:00", "-0530") as minutes east of UTC; None when absent or impossible."""
    found = _OFFSET.fullmatch(_text(value).strip())
    if not found:
        return None
    sign, hours, minutes = found.groups()
    total = int(hours) * 60 + int(minutes)
    if total >= 15 * 60 or int(minutes) >= 60:
        return None
    return -total if sign == "-" else total


def _orientation(value: object) -> int | None:
    try:
        number = int(_text(value).strip())
    except ValueError:
        return None
    return number if 1 <= number <= 8 else None


def embed_caption(data: bytes, caption: str) -> bytes | None:
    """`data` with `caption` as its XMP dc:description and EXIF ImageDescription (and IPTC
    Caption-Abstract when the file has one already, so that no reader finds an older description),
    every other tag and every pixel kept; None when the format cannot hold them (write a sidecar)."""
    try:
        image = pyexiv2.ImageData(data)
    except (RuntimeError, ValueError) as exc:
        logger.debug("cannot open for writing metadata: %s", exc)
        return None
    try:
        modes = image.get_access_mode()
        if modes.get("xmp") != "read+write" or modes.get("exif") != "read+write":
            return None
        image.modify_xmp({_XMP_DESCRIPTION: {_X_DEFAULT: caption}})
        image.modify_exif({_EXIF_DESCRIPTION: caption})
        if modes.get("iptc") == "read+write":
            _replace_iptc_caption(image, caption)
        return image.get_bytes()
    except (RuntimeError, ValueError, UnicodeError) as exc:
        logger.debug("writing the caption into the file failed: %s", exc)
        return None
    finally:
        image.close()


def _replace_iptc_caption(image: pyexiv2.ImageData, caption: str) -> None:
    """An IPTC Caption-Abstract already in the file says the new caption (in its record's encoding),
    or goes when that encoding cannot spell it: no reader finds the old words. None is not added."""
    iptc, encoding = _read_encoded(image.read_iptc)
    if _IPTC_CAPTION not in iptc:
        return
    if encoding == "utf-8":
        image.modify_iptc({_IPTC_CAPTION: caption, _IPTC_CHARSET: _UTF8_ESCAPE})
        return
    try:
        caption.encode(encoding)
    except UnicodeEncodeError:
        image.modify_iptc({_IPTC_CAPTION: None})  # None deletes the tag
    else:
        image.modify_iptc({_IPTC_CAPTION: caption}, encoding=encoding)


def xmp_sidecar(caption: str) -> bytes:
    """A standalone XMP packet (an .xmp sidecar, as Lightroom, darktable and exiftool read them) with
    `caption` as its dc:description."""
    text = escape(_CONTROL.sub(" ", caption).replace("\r", " "))
    packet = (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="imgcap">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">\n'
        "   <dc:description>\n"
        "    <rdf:Alt>\n"
        f'     <rdf:li xml:lang="x-default">{text}</rdf:li>\n'
        "    </rdf:Alt>\n"
        "   </dc:description>\n"
        "  </rdf:Description>\n"
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="w"?>\n'
    )
    return packet.encode("utf-8")
