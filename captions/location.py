"""Where a photo was taken stays with its owner: the EXIF GPS block is removed from the file served to
anyone else, unless the owner chose to share it (`Image.share_location`).

JPEG (what phones and cameras write GPS into) is rewritten without decoding: only its Exif segment
changes, every pixel and other segment is kept. HEIC/HEIF (iPhones) is edited in place: its Exif items
lose their GPS block byte for byte (nothing moves, so every offset in the file stays right) -- re-encoding
would take half a minute for a 12-megapixel photo and lose quality. Other formats with GPS in their EXIF
are saved again by Pillow without it. Files without GPS are served as they are.
"""

from __future__ import annotations

import io
import struct

from PIL import Image as PILImage

from ml.images import register_heif

GPS_IFD = 0x8825
_EXIF_HEADER = b"Exif\x00\x00"
_SOI, _SOS, _APP1 = b"\xff\xd8", 0xDA, 0xE1
# Bytes per value of each TIFF field type (BYTE, ASCII, SHORT, LONG, RATIONAL, ..., IFD, LONG8...).
_TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8}

register_heif()


def without_location(data: bytes) -> bytes | None:
    """`data` with its GPS position removed, or None if it has none (serve `data` as it is)."""
    if data.startswith(_SOI):
        try:
            return _jpeg_without_gps(data)
        except (ValueError, IndexError, OSError, SyntaxError):
            pass  # a segment we cannot walk: re-encode below rather than risk serving the position
    if data[4:8] == b"ftyp":
        try:
            stripped = _heif_without_gps(data)
        except (ValueError, IndexError, struct.error):
            stripped = None  # boxes we cannot walk: re-encode below rather than risk serving the position
        if stripped is not None and not _has_gps(stripped):
            return stripped
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


def _heif_without_gps(data: bytes) -> bytes | None:
    """`data` with the GPS block of each of its Exif items blanked in place, None if none had one."""
    out = bytearray(data)
    found = False
    for start, end in _heif_exif_items(data):
        tiff = _tiff_start(data, start, end)
        if tiff is not None and _blank_gps(memoryview(out)[tiff:end]):
            found = True
    return bytes(out) if found else None


def _has_gps(data: bytes) -> bool:
    """Whether Pillow (through pillow-heif for HEIF) still finds a GPS block: checks an in-place edit."""
    try:
        with PILImage.open(io.BytesIO(data)) as image:
            exif = image.getexif()
            return GPS_IFD in exif or bool(exif.get_ifd(GPS_IFD))
    except (OSError, ValueError, SyntaxError):
        return True  # unreadable after the edit: not served


def _boxes(data: bytes, start: int, end: int) -> dict[bytes, list[tuple[int, int]]]:
    """ISOBMFF boxes between `start` and `end`: type -> [(payload start, box end)]."""
    found: dict[bytes, list[tuple[int, int]]] = {}
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:  # a 64-bit size follows
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:  # to the end
            size = end - pos
        if size < header or pos + size > end:
            raise ValueError(f"box {kind!r} at {pos} runs past its parent")
        found.setdefault(kind, []).append((pos + header, pos + size))
        pos += size
    return found


def _heif_exif_items(data: bytes) -> list[tuple[int, int]]:
    """(start, end) in `data` of every item of type Exif, from the top-level meta box's iinf and iloc."""
    metas = _boxes(data, 0, len(data)).get(b"meta")
    if not metas:
        return []
    meta_start, meta_end = metas[0]
    children = _boxes(data, meta_start + 4, meta_end)  # meta is a full box: version and flags first
    if b"iinf" not in children or b"iloc" not in children:
        return []
    exif_ids = _exif_item_ids(data, *children[b"iinf"][0])
    if not exif_ids:
        return []
    idat = children.get(b"idat", [(0, 0)])[0][0]
    return [span for item, span in _item_locations(data, *children[b"iloc"][0], idat) if item in exif_ids]


def _exif_item_ids(data: bytes, start: int, end: int) -> set[int]:
    version = data[start]
    count_size = 2 if version == 0 else 4
    ids = set()
    for entry, entry_end in _boxes(data, start + 4 + count_size, end).get(b"infe", []):
        entry_version = data[entry]
        if entry_version < 2:
            continue  # no item type in these old entries (never written for images)
        id_size = 2 if entry_version == 2 else 4
        item = int.from_bytes(data[entry + 4 : entry + 4 + id_size], "big")
        kind = data[entry + 4 + id_size + 2 : entry + 4 + id_size + 6]
        if kind == b"Exif" and entry + 4 + id_size + 6 <= entry_end:
            ids.add(item)
    return ids


