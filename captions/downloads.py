"""Downloads of images as their owners named them, with the caption the site shows written into the
file (XMP dc:description and EXIF ImageDescription: captions/metadata.py), or beside it as an .xmp
sidecar when the format cannot hold it (HEIC, GIF, BMP). Anyone but the owner gets the file without
its GPS position unless the owner shares it, as the media view serves it (captions/location.py).

`download_for` is one image (GET /api/v1/images/{id}/download/); `zip_downloads` many, in one zip,
for bulk actions. Both take images the caller has already checked the user may see (selectors).
"""

from __future__ import annotations

import datetime
import io
import logging
import mimetypes
import os
import re
import unicodedata
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from django.core.files.storage import default_storage

from captions.ingest.images import ALLOWED_FORMATS
from captions.location import without_location
from captions.metadata import embed_caption, xmp_sidecar
from captions.models import Image, ModelVersion
from captions.selectors import active_model_version, choose_captions

logger = logging.getLogger(__name__)

SIDECAR_CONTENT_TYPE = "application/rdf+xml"
# Other spellings of each stored extension: "IMG_1.JPEG" keeps its name, "photo" (a URL's) gets ".jpg".
_SAME_EXTENSIONS = {
    ".jpg": {".jpg", ".jpeg", ".jpe", ".jfif"},
    ".tif": {".tif", ".tiff"},
    ".heic": {".heic", ".heif", ".hif"},
    ".heif": {".heic", ".heif", ".hif"},
}
_UNSAFE = re.compile(r'[\x00-\x1f\x7f"\\/:*?<>|]')
# Already compressed: deflating them again costs time and saves nothing.
_STORED_EXTENSIONS = {".jpg", ".png", ".webp", ".gif", ".heic", ".heif"}


@dataclass(frozen=True)
class Download:
    """A file to hand to someone: what to call it, its type and its bytes, and for a format that
    cannot hold the caption the .xmp sidecar that carries it (None when the caption is inside, or
    there is no caption)."""

    name: str
    content_type: str
    data: bytes
    sidecar: bytes | None = None

    @property
    def sidecar_name(self) -> str:
        return sidecar_name(self.name)


def sidecar_name(name: str) -> str:
    """`IMG_1.heic` -> `IMG_1.xmp`."""
    return os.path.splitext(name)[0] + ".xmp"


def download_name(image: Image) -> str:
    """The name the owner gave the file (its last path part; a URL's last path segment), with the
    extension of what it is; `image-<id>.<ext>` when it had none worth keeping."""
    extension = os.path.splitext(image.file.name)[1].lower()
    name = image.original_name or ""
    if "://" in name:
        name = unquote(urlsplit(name).path)
    name = _UNSAFE.sub(" ", re.split(r"[/\\]", name)[-1])
    name = " ".join(unicodedata.normalize("NFC", name).split()).strip(". ")
    stem, suffix = os.path.splitext(name)
    if not stem:
        return f"image-{image.pk}{extension}"
    if suffix.lower() not in _SAME_EXTENSIONS.get(extension, {extension}):
        name += extension
    return name


def content_disposition(name: str) -> str:
    """An attachment header per RFC 6266: a plain `filename` old clients read, and `filename*` in
    UTF-8 (RFC 5987) when the name is not ASCII."""
    fallback = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    fallback = re.sub(r"[^\x20-\x7e]|[\"\\]", "_", fallback)
    if not os.path.splitext(fallback)[0].strip(" ._"):
        fallback = "download" + os.path.splitext(name)[1].encode("ascii", "ignore").decode()
    header = f'attachment; filename="{fallback}"'
    if fallback != name:
        header += f"; filename*=UTF-8''{quote(name, safe='')}"
    return header


# By stored extension (intake's), not the system's MIME table: the same answer on every machine.
_TYPES_BY_EXTENSION = {f".{ext}": mime for mime, ext in ALLOWED_FORMATS.values()} | {".heif": "image/heif"}
# What a download can answer with (the OpenAPI schema lists them: captions/api/openapi.py).
CONTENT_TYPES = (*sorted(set(_TYPES_BY_EXTENSION.values())), SIDECAR_CONTENT_TYPE)


