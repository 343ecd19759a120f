"""Every write to captions' data: uploads, batches, captions, status changes, deletion.

Views, serializers, commands and worker tasks call these and stay thin. Input checks live in
captions.ingest (RejectedInput: a 4xx with a code and a message); nothing is stored for rejected input.
captions/ never imports worker/ or TensorFlow: captioning is requested with `send_task` by name.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.template.defaultfilters import pluralize
from django.utils import timezone
from rest_framework.authtoken.models import Token

from captions import thumbnails
from captions.attention import encode_attention
from captions.ingest import RejectedInput, extract_archive, fetch_url, inspect_image
from captions.ingest.errors import human_sizes
from captions.models import Batch, BatchItem, Caption, Image, ModelVersion

logger = logging.getLogger(__name__)

CAPTION_TASK = "imgcap.caption_images"
CAPTION_QUEUE = "caption"
MAX_CAPTION_CHARS = 1000
_URL_FETCH_THREADS = 8


# --- value types ------------------------------------------------------------------------------------


@dataclass
class CandidateData:
    """One caption of the model's N-best list, as the worker hands it over (best first)."""

    text: str
    score: float
    words: list[str] = field(default_factory=list)
    attention: np.ndarray | None = None


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

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "code": self.code, "message": self.message}


@dataclass(frozen=True)
class UploadResult:
    image: Image
    created: bool  # False: the owner already had these exact bytes; the existing image is returned


@dataclass(frozen=True)
class BatchResult:
    batch: Batch
    replayed: bool  # True: an earlier request with the same Idempotency-Key created it


class BatchRejected(RejectedInput):
    """No item of a batch was acceptable; `rejected` says why for each."""

    def __init__(self, code: str, message: str, *, status: int, rejected: Sequence[Rejection]) -> None:
        super().__init__(code, message, status=status)
        self.rejected = list(rejected)