def _item_locations(data: bytes, start: int, end: int, idat: int) -> list[tuple[int, tuple[int, int]]]:
    """[(item id, (start, end))] from an iloc box, for items stored as one extent in the file or idat."""
    version = data[start]
    pos = start + 4

    def number(size: int) -> int:
        nonlocal pos
        value = int.from_bytes(data[pos : pos + size], "big")
        pos += size
        return value

    sizes = number(2)
    offset_size, length_size, base_size = sizes >> 12, (sizes >> 8) & 15, (sizes >> 4) & 15
    index_size = sizes & 15 if version in (1, 2) else 0
    locations = []
    for _ in range(number(2 if version < 2 else 4)):
        item = number(2 if version < 2 else 4)
        method = number(2) & 15 if version in (1, 2) else 0
        number(2)  # data_reference_index: 0, this file
        base = number(base_size)
        extents = [(number(index_size), number(offset_size), number(length_size)) for _ in range(number(2))]
        if pos > end:
            raise ValueError("iloc box runs past its end")
        if len(extents) != 1 or method not in (0, 1):
            continue  # split or by reference: not edited in place (the re-encode fallback covers it)
        _, offset, length = extents[0]
        first = base + offset + (idat if method == 1 else 0)
        locations.append((item, (first, first + length if length else len(data))))
    return locations


def _tiff_start(data: bytes, start: int, end: int) -> int | None:
    """Where the TIFF header of an Exif item begins: after its 4-byte offset (usually past "Exif\\0\\0")."""
    if end - start < 12:
        return None
    tiff = start + 4 + int.from_bytes(data[start : start + 4], "big")
    if data[tiff : tiff + 4] in (b"MM\x00*", b"II*\x00"):
        return tiff
    return None


def _blank_gps(tiff: memoryview) -> bool:
    """Zero the GPS IFD of the TIFF block `tiff` (its entries and their values) and drop IFD0's pointer
    to it, shifting the entries after it up: the block keeps its length. False if it has no GPS."""
    order = ">" if tiff[:2] == b"MM" else "<"
    (ifd0,) = struct.unpack_from(order + "I", tiff, 4)
    (count,) = struct.unpack_from(order + "H", tiff, ifd0)
    entries_end = ifd0 + 2 + 12 * count
    for index in range(count):
        entry = ifd0 + 2 + 12 * index
        tag, _, _, gps = struct.unpack_from(order + "HHII", tiff, entry)
        if tag == GPS_IFD:
            break
    else:
        return False
    if gps + 2 <= len(tiff):
        (gps_count,) = struct.unpack_from(order + "H", tiff, gps)
        gps_end = min(gps + 2 + 12 * gps_count + 4, len(tiff))
        for index in range(gps_count):
            kind, values, offset = struct.unpack_from(order + "HII", tiff, gps + 2 + 12 * index + 2)
            size = _TIFF_TYPE_SIZES.get(kind, 1) * values
            if size > 4 and offset + size <= len(tiff):  # stored out of line: the coordinates themselves
                tiff[offset : offset + size] = bytes(size)
        tiff[gps:gps_end] = bytes(gps_end - gps)
    # The entries after the pointer and the next-IFD offset move up by one entry; 12 zero bytes follow.
    tiff[entry : entries_end + 4 - 12] = tiff[entry + 12 : entries_end + 4].tobytes()
    tiff[entries_end + 4 - 12 : entries_end + 4] = bytes(12)
    struct.pack_into(order + "H", tiff, ifd0, count - 1)
    return True


def _reencoded_without_gps(data: bytes) -> bytes | None:
    try:
        with PILImage.open(io.BytesIO(data)) as image:
            exif = image.getexif()
            if GPS_IFD not in exif:
                return None
            del exif[GPS_IFD]
            fmt = image.format or "PNG"
            out = io.BytesIO()
            options = {"quality": 95} if fmt in ("JPEG", "WEBP") else {"quality": 90} if fmt == "HEIF" else {}
            image.save(out, fmt, exif=exif.tobytes(), **options)
            return out.getvalue()
    except (OSError, ValueError, SyntaxError):
        return None  # not an image Pillow reads: it was checked at upload, so nothing to strip