def _content_type(image: Image) -> str:
    extension = os.path.splitext(image.file.name)[1].lower()
    return (
        _TYPES_BY_EXTENSION.get(extension)
        or mimetypes.guess_type(image.file.name)[0]
        or "application/octet-stream"
    )


def shown_caption(image: Image, active: ModelVersion | None = None) -> str:
    """The text of the caption the site shows for `image` ("" for none yet)."""
    best = choose_captions(image, active).best
    return best.text if best is not None else ""


def download_for(
    image: Image, user, *, active: ModelVersion | None = None, caption: str | None = None
) -> Download:
    """`image`'s file for `user`: without its GPS position unless `user` owns it or the owner shares
    it, with the shown caption (or `caption`) written in, or in `sidecar` when the format cannot hold
    it. Raises FileNotFoundError when the stored file is gone."""
    with default_storage.open(image.file.name, "rb") as handle:
        data = handle.read()
    if image.owner_id != getattr(user, "pk", None) and not image.share_location:
        # Stripped before the caption is written: re-encoding a PNG or WebP without GPS keeps no XMP.
        data = without_location(data) or data
    text = shown_caption(image, active or active_model_version()) if caption is None else caption
    sidecar = None
    if text:
        embedded = embed_caption(data, text)
        if embedded is None:
            sidecar = xmp_sidecar(text)
        else:
            data = embedded
    return Download(name=download_name(image), content_type=_content_type(image), data=data, sidecar=sidecar)


def sidecar_for(image: Image, *, active: ModelVersion | None = None) -> Download | None:
    """The .xmp sidecar of `image`'s shown caption (for any format: some tools want one anyway); None
    when it has no caption yet."""
    text = shown_caption(image, active or active_model_version())
    if not text:
        return None
    return Download(
        name=sidecar_name(download_name(image)), content_type=SIDECAR_CONTENT_TYPE, data=xmp_sidecar(text)
    )


class _Chunks(io.RawIOBase):
    """Where zipfile writes; what it wrote is taken away after each file. Not seekable, so zipfile
    writes data descriptors and never goes back: the zip streams."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def _unique(name: str, taken: set[str], *, with_sidecar: bool) -> str:
    """`name`, else `name (2)`, `name (3)`, … : the first free one (case-insensitively: the zip may be
    unpacked on macOS or Windows), whose sidecar name is free too when it needs one."""
    stem, extension = os.path.splitext(name)
    number = 1
    while True:
        candidate = name if number == 1 else f"{stem} ({number}){extension}"
        names = [candidate, sidecar_name(candidate)] if with_sidecar else [candidate]
        if not any(n.casefold() in taken for n in names):
            taken.update(n.casefold() for n in names)
            return candidate
        number += 1


def _zip_info(name: str, when: datetime.datetime | None) -> zipfile.ZipInfo:
    stamp = (when or datetime.datetime.now(datetime.UTC)).timetuple()[:6]
    info = zipfile.ZipInfo(name, date_time=max(stamp, (1980, 1, 1, 0, 0, 0)))
    stored = os.path.splitext(name)[1].lower() in _STORED_EXTENSIONS
    info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    return info


def zip_downloads(images: Iterable[Image], user) -> Iterator[bytes]:
    """A zip of `images` (already checked visible to `user`), each as `download_for` makes it, an .xmp
    sidecar beside each that cannot hold its caption; names made unique with " (2)". Yields the zip a
    file at a time, so a long list streams. An image whose stored file is gone is left out (logged)."""
    out = _Chunks()
    taken: set[str] = set()
    active = active_model_version()
    with zipfile.ZipFile(out, "w") as archive:
        for image in images:
            try:
                download = download_for(image, user, caption=shown_caption(image, active))
            except FileNotFoundError:
                logger.warning("imgcap zip: image %s has no stored file; left out", image.pk)
                continue
            name = _unique(download.name, taken, with_sidecar=download.sidecar is not None)
            archive.writestr(_zip_info(name, image.created_at), download.data)
            if download.sidecar is not None:
                archive.writestr(_zip_info(sidecar_name(name), image.created_at), download.sidecar)
            yield out.take()
    yield out.take()