class InvalidState(RejectedInput):
    """The request conflicts with the image's current state (409)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message, status=409)


# --- the queue ------------------------------------------------------------------------------------


def enqueue_captioning(image_ids: Sequence[int]) -> None:
    """Ask the workers to caption these images once the current transaction commits.

    A broker outage is logged, not raised: the images stay pending and the reaper
    (`requeue_stale`) sends them again, so an upload never fails after its data was stored.
    """
    ids = [int(i) for i in image_ids]
    if not ids:
        return

    def send() -> None:
        from imgcap_site.celery import app as celery_app

        chunk = max(1, settings.IMGCAP_BATCH_MAX)
        for start in range(0, len(ids), chunk):
            part = ids[start : start + chunk]
            try:
                celery_app.send_task(CAPTION_TASK, args=[part], queue=CAPTION_QUEUE)
            except Exception:  # noqa: BLE001 - any broker failure; the reaper recovers
                logger.exception("could not enqueue images %s; the reaper will retry", part)

    transaction.on_commit(send)


def claim_images(*, limit: int, first: Sequence[int] = ()) -> list[Image]:
    """Atomically take up to `limit` pending images for captioning (ids in `first` first, then oldest).

    Rows locked by another worker are skipped (SKIP LOCKED), so concurrent workers never share an image.
    """
    if limit <= 0:
        return []
    first_ids = [int(i) for i in first]
    with transaction.atomic():
        pending = Image.objects.select_for_update(skip_locked=True).filter(status=Image.Status.PENDING)
        ids: list[int] = []
        if first_ids:
            ids = list(
                pending.filter(id__in=first_ids)
                .order_by("created_at", "id")
                .values_list("id", flat=True)[:limit]
            )
            # Keep the order the caller asked for.
            wanted = {image_id: pos for pos, image_id in enumerate(first_ids)}
            ids.sort(key=wanted.__getitem__)
        if len(ids) < limit:
            ids += list(
                pending.exclude(id__in=ids)
                .order_by("created_at", "id")
                .values_list("id", flat=True)[: limit - len(ids)]
            )
        if not ids:
            return []
        now = timezone.now()
        Image.objects.filter(id__in=ids).update(
            status=Image.Status.PROCESSING,
            attempts=F("attempts") + 1,
            processing_started_at=now,
            updated_at=now,
            error="",
        )
        by_id = Image.objects.in_bulk(ids)
    return [by_id[i] for i in ids if i in by_id]


def ensure_model_version(*, name: str, encoder: str, metrics: dict) -> ModelVersion:
    """The ModelVersion called `name` (created if new); it becomes active if none is."""
    version, created = ModelVersion.objects.get_or_create(
        name=name, defaults={"encoder": encoder or "", "metrics": metrics or {}}
    )
    if not created and (version.encoder != (encoder or "") or version.metrics != (metrics or {})):
        version.encoder, version.metrics = encoder or "", metrics or {}
        version.save(update_fields=["encoder", "metrics"])
    if not version.active and not ModelVersion.objects.filter(active=True).exists():
        try:
            with transaction.atomic():
                ModelVersion.objects.filter(pk=version.pk).update(active=True)
            version.active = True
        except IntegrityError:
            pass  # another process activated a version at the same moment; theirs stays active
    return version


def save_model_captions(
    *, image: Image, model_version: ModelVersion, candidates: Sequence[CandidateData]
) -> None:
    """Store the N-best captions of `model_version` for `image` and mark it done (see save_batch_captions)."""
    save_batch_captions(model_version=model_version, results=[(image, candidates)])


def save_batch_captions(
    *, model_version: ModelVersion, results: Sequence[tuple[Image, Sequence[CandidateData]]]
) -> list[int]:
    """Store each image's N-best captions of `model_version` and mark the images done, in one transaction.

    One commit for a worker's whole batch rather than one per image. Replaces only that model version's
    captions (a retry never duplicates them); human captions and other versions' captions stay. Images
    deleted meanwhile are skipped. Returns the ids stored.
    """
    keep = max(1, settings.IMGCAP_N_BEST)
    wanted = {image.pk: (image, list(candidates)[:keep]) for image, candidates in results}
    if not wanted:
        return []
    with transaction.atomic():
        # In id order, so that two transactions locking overlapping images cannot deadlock.
        locked = list(
            Image.objects.select_for_update()
            .filter(pk__in=wanted)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        if not locked:
            return []
        Caption.objects.filter(
            image_id__in=locked, model_version=model_version, source=Caption.Source.MODEL
        ).delete()
        Caption.objects.bulk_create(
            [
                Caption(
                    image_id=image_id,
                    text=candidate.text,
                    score=float(candidate.score),
                    rank=rank,
                    model_version=model_version,
                    source=Caption.Source.MODEL,
                    words=list(candidate.words),
                    attention=encode_attention(candidate.attention)
                    if candidate.attention is not None
                    else None,
                )
                for image_id in locked
                for rank, candidate in enumerate(wanted[image_id][1])
            ]
        )
        now = timezone.now()
        Image.objects.filter(pk__in=locked).update(
            status=Image.Status.DONE, error="", captioned_at=now, processing_started_at=None, updated_at=now
        )
    for image_id in locked:
        image = wanted[image_id][0]
        image.status, image.error, image.captioned_at = Image.Status.DONE, "", now
    return locked


def mark_failed(*, image: Image, error: str) -> None:
    """Record that captioning `image` failed, with the reason; `retry_image` can queue it again."""
    Image.objects.filter(pk=image.pk).update(
        status=Image.Status.FAILED,
        error=error or "failed",
        processing_started_at=None,
        updated_at=timezone.now(),
    )
    image.status, image.error = Image.Status.FAILED, error or "failed"


def requeue_stale(*, older_than_s: int) -> list[int]:
    """Re-queue images stuck in processing (a killed worker) or pending (a lost message) for too long.

    Images that already had IMGCAP_MAX_ATTEMPTS tries are marked failed instead. Returns the requeued ids.
    """
    now = timezone.now()
    cutoff = now - timedelta(seconds=older_than_s)
    max_attempts = settings.IMGCAP_MAX_ATTEMPTS
    stale = Q(status=Image.Status.PROCESSING, processing_started_at__lt=cutoff) | Q(
        status=Image.Status.PENDING, updated_at__lt=cutoff
    )
    with transaction.atomic():
        rows = list(
            Image.objects.select_for_update(skip_locked=True)
            .filter(stale)
            .order_by("created_at", "id")
            .values_list("id", "attempts")
        )
        give_up = [image_id for image_id, attempts in rows if attempts >= max_attempts]
        requeue = [image_id for image_id, attempts in rows if attempts < max_attempts]
        if give_up:
            Image.objects.filter(id__in=give_up).update(
                status=Image.Status.FAILED,
                error=f"gave up after {max_attempts} attempts",
                processing_started_at=None,
                updated_at=now,
            )
        if requeue:
            Image.objects.filter(id__in=requeue).update(
                status=Image.Status.PENDING, processing_started_at=None, updated_at=now
            )
            enqueue_captioning(requeue)
    if give_up or requeue:
        logger.info(
            "reaper: requeued %d stale image%s, gave up on %d",
            len(requeue),
            pluralize(len(requeue)),
            len(give_up),
        )
    return requeue


# --- uploads ----------------------------------------------------------------------------------------


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
    *, owner, data: bytes, name: str, visibility: str = Image.Visibility.PRIVATE, batch: Batch | None = None
) -> UploadResult:
    """Check, store and queue one image. The same bytes from the same owner return the existing image
    (not queued again). Raises RejectedInput (nothing stored) for anything that is not an acceptable image.

    With `batch` (one of the owner's), the image joins it as its next item, and a rejection is listed in
    the batch's `rejected` as a batch's own bad items are: files sent one by one still make one batch.
    """
    _check_visibility(visibility)
    item = IncomingFile(name=name, data=data)
    with _rejections_listed_in(batch, name):
        info = _inspect(item)
    position = BatchItem.objects.filter(batch=batch).count() if batch is not None else 0
    with _cleanup_new_files_on_error() as new_files:
        result = _store_image(
            owner=owner,
            item=item,
            info=info,
            visibility=visibility,
            batch=batch,
            position=position,
            new_files=new_files,
        )
    if result.created:
        enqueue_captioning([result.image.pk])
    return result


def upload_file(
    *, owner, uploaded: UploadedFile, visibility: str = Image.Visibility.PRIVATE, batch: Batch | None = None
) -> UploadResult:
    """`upload_image` for a file of a request (read_upload first); with `batch`, an oversized file is
    listed in its `rejected` too."""
    with _rejections_listed_in(batch, uploaded.name or "upload"):
        incoming = read_upload(uploaded)
    return upload_image(
        owner=owner, data=incoming.data, name=incoming.name, visibility=visibility, batch=batch
    )


def create_batch(
    *,
    owner,
    files: Sequence[IncomingFile | UploadedFile] = (),
    archives: Sequence[IncomingFile | UploadedFile] = (),
    urls: Sequence[str] = (),
    visibility: str = Image.Visibility.PRIVATE,
    idempotency_key: str | None = None,
) -> BatchResult:
    """Create a batch from uploaded files, zip archives and/or URLs, and queue its new images.

    Bad items are refused one by one (listed in `batch.rejected`) while the good ones are accepted;
    if none is acceptable, BatchRejected (4xx) and nothing is stored. A repeated `idempotency_key` from
    the same owner returns the batch the first request created, without storing or queueing anything.
    """
    _check_visibility(visibility)
    key = (idempotency_key or "").strip()[:255] or None
    if key:
        existing = Batch.objects.filter(owner=owner, idempotency_key=key).first()
        if existing is not None:
            return BatchResult(batch=existing, replayed=True)

    limit = settings.IMGCAP_MAX_BATCH_FILES
    if len(files) + len(urls) > limit:
        raise _too_many(len(files) + len(urls), limit)
    rejected: list[Rejection] = []
    items: list[IncomingFile] = []
    for file in files:
        try:
            items.append(file if isinstance(file, IncomingFile) else read_upload(file))
        except RejectedInput as exc:
            rejected.append(Rejection(file.name or "upload", exc.code, exc.message, exc.status))
    for archive in archives:
        if not isinstance(archive, IncomingFile):
            archive = read_upload(archive, limit=settings.IMGCAP_ARCHIVE_MAX_BYTES)
        items += _extract(archive)
    if len(items) + len(rejected) + len(urls) > limit:
        raise _too_many(len(items) + len(rejected) + len(urls), limit)
    if not items and not urls and not rejected:
        raise RejectedInput(
            "no_images",
            'send images (multipart field "images"), a zip archive (field "archive") or JSON {"urls": [...]}',
        )

    fetched, url_rejections = _fetch_all(urls)
    rejected += url_rejections
    accepted: list[tuple[IncomingFile, object]] = []
    for item in [*items, *fetched]:
        try:
            accepted.append((item, _inspect(item)))
        except RejectedInput as exc:
            rejected.append(Rejection(item.name, exc.code, exc.message, exc.status))
    if not accepted:
        raise _nothing_acceptable(rejected)

    try:
        with _cleanup_new_files_on_error() as new_files, transaction.atomic():
            batch = Batch.objects.create(
                owner=owner, idempotency_key=key, rejected=[r.as_dict() for r in rejected]
            )
            new_ids = _store_batch_images(
                owner=owner, batch=batch, accepted=accepted, visibility=visibility, new_files=new_files
            )
            # One call for the whole batch: messages of IMGCAP_BATCH_MAX ids, not one per image.
            enqueue_captioning(new_ids)
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
    _check_visibility(visibility)
    batch = Batch.objects.create(owner=owner)
    rejected: list[Rejection] = []
    accepted = 0
    # New ids are queued a full message (IMGCAP_BATCH_MAX ids) at a time, so the workers start on a big
    # folder while it is still being read.
    new_ids: list[int] = []
    chunk = max(1, settings.IMGCAP_BATCH_MAX)
    for position, path in enumerate(paths):
        name = str(path.relative_to(root)) if root is not None else path.name
        try:
            info = _inspect(IncomingFile(name, data := path.read_bytes()))
            with _cleanup_new_files_on_error() as new_files, transaction.atomic():
                stored = _store_image(
                    owner=owner,
                    item=IncomingFile(name, data),
                    info=info,
                    visibility=visibility,
                    batch=batch,
                    position=position,
                    new_files=new_files,
                )
            accepted += 1
            if stored.created:
                new_ids.append(stored.image.pk)
            if len(new_ids) >= chunk:
                enqueue_captioning(new_ids)
                new_ids = []
        except RejectedInput as exc:
            rejected.append(Rejection(name, exc.code, exc.message, exc.status))
        except OSError as exc:
            rejected.append(Rejection(name, "unreadable", f"{name}: {exc.strerror or exc}", 400))
    enqueue_captioning(new_ids)
    if not accepted:
        batch.delete()
        raise _nothing_acceptable(rejected) if rejected else RejectedInput("no_images", "no files found")
    batch.rejected = [r.as_dict() for r in rejected]
    batch.save(update_fields=["rejected"])
    return BatchResult(batch=batch, replayed=False)


def _too_many(count: int, limit: int) -> RejectedInput:
    return RejectedInput("too_many_files", f"a batch takes at most {limit} images; got {count}", status=413)


def _check_visibility(visibility: str) -> None:
    if visibility not in Image.Visibility.values:
        raise RejectedInput(
            "bad_visibility",
            f"visibility must be one of {', '.join(Image.Visibility.values)}; got {visibility!r}",
        )


def _inspect(item: IncomingFile):
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


def _fetch_all(urls: Sequence[str]) -> tuple[list[IncomingFile], list[Rejection]]:
    """Download the URLs a few at a time; each failure becomes that URL's rejection."""
    if not urls:
        return [], []

    def fetch(url: str) -> IncomingFile | Rejection:
        try:
            got = fetch_url(
                str(url),
                timeout=settings.IMGCAP_URL_TIMEOUT_S,
                max_bytes=settings.IMGCAP_MAX_UPLOAD_BYTES,
                max_redirects=settings.IMGCAP_URL_MAX_REDIRECTS,
                allow_private=settings.IMGCAP_URL_ALLOW_PRIVATE,
            )
        except RejectedInput as exc:
            return Rejection(str(url), exc.code, exc.message, exc.status)
        return IncomingFile(name=got.name or str(url), data=got.data)

    with ThreadPoolExecutor(max_workers=min(_URL_FETCH_THREADS, len(urls))) as pool:
        results = list(pool.map(fetch, urls))
    return [r for r in results if isinstance(r, IncomingFile)], [
        r for r in results if isinstance(r, Rejection)
    ]


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


def _store_image(
    *,
    owner,
    item: IncomingFile,
    info,
    visibility: str,
    batch: Batch | None,
    position: int,
    new_files: list[str],
) -> UploadResult:
    """Store one checked image (or find the owner's copy of the same bytes). Queuing new images is the
    caller's: batches queue theirs together."""
    sha = hashlib.sha256(item.data).hexdigest()
    existing = Image.objects.filter(owner=owner, sha256=sha).first()
    if existing is None:
        file_name = _store_file(sha, info.extension, item.data, new_files)
        image = _new_image(
            owner=owner,
            item=item,
            info=info,
            sha=sha,
            file_name=file_name,
            visibility=visibility,
            batch=batch,
        )
        try:
            with transaction.atomic():
                image.save(force_insert=True)
        except IntegrityError:
            # The same owner uploaded the same bytes concurrently; theirs is the image.
            existing = Image.objects.get(owner=owner, sha256=sha)
        else:
            if batch is not None:
                _add_to_batch(batch, image, position=position, duplicate=False, name=item.name)
            return UploadResult(image=image, created=True)
    if batch is not None:
        _add_to_batch(batch, existing, position=position, duplicate=True, name=item.name)
    return UploadResult(image=existing, created=False)


@contextmanager
def _rejections_listed_in(batch: Batch | None, name: str) -> Iterator[None]:
    """A RejectedInput raised inside is added to `batch.rejected` (when there is a batch), then re-raised."""
    try:
        yield
    except RejectedInput as exc:
        if batch is not None:
            _record_rejection(
                batch, Rejection(name=name, code=exc.code, message=exc.message, status=exc.status)
            )
        raise


def _record_rejection(batch: Batch, rejection: Rejection) -> None:
    # Locked: files of one batch arrive in parallel requests, and each must add to the list it finds.
    with transaction.atomic():
        locked = Batch.objects.select_for_update().get(pk=batch.pk)
        locked.rejected = [*locked.rejected, rejection.as_dict()]
        locked.save(update_fields=["rejected"])
    batch.rejected = locked.rejected


def _store_batch_images(
    *,
    owner,
    batch: Batch,
    accepted: Sequence[tuple[IncomingFile, object]],
    visibility: str,
    new_files: list[str],
) -> list[int]:
    """Store a batch's checked images, and its items, with a few statements for the whole batch (not
    several per image). Bytes the owner already has become duplicate items; bytes sent twice in one batch
    are one item. Returns the ids of the new images, to queue."""
    hashes = [hashlib.sha256(item.data).hexdigest() for item, _ in accepted]
    known = dict(Image.objects.filter(owner=owner, sha256__in=set(hashes)).values_list("sha256", "pk"))
    fresh: dict[str, Image] = {}
    for (item, info), sha in zip(accepted, hashes, strict=True):
        if sha not in known and sha not in fresh:
            file_name = _store_file(sha, info.extension, item.data, new_files)
            fresh[sha] = _new_image(
                owner=owner,
                item=item,
                info=info,
                sha=sha,
                file_name=file_name,
                visibility=visibility,
                batch=batch,
            )
    try:
        with transaction.atomic():
            created = {image.sha256: image.pk for image in Image.objects.bulk_create(list(fresh.values()))}
    except IntegrityError:
        # The owner uploaded some of these bytes in another request meanwhile: theirs are those images.
        created = {}
        for sha, image in fresh.items():
            try:
                with transaction.atomic():
                    image.save(force_insert=True)
                created[sha] = image.pk
            except IntegrityError:
                known[sha] = Image.objects.get(owner=owner, sha256=sha).pk
    ids = {**known, **created}
    items: dict[int, BatchItem] = {}
    for position, ((item, _), sha) in enumerate(zip(accepted, hashes, strict=True)):
        if ids[sha] not in items:
            duplicate = sha in known
            items[ids[sha]] = BatchItem(
                batch=batch, image_id=ids[sha], position=position, duplicate=duplicate, name=item.name[-255:]
            )
    BatchItem.objects.bulk_create(list(items.values()))
    return list(created.values())


def _add_to_batch(batch: Batch, image: Image, *, position: int, duplicate: bool, name: str) -> None:
    BatchItem.objects.get_or_create(
        batch=batch, image=image, defaults={"position": position, "duplicate": duplicate, "name": name[-255:]}
    )


def _new_image(
    *, owner, item: IncomingFile, info, sha: str, file_name: str, visibility: str, batch: Batch | None
) -> Image:
    """The (unsaved) row of a checked image whose bytes are stored as `file_name`."""
    return Image(
        owner=owner,
        file=file_name,
        sha256=sha,
        original_name=(item.name or "")[-255:],
        width=info.width,
        height=info.height,
        format=info.format,
        size=len(item.data),
        visibility=visibility,
        batch=batch,
    )


def _store_file(sha: str, extension: str, data: bytes, new_files: list[str]) -> str:
    """Write the bytes under their hash (images/ab/abcdef….jpg) unless that file already exists."""
    name = f"images/{sha[:2]}/{sha}.{extension.lstrip('.').lower() or 'bin'}"
    if default_storage.exists(name):
        return name
    saved = default_storage.save(name, ContentFile(data))
    new_files.append(saved)
    return saved


@contextmanager
def _cleanup_new_files_on_error() -> Iterator[list[str]]:
    """Files written inside the block are removed again if it fails (the rows were rolled back)."""
    new_files: list[str] = []
    try:
        yield new_files
    except BaseException:
        for name in new_files:
            _delete_file_if_unused(name)
        raise


def _delete_file_if_unused(name: str) -> None:
    if name and not Image.objects.filter(file=name).exists():
        try:
            default_storage.delete(name)
        except OSError:
            logger.warning("could not delete media file %s", name, exc_info=True)
        thumbnails.delete_thumbnails(Path(name).stem)  # files are named by their SHA-256 (_store_file)


# --- changes people make ------------------------------------------------------------------------------


def add_human_caption(*, image: Image, text: str, author=None) -> Caption:
    """Record a person's caption; it becomes the image's best caption. Model captions are kept."""
    clean = " ".join((text or "").split())
    if not clean:
        raise RejectedInput("empty_caption", "the caption is empty")
    if len(clean) > MAX_CAPTION_CHARS:
        raise RejectedInput("caption_too_long", f"a caption has at most {MAX_CAPTION_CHARS} characters")
    caption = Caption.objects.create(
        image=image,
        text=clean,
        score=None,
        rank=0,
        model_version=None,
        source=Caption.Source.HUMAN,
        author=author,
    )
    Image.objects.filter(pk=image.pk).update(updated_at=timezone.now())
    return caption


def add_human_captions(*, rows: Iterable[tuple[Image, str]], author=None) -> int:
    """`add_human_caption` in bulk (dataset imports); skips exact duplicates. Returns how many were added."""
    have: dict[int, set[str]] = {}
    new: list[Caption] = []
    for image, text in rows:
        clean = " ".join((text or "").split())[:MAX_CAPTION_CHARS]
        if not clean:
            continue
        if image.pk not in have:
            have[image.pk] = set(
                Caption.objects.filter(image=image, source=Caption.Source.HUMAN).values_list(
                    "text", flat=True
                )
            )
        if clean in have[image.pk]:
            continue
        have[image.pk].add(clean)
        new.append(Caption(image=image, text=clean, rank=0, source=Caption.Source.HUMAN, author=author))
    Caption.objects.bulk_create(new, batch_size=1000)
    return len(new)


def recaption_image(*, image: Image) -> Image:
    """Queue the image again so the workers' current model captions it; existing captions are kept."""
    with transaction.atomic():
        locked = Image.objects.select_for_update().get(pk=image.pk)
        if locked.status in (Image.Status.PENDING, Image.Status.PROCESSING):
            raise InvalidState("already_queued", f"image {locked.pk} is already {locked.status}")
        _set_pending([locked.pk])
    image.refresh_from_db()
    return image


def retry_image(*, image: Image) -> Image:
    """Queue a failed image again, with a fresh count of attempts."""
    with transaction.atomic():
        locked = Image.objects.select_for_update().get(pk=image.pk)
        if locked.status != Image.Status.FAILED:
            raise InvalidState(
                "not_failed", f"only failed images can be retried; image {locked.pk} is {locked.status}"
            )
        _set_pending([locked.pk])
    image.refresh_from_db()
    return image


def requeue_images(*, images) -> list[int]:
    """Queue finished (done or failed) images of a queryset again; for `recaption_all`. Returns their ids."""
    with transaction.atomic():
        ids = list(
            images.select_for_update()
            .filter(status__in=[Image.Status.DONE, Image.Status.FAILED])
            .order_by("id")
            .values_list("id", flat=True)
        )
        _set_pending(ids)
    return ids


def _set_pending(ids: Sequence[int]) -> None:
    if not ids:
        return
    Image.objects.filter(id__in=ids).update(
        status=Image.Status.PENDING,
        error="",
        attempts=0,
        processing_started_at=None,
        updated_at=timezone.now(),
    )
    enqueue_captioning(ids)


def delete_image(*, image: Image) -> None:
    """Delete the image and its captions; its file goes too unless another image row uses the same bytes."""
    name = image.file.name
    with transaction.atomic():
        image.delete()
        transaction.on_commit(lambda: _delete_file_if_unused(name))


def set_visibility(*, image: Image, visibility: str) -> Image:
    _check_visibility(visibility)
    if image.visibility != visibility:
        image.visibility = visibility
        image.save(update_fields=["visibility", "updated_at"])
    return image


def set_active_model(*, model_version: ModelVersion) -> ModelVersion:
    """Make this version's captions the ones shown as best (the workers' model dir decides what runs)."""
    with transaction.atomic():
        ModelVersion.objects.filter(active=True).exclude(pk=model_version.pk).update(active=False)
        ModelVersion.objects.filter(pk=model_version.pk).update(active=True)
    model_version.active = True
    return model_version


def regenerate_api_token(*, user) -> Token:
    """Give `user` a new REST API token; the old one (if any) stops working at once."""
    with transaction.atomic():
        Token.objects.filter(user=user).delete()
        return Token.objects.create(user=user)
