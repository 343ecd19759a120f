"""One upload run: hash the files, ask the server which it has, send the others into one batch.

The first file sent opens the batch (`POST /api/v1/batches/`, one file in `images`) and every other
joins it (`POST /api/v1/images/` with `batch=ID`), as the web upload page does: each file has its own
request (its own retries and its own refusal) and the run still has one batch page and export.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgcap_client.api import ApiError, Client, FilePart, UnreachableError
from imgcap_client.progress import Progress
from imgcap_client.scan import sha256_of

# Digests per lookup. The server takes 200, but 200 digests make a 13 KB request line, and gunicorn
# (over 4094 bytes) and nginx (over 8 KiB) answer 414 by default; 50 fit in about 3.3 KB.
DIGESTS_PER_LOOKUP = 50
LOST_CONNECTION_LIMIT = 3  # files in a row that found no server: it is gone, stop sending


class FatalError(Exception):
    """The run cannot go on (refused token, no server, unsupported option): exit status 2."""


@dataclass
class FileResult:
    path: Path
    outcome: str  # uploaded, already (on the server), copy (same bytes as another file), failed, not_sent
    sha256: str = ""
    image_id: int | None = None
    message: str = ""
    size: int = 0  # bytes sent


@dataclass
class Report:
    results: list[FileResult] = field(default_factory=list)
    batch_id: int | None = None
    batch_page: str | None = None
    fatal: str | None = None  # why the run stopped early
    album: str | None = None  # the album's name (--album)
    album_created: bool = False

    def count(self, outcome: str) -> int:
        return sum(r.outcome == outcome for r in self.results)

    def of(self, outcome: str) -> list[FileResult]:
        return [r for r in self.results if r.outcome == outcome]


def check_server(client: Client) -> None:
    """That the server answers, is an imgcap, and takes the token; FatalError otherwise."""
    try:
        answer = client.get("images/", {"owner": "me", "page_size": "1"})
    except UnreachableError as error:
        raise FatalError(str(error)) from None
    except ApiError as error:
        if error.token_refused:
            raise FatalError(f"the token was refused by {client.server}: {error.message}") from None
        raise FatalError(f"{client.server} does not look like an imgcap server: {error}") from None
    if not isinstance(answer.data, dict) or "results" not in answer.data:
        raise FatalError(f"{client.server} does not look like an imgcap server (GET /api/v1/images/)")


def find_album(client: Client, name: str, *, create: bool = True) -> tuple[int | None, bool]:
    """The id of the token owner's album called `name` and whether this call made it (`create`: make it
    when there is none; else None). FatalError when the server has no albums or refuses the name."""
    try:
        for attempt in range(2):
            found = client.get("albums/", {"name": name}).data.get("results", [])
            if found:
                return found[0]["id"], False
            if not create:
                return None, False
            try:
                return client.post_json("albums/", {"name": name}).data["id"], True
            except ApiError as error:
                if error.status != 409 or attempt:  # 409: made meanwhile by another run; look again
                    raise
    except ApiError as error:
        if error.status in (404, 405):
            raise FatalError(f"albums are not supported by this server ({client.server})") from None
        raise FatalError(f"cannot use the album {name!r}: {error.message} ({error.code})") from None
    except UnreachableError as error:
        raise FatalError(str(error)) from None
    raise FatalError(f"cannot find or make the album {name!r}")


# Image ids per request to put already-uploaded files in the album (the server takes 500).
ALBUM_IDS_PER_REQUEST = 500


def add_to_album(client: Client, album_id: int, image_ids: Sequence[int]) -> int:
    """Put images (the owner's, e.g. files a resumed run found on the server) in the album; how many
    were not in it yet."""
    added = 0
    ids = sorted(set(image_ids))
    for start in range(0, len(ids), ALBUM_IDS_PER_REQUEST):
        chunk = ids[start : start + ALBUM_IDS_PER_REQUEST]
        try:
            added += client.post_json(f"albums/{album_id}/images/", {"add": chunk}).data["added"]
        except ApiError as error:
            raise FatalError(f"cannot add images to the album: {error.message} ({error.code})") from None
        except UnreachableError as error:
            raise FatalError(str(error)) from None
    return added


def hash_files(paths: Sequence[Path], concurrency: int, progress: Progress) -> dict[Path, str | OSError]:
    """Each file's SHA-256 (or the OSError that kept it from being read)."""

    def digest(path: Path) -> str | OSError:
        try:
            return sha256_of(path)
        except OSError as error:
            return error

    progress.start("hashing", len(paths))
    found: dict[Path, str | OSError] = {}
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = {pool.submit(digest, path): path for path in paths}
        try:
            for future in as_completed(futures):
                found[futures[future]] = future.result()
                progress.step()
        except BaseException:  # Ctrl-C: do not hash the thousands of files still queued first
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return found


def known_digests(client: Client, digests: Sequence[str], progress: Progress) -> dict[str, int]:
    """Which of `digests` the token's owner already has on the server (the `sha256` filter): digest →
    image id."""
    known: dict[str, int] = {}
    for start in range(0, len(digests), DIGESTS_PER_LOOKUP):
        asked = digests[start : start + DIGESTS_PER_LOOKUP]
        try:
            answer = client.get("images/", {"sha256": ",".join(asked), "page_size": "200"})
        except ApiError as error:
            if error.token_refused:
                raise FatalError(f"the token was refused by {client.server}: {error.message}") from None
            raise FatalError(f"cannot ask the server which files it has: {error}") from None
        except UnreachableError as error:
            raise FatalError(str(error)) from None
        found = {image.get("sha256"): image.get("id") for image in answer.data.get("results", [])}
        if not set(found) <= set(asked):
            # An older server ignores the filter and lists other images: it cannot tell. Every file is
            # sent, and the server still keeps one image per content (answering "duplicate").
            progress.note("this server cannot tell which files it has (no sha256 filter): sending them all")
            return {}
        known |= found
    return known


class BatchSender:
    """Sends files into one batch: opened by the first file the server accepts, joined by the rest."""

    def __init__(self, client: Client, visibility: str, album_id: int | None = None) -> None:
        self.client = client
        self.visibility = visibility
        # Every file sent goes into the album, a duplicate too (the server puts it there).
        self.fields = {"visibility": visibility} | ({"album": str(album_id)} if album_id is not None else {})
        self.lock = threading.Lock()
        self.batch_id: int | None = None
        self.batch_page: str | None = None
        self.run_key = uuid.uuid4().hex
        self.opens = 0

    def send(self, name: str, data: bytes) -> tuple[dict[str, Any], bool, bool]:
        """(the image, whether the server already had it, whether a retry was needed)."""
        if self.batch_id is None:
            # Until a batch exists, one file at a time tries to open it; the others wait, then join it
            # (or open it themselves when that file was refused).
            with self.lock:
                if self.batch_id is None:
                    return self._open(name, data)
        answer = self.client.post_files(
            "images/",
            {**self.fields, "batch": str(self.batch_id)},
            [FilePart("image", name, data)],
        )
        return answer.data, bool(answer.data.get("duplicate")), answer.retried

    def _open(self, name: str, data: bytes) -> tuple[dict[str, Any], bool, bool]:
        self.opens += 1
        # A retried request (a lost answer) gets the batch the first attempt made, not a second one.
        key = f"imgcap-upload-{self.run_key}-{self.opens}"
        answer = self.client.post_files(
            "batches/",
            self.fields,
            [FilePart("images", name, data)],
            headers={"Idempotency-Key": key},
        )
        batch = answer.data
        if not batch.get("items"):  # refused (a 202 lists it in `rejected`): no batch for the others
            rejected = (batch.get("rejected") or [{}])[0]
            raise ApiError(
                answer.status, rejected.get("code", "rejected"), rejected.get("message", "refused")
            )
        self.batch_id = batch["id"]
        self.batch_page = (batch.get("urls") or {}).get("page")
        item = batch["items"][0]
        return item, bool(item.get("duplicate")), answer.retried


def upload_files(
    client: Client,
    todo: Sequence[tuple[Path, str]],
    *,
    visibility: str,
    concurrency: int,
    progress: Progress,
    display: Callable[[Path], str] = str,
    album_id: int | None = None,
) -> tuple[list[FileResult], BatchSender, str | None]:
    """Send each (path, sha256) into one batch (and the album `album_id`), `concurrency` at a time. The
    results, the batch, and why the run stopped early (a refused token, a server gone), if it did."""
    sender = BatchSender(client, visibility, album_id)
    stop = threading.Event()
    why: list[str] = []
    lost = [0]  # files in a row whose upload found no server
    lock = threading.Lock()

    def give_up(reason: str) -> None:
        with lock:
            if not why:
                why.append(reason)
        stop.set()

    def one(path: Path, sha: str) -> FileResult:
        if stop.is_set():
            return FileResult(path, "not_sent", sha, message="not sent: the run stopped")
        try:
            data = path.read_bytes()
        except OSError as error:
            return FileResult(path, "failed", sha, message=f"cannot read it: {error}")
        try:
            image, duplicate, retried = sender.send(path.name, data)
        except ApiError as error:
            if error.token_refused:
                give_up(f"the token was refused by {client.server}: {error.message}")
                return FileResult(path, "not_sent", sha, message=error.message)
            return FileResult(path, "failed", sha, message=f"{error.message} ({error.code})")
        except UnreachableError as error:
            with lock:
                lost[0] += 1
                gone = lost[0] >= LOST_CONNECTION_LIMIT
            if gone:
                give_up(f"lost the connection to {client.server}")
            return FileResult(path, "failed", sha, message=str(error))
        with lock:
            lost[0] = 0
        # Stored by an attempt whose answer was lost: the retry finds it "already there", but this run
        # uploaded it.
        outcome = "already" if duplicate and not retried else "uploaded"
        return FileResult(path, outcome, sha, image_id=image.get("id"), size=len(data))

    results: list[FileResult] = []
    if not todo:
        return results, sender, None
    progress.start("uploading", len(todo))
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = [pool.submit(one, path, sha) for path, sha in todo]
        try:
            for future in as_completed(futures):
                result = future.result()
                results.append(result)
                shown = result.outcome if result.outcome in ("uploaded", "already", "failed") else None
                progress.step(shown, display(result.path), result.message, result.size)
        except BaseException:  # Ctrl-C: the uploads under way finish, the others are not started
            stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return results, sender, (why[0] if why else None)
