"""Where a photo was taken stays with its owner: the EXIF GPS block is removed from the file served to
anyone else, unless the owner chose to share it (`Image.share_location`).

JPEG (what phones and cameras write GPS into) is rewritten without decoding: only its Exif segment
changes, every pixel and other segment is kept. Other formats with GPS in their EXIF are saved again
by Pillow without it. Files without GPS are served as they are.
"""

from __future__ import annotations

import io

from PIL import Image as PILImage

GPS_IFD = 0x8825
_EXIF_HEADER = b"Exif\x00\x00"
_SOI, _SOS, _APP1 = b"\xff\xd8", 0xDA, 0xE1


def without_location(data: bytes) -> bytes | None:
    """`data` with its GPS position removed, or None if it has none (serve `data` as it is)."""
    if data.startswith(_SOI):
        try:
            return _jpeg_without_gps(data)
        except (ValueError, IndexError, OSError, SyntaxError):
            pass  # a segment we cannot walk: re-encode below rather than risk serving the position
    return _reencoded_without_gps(data)


def _jpeg_without_gps(data: bytes) -> bytes | None:
    out = bytearray(_SOI)
    found = False
    pos = 2
    while pos < len(data):
        if data[pos] != 0xFF:
            raise ValueError("not at a JPEG marker")
        marker = data[pos + 1]
        if marker == _SOS:  # the image data follows: nothing after it is metadata
            out += data[pos:]
            break
        end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        segment = data[pos:end]
        if marker == _APP1 and segment[4:10] == _EXIF_HEADER:
            exif = PILImage.Exif()
            exif.load(segment[4:])
            if GPS_IFD in exif:
                found = True
                del exif[GPS_IFD]
                payload = exif.tobytes()
                segment = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
        out += segment
        pos = end
    return bytes(out) if found else None


def _reencoded_without_gps(data: bytes) -> bytes | None:
    try:
        with PILImage.open(io.BytesIO(data)) as image:
            exif = image.getexif()
            if GPS_IFD not in exif:
                return None
            del exif[GPS_IFD]
            fmt = image.format or "PNG"
            out = io.BytesIO()
            options = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
            image.save(out, fmt, exif=exif.tobytes(), **options)
            return out.getvalue()
    except (OSError, ValueError, SyntaxError):
        return None  # not an image Pillow reads: it was checked at upload, so nothing to strip
