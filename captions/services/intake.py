"""Intake: every way images arrive funnels into one path, `_consume`, which stores checked images
(or finds the owner's copy of the same bytes) and lists them in their batch, as paperless-ngx
funnels every source into `consume_file`. Each source adds only what is its own:

- `upload_file` / `upload_image`: one file of a request, optionally joining a batch file by file;
- `create_batch`: files, zip archives and URLs in one request, with an idempotency key (its URLs
  are fetched by a worker afterwards: captions/services/url_fetches.py, which stores each through
  `add_fetched`);
- `create_batch_from_paths`: a folder on disk, read one file at a time (`caption_folder`).

Input checks live in captions.ingest (RejectedInput: a 4xx with a code and a message); nothing is
stored for rejected input. New images are queued for captioning (captions/queue.py) once stored,
with their date taken and camera read from the file (captions/metadata.py), and a description the
file carried as a `metadata` caption, shown until a person writes one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.utils import timezone

from captions.duplicates import near_duplicates
from captions.ingest import (
    ImageInfo,
    RejectedInput,
    check_url,
    extract_archive,
    inspect_image,
    strip_unsafe_chars,
)
from captions.ingest.errors import human_sizes
from captions.metadata import PhotoMetadata, read_photo_metadata
from captions.models import Album, Batch, BatchItem, Caption, Image
from captions.queue import enqueue_captioning, enqueue_url_fetch
from captions.services.albums import add_images
from captions.services.files import cleanup_new_files_on_error, store_file
from captions.services.images import check_visibility
from captions.services.quotas import check_quotas


@dataclass(frozen=True)
class IncomingFile:
    """Bytes someone sent us and the name they gave them (file name, archive member or URL)."""

    name: str
    data: bytes


@dataclass(frozen=True)
class Rejection:
    """One item of a batch that was refused, and why."""

    name: str
    code: str
    message: str
    status: int = 400

    @classmethod
    def of(cls, name: str, exc: RejectedInput) -> Rejection:
        return cls(name, exc.code, exc.message, exc.status)

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "code": self.code, "message": self.message}


@dataclass(frozen=True)
class UploadResult:
    image: Image
    created: bool  # False: the owner already had these exact bytes; the existing image is returned
    described: bool = False  # new, and its file carried a description: it has a metadata caption


@dataclass(frozen=True)
class BatchResult:
    batch: Batch
    replayed: bool  # True: an earlier request with the same Idempotency-Key created it


class BatchRejected(RejectedInput):
    """No item of a batch was acceptable; `rejected` says why for each."""

    def __init__(self, code: str, message: str, *, status: int, rejected: Sequence[Rejection]) -> None:
        super().__init__(code, message, status=status)
        self.rejected = list(rejected)


def read_upload(uploaded: UploadedFile, *, limit: int | None = None) -> IncomingFile:
    """The bytes of an uploaded file, refusing an oversized one before reading it into memory."""
    name = uploaded.name or "upload"
    limit = settings.IMGCAP_MAX_UPLOAD_BYTES if limit is None else limit
    if uploaded.size is not None and uploaded.size > limit:
        size, allowed = human_sizes(uploaded.size, limit)
        raise RejectedInput("file_too_large", f"{name}: {size} is over the limit of {allowed}", status=413)
    uploaded.seek(0)
    return IncomingFile(name=name, data=uploaded.read())


def upload_image(
    *,
    owner,
    file: IncomingFile,
    visibility: str = Image.Visibility.PRIVATE,
    batch: Batch | None = None,
    album: Album | None = None,
) -> UploadResult:
    """Check, store and queue one image. The same bytes from the same owner return the existing image
    (not queued again). Raises RejectedInput (nothing stored) for anything that is not an acceptable image.

    With `batch` (one of the owner's), the image joins it as its next item, and a rejection is listed in
    the batch's `rejected` as a batch's own bad items are: files sent one by one still make one batch.
    With `album` (one of the owner's), the image is put in it, a duplicate too.
    """
    check_visibility(visibility)
    with _rejections_listed_in(batch, file.name):
        info = _inspect(file)
        position = BatchItem.objects.filter(batch=batch).count() if batch is not None else 0
        [result] = _consume(
            owner=owner,
            checked=[(file, info)],
            visibility=visibility,
            batch=batch,
            position=position,
            album=album,
        )
    enqueue_captioning(_new_ids([result]))
    return result


def upload_file(
    *,
    owner,
    uploaded: UploadedFile,
    visibility: str = Image.Visibility.PRIVATE,
    batch: Batch | None = None,
    album: Album | None = None,
) -> UploadResult:
    """`upload_image` for a file of a request; with `batch`, an oversized file is listed in its
    `rejected` too."""
    with _rejections_listed_in(batch, uploaded.name or "upload"):
        incoming = read_upload(uploaded)
    return upload_image(owner=owner, file=incoming, visibility=visibility, batch=batch, album=album)


def create_batch(
    *,
    owner,
    files: Sequence[IncomingFile | UploadedFile] = (),
    archives: Sequence[IncomingFile | UploadedFile] = (),
    urls: Sequence[str] = (),
    visibility: str = Image.Visibility.PRIVATE,
    idempotency_key: str | None = None,
    album: Album | None = None,
) -> BatchResult:
    """Create a batch from uploaded files, zip archives and/or URLs, and queue its new images.

    Bad items are refused one by one (listed in `batch.rejected`) while the good ones are accepted;
    if none is acceptable, BatchRejected (4xx) and nothing is stored. URLs are checked here as far as
    that needs no network, then left in `batch.urls_waiting` for a fetch worker: the answer does not
    wait for other servers. A repeated `idempotency_key` from the same owner returns the batch the
    first request created, without storing or queueing anything. With `album` (one of the owner's),
    every image of the batch is put in it (URLs' images when they are fetched).
    """
    check_visibility(visibility)
    key = (idempotency_key or "").strip()[:255] or None
    if key:
        existing = Batch.objects.filter(owner=owner, idempotency_key=key).first()
        if existing is not None:
            return BatchResult(batch=existing, replayed=True)

    limit = settings.IMGCAP_MAX_BATCH_FILES
    if len(files) + len(urls) > limit:
        raise _too_many(len(files) + len(urls), limit)
    if len(urls) > settings.IMGCAP_MAX_BATCH_URLS:
        raise RejectedInput(
            "too_many_urls",
            f"{len(urls)} URLs; a batch may fetch at most {settings.IMGCAP_MAX_BATCH_URLS}: split them",
            status=413,
        )
    _check_batch_bytes(files)
    members: list[IncomingFile] = []
    for archive in archives:
        if not isinstance(archive, IncomingFile):
            archive = read_upload(archive, limit=settings.IMGCAP_ARCHIVE_MAX_BYTES)
        members += _extract(archive)
    if len(files) + len(members) + len(urls) > limit:
        raise _too_many(len(files) + len(members) + len(urls), limit)
    if not files and not members and not urls:
        raise RejectedInput(
            "no_images",
            'send images (multipart field "images"), a zip archive (field "archive") or JSON {"urls": [...]}',
        )
    rejected: list[Rejection] = []
    to_fetch: list[str] = []
    for url in urls:
        try:
            to_fetch.append(check_url(str(url), allow_private=settings.IMGCAP_URL_ALLOW_PRIVATE))
        except RejectedInput as exc:
            rejected.append(Rejection.of(str(url), exc))

    try:
        with cleanup_new_files_on_error() as new_files, transaction.atomic():
            batch = Batch.objects.create(owner=owner, idempotency_key=key)
            position, new_ids = 0, []
            # A few megabytes at a time: a batch of 500 files never sits in memory whole.
            for checked in _checked_in_chunks([*files, *members], rejected):
                results = _consume(
                    owner=owner,
                    checked=checked,
                    visibility=visibility,
                    batch=batch,
                    position=position,
                    new_files=new_files,
                    album=album,
                )
                position += len(checked)
                new_ids += _new_ids(results)
            if not position and not to_fetch:
                raise _nothing_acceptable(rejected)  # rolls the batch back
            batch.rejected = [r.as_dict() for r in rejected]
            # Each URL's item comes after the files, in the order given.
            batch.urls_waiting = [
                {"url": url, "position": position + i, "visibility": visibility}
                | ({"album": album.pk} if album is not None else {})
                for i, url in enumerate(to_fetch)
            ]
            batch.urls_sent_at = timezone.now() if to_fetch else None
            batch.save(update_fields=["rejected", "urls_waiting", "urls_sent_at"])
            # One call for the whole batch: messages of IMGCAP_MICRO_BATCH_MAX ids, not one per image.
            enqueue_captioning(new_ids)
            if to_fetch:
                enqueue_url_fetch(batch.pk)
    except IntegrityError:
        # The same Idempotency-Key raced us; the other request's batch is the answer.
        existing = Batch.objects.filter(owner=owner, idempotency_key=key).first() if key else None
        if existing is None:
            raise
        return BatchResult(batch=existing, replayed=True)
    return BatchResult(batch=batch, replayed=False)


def create_batch_from_paths(
    *, owner, paths: Sequence[Path], visibility: str = Image.Visibility.PRIVATE, root: Path | None = None
) -> BatchResult:
    """A batch from files on disk (`caption_folder`), read one at a time so any number of files fits
    in memory. Unacceptable files are listed in `batch.rejected`; BatchRejected if none is acceptable."""
    check_visibility(visibility)
    batch = Batch.objects.create(owner=owner)
    rejected: list[Rejection] = []
    accepted = 0
    # New ids are queued a full message (IMGCAP_MICRO_BATCH_MAX ids) at a time, so the workers start on a big
    # folder while it is still being read.
    new_ids: list[int] = []
    chunk = max(1, settings.IMGCAP_MICRO_BATCH_MAX)
    for position, path in enumerate(paths):
        name = str(path.relative_to(root)) if root is not None else path.name
        try:
            file = IncomingFile(name, path.read_bytes())
            results = _consume(
                owner=owner,
                checked=[(file, _inspect(file))],
                visibility=visibility,
                batch=batch,
                position=position,
            )
        except RejectedInput as exc:
            rejected.append(Rejection.of(name, exc))
            continue
        except OSError as exc:
            rejected.append(Rejection(name, "unreadable", f"{name}: {exc.strerror or exc}", 400))
            continue
        accepted += 1
        new_ids += _new_ids(results)
        if len(new_ids) >= chunk:
            enqueue_captioning(new_ids)
            new_ids = []
    enqueue_captioning(new_ids)
    if not accepted:
        batch.delete()
        raise _nothing_acceptable(rejected) if rejected else RejectedInput("no_images", "no files found")
    batch.rejected = [r.as_dict() for r in rejected]
    batch.save(update_fields=["rejected"])
    return BatchResult(batch=batch, replayed=False)


def add_fetched(
    *, batch: Batch, file: IncomingFile, position: int, visibility: str, album_id: int | None = None
) -> UploadResult:
    """One downloaded URL of `batch`, checked, stored as its item at `position` (and put in the album
    `album_id` if the owner still has it) and queued; raises RejectedInput (nothing stored) when it is
    not an acceptable image: the caller lists it."""
    album = Album.objects.filter(pk=album_id, owner=batch.owner).first() if album_id is not None else None
    [result] = _consume(
        owner=batch.owner,
        checked=[(file, _inspect(file))],
        visibility=visibility,
        batch=batch,
        position=position,
        album=album,
    )
    enqueue_captioning(_new_ids([result]))
    return result


# --- the one path every source funnels into ----------------------------------------------------------


def _consume(
    *,
    owner,
    checked: Sequence[tuple[IncomingFile, ImageInfo]],
    visibility: str,
    batch: Batch | None,
    position: int = 0,
    new_files: list[str] | None = None,
    album: Album | None = None,
) -> list[UploadResult]:
    """Store checked images (their items in `batch` numbered from `position`, each put in `album`),
    with a few statements for all of them, not several per image. Bytes the owner already has return
    that image (a duplicate item); bytes sent twice in one call are one item. One result per distinct
    image, in order; queueing the new ones is the caller's (batches queue theirs together). Files
    written are removed on failure, and listed in `new_files` for a caller whose transaction is wider."""
    with cleanup_new_files_on_error(new_files) as new_files, transaction.atomic():
        hashes = [hashlib.sha256(item.data).hexdigest() for item, _ in checked]
        known = {image.sha256: image for image in Image.objects.filter(owner=owner, sha256__in=set(hashes))}
        new: dict[str, tuple[IncomingFile, ImageInfo]] = {}
        for pair, sha in zip(checked, hashes, strict=True):
            if sha not in known:
                new.setdefault(sha, pair)
        check_quotas(owner, images=len(new), size=sum(len(item.data) for item, _ in new.values()))
        # Each new file's metadata is parsed once, here; known bytes are not read again.
        described: dict[str, str] = {}
        fresh: dict[str, Image] = {}
        for sha, (item, info) in new.items():
            photo = read_photo_metadata(item.data)
            fresh[sha] = _new_image(
                owner=owner,
                item=item,
                info=info,
                photo=photo,
                sha=sha,
                file_name=store_file(sha, info.extension, item.data, new_files),
                visibility=visibility,
                batch=batch,
            )
            if photo.description:
                described[sha] = photo.description
        try:
            with transaction.atomic():
                created = {image.sha256: image for image in Image.objects.bulk_create(list(fresh.values()))}
        except IntegrityError:
            # The owner sent some of these bytes in another request meanwhile: theirs are those images.
            created = {}
            for sha, image in fresh.items():
                try:
                    with transaction.atomic():
                        image.save(force_insert=True)
                    created[sha] = image
                except IntegrityError:
                    known[sha] = Image.objects.get(owner=owner, sha256=sha)
        _mark_near_duplicates(
            owner, created, {sha: info for (_, info), sha in zip(checked, hashes, strict=True)}
        )
        # A description the photo already carried is shown until someone writes a caption; the model
        # still captions the image.
        Caption.objects.bulk_create(
            Caption(image=image, text=described[sha], rank=0, source=Caption.Source.METADATA)
            for sha, image in created.items()
            if sha in described
        )
        results: dict[str, UploadResult] = {}
        items: list[BatchItem] = []
        for offset, ((item, _), sha) in enumerate(zip(checked, hashes, strict=True)):
            if sha in results:
                continue
            image = created.get(sha) or known[sha]
            results[sha] = UploadResult(
                image=image, created=sha in created, described=sha in created and sha in described
            )
            items.append(
                BatchItem(
                    batch=batch,
                    image=image,
                    position=position + offset,
                    duplicate=sha not in created,
                    name=strip_unsafe_chars(item.name)[-255:],
                )
            )
        if batch is not None:
            # An image already in the batch (the same file sent again, file by file) keeps its item.
            BatchItem.objects.bulk_create(items, ignore_conflicts=True)
        if album is not None:
            add_images(album=album, images=[r.image for r in results.values()])
    return list(results.values())


def _mark_near_duplicates(owner, created: dict[str, Image], infos: dict[str, ImageInfo]) -> None:
    """Record which of the owner's images each new one is a near copy of (stored anyway)."""
    marked = []
    for sha, image in created.items():
        found = near_duplicates(owner.pk, infos[sha].perceptual_hashes, exclude=[image.pk], limit=1)
        if found:
            image.near_duplicate_of_id = found[0]
            marked.append(image)
    Image.objects.bulk_update(marked, ["near_duplicate_of"])


def _new_ids(results: Sequence[UploadResult]) -> list[int]:
    return [r.image.pk for r in results if r.created]


# How much of a batch is read and checked before it is stored (then let go).
_CHUNK_FILES = 64
_CHUNK_BYTES = 16 * 1024 * 1024


def _checked_in_chunks(
    sources: Sequence[IncomingFile | UploadedFile], rejected: list[Rejection]
) -> Iterator[list[tuple[IncomingFile, ImageInfo]]]:
    """The acceptable images of `sources`, read and checked one at a time and handed over a few
    megabytes at a time; each refused one is added to `rejected`."""
    chunk: list[tuple[IncomingFile, ImageInfo]] = []
    size = 0
    for source in sources:
        try:
            item = source if isinstance(source, IncomingFile) else read_upload(source)
            chunk.append((item, _inspect(item)))
        except RejectedInput as exc:
            rejected.append(Rejection.of(source.name or "upload", exc))
            continue
        size += len(item.data)
        if len(chunk) >= _CHUNK_FILES or size >= _CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _check_batch_bytes(files: Sequence[IncomingFile | UploadedFile]) -> None:
    """Refuse a batch whose files add up to more than IMGCAP_MAX_BATCH_BYTES, before any is read."""
    total = sum((f.size if isinstance(f, UploadedFile) else len(f.data)) or 0 for f in files)
    limit = settings.IMGCAP_MAX_BATCH_BYTES
    if total > limit:
        size, allowed = human_sizes(total, limit)
        raise RejectedInput(
            "batch_too_large", f"the files add up to {size}, over a batch's {allowed}: split them", status=413
        )


def _too_many(count: int, limit: int) -> RejectedInput:
    return RejectedInput("too_many_files", f"a batch takes at most {limit} images; got {count}", status=413)


def _inspect(item: IncomingFile) -> ImageInfo:
    return inspect_image(
        item.data,
        max_bytes=settings.IMGCAP_MAX_UPLOAD_BYTES,
        max_pixels=settings.IMGCAP_MAX_PIXELS,
        name=item.name,
    )


def _extract(archive: IncomingFile) -> list[IncomingFile]:
    members = extract_archive(
        archive.data,
        max_files=settings.IMGCAP_ARCHIVE_MAX_FILES,
        max_total_bytes=settings.IMGCAP_ARCHIVE_MAX_BYTES,
        max_ratio=settings.IMGCAP_ARCHIVE_MAX_RATIO,
        max_member_bytes=settings.IMGCAP_MAX_UPLOAD_BYTES,
        name=archive.name,
    )
    return [IncomingFile(name=name, data=data) for name, data in members]


def _nothing_acceptable(rejected: Sequence[Rejection]) -> BatchRejected:
    statuses = {r.status for r in rejected}
    if len(rejected) == 1:
        only = rejected[0]
        return BatchRejected(only.code, only.message, status=statuses.pop(), rejected=rejected)
    return BatchRejected(
        "no_acceptable_images",
        f"none of the {len(rejected)} items is an acceptable image; see 'rejected' for each reason",
        status=statuses.pop() if len(statuses) == 1 else 400,
        rejected=rejected,
    )


@contextmanager
def _rejections_listed_in(batch: Batch | None, name: str) -> Iterator[None]:
    """A RejectedInput raised inside is added to `batch.rejected` (when there is a batch), then re-raised."""
    try:
        yield
    except RejectedInput as exc:
        if batch is not None:
            _record_rejection(batch, Rejection.of(name, exc))
        raise


def _record_rejection(batch: Batch, rejection: Rejection) -> None:
    # Locked: files of one batch arrive in parallel requests, and each must add to the list it finds.
    with transaction.atomic():
        locked = Batch.objects.select_for_update().get(pk=batch.pk)
        locked.rejected = [*locked.rejected, rejection.as_dict()]
        locked.save(update_fields=["rejected"])
    batch.rejected = locked.rejected


def _new_image(
    *,
    owner,
    item: IncomingFile,
    info: ImageInfo,
    photo: PhotoMetadata,
    sha: str,
    file_name: str,
    visibility: str,
    batch: Batch | None,
) -> Image:
    """The (unsaved) row of a checked image whose bytes are stored as `file_name`, with what its
    metadata says of when and with what it was taken."""
    return Image(
        owner=owner,
        file=file_name,
        sha256=sha,
        original_name=strip_unsafe_chars(item.name or "")[-255:],
        width=info.width,
        height=info.height,
        format=info.format,
        size=len(item.data),
        visibility=visibility,
        batch=batch,
        perceptual_hash=info.perceptual_hashes[0] if info.perceptual_hashes else None,
        taken_at=photo.taken_at,
        taken_offset=photo.taken_offset,
        camera=photo.camera,
    )
