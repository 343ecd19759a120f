"""Unpack an uploaded ZIP of images in memory, refusing anything that could hurt the server.

Nothing is written to disk: members come back as bytes and each is then checked by `inspect_image`.
Any unsafe sign rejects the whole archive, so a bad upload never stores half of itself.
"""

from __future__ import annotations

import io
import re
import stat
import zipfile

from .errors import RejectedInput, human_bytes, human_sizes, label

NESTED_EXTENSIONS = (
    ".zip", ".tar", ".gz", ".tgz", ".bz2", ".tbz", ".tbz2", ".xz", ".txz", ".7z", ".rar",
    ".zst", ".lz", ".lzma", ".z", ".cab", ".jar", ".cpio", ".iso",
)  # fmt: skip
# (offset, signature) of archive and compressed-stream formats.
NESTED_MAGIC: tuple[tuple[int, bytes], ...] = (
    (0, b"PK\x03\x04"),
    (0, b"PK\x05\x06"),
    (0, b"PK\x07\x08"),
    (0, b"\x1f\x8b"),  # gzip
    (0, b"BZh"),  # bzip2
    (0, b"\xfd7zXZ\x00"),  # xz
    (0, b"7z\xbc\xaf\x27\x1c"),  # 7-Zip
    (0, b"Rar!\x1a\x07"),  # RAR
    (0, b"\x28\xb5\x2f\xfd"),  # zstd
    (0, b"MSCF"),  # cabinet
    (0, b"LZIP"),
    (257, b"ustar"),  # tar
)
_MAGIC_BYTES = max(offset + len(sig) for offset, sig in NESTED_MAGIC)
JUNK_DIRS = {"__MACOSX"}
JUNK_FILES = {".ds_store", "thumbs.db", "desktop.ini"}


def is_os_junk(path: str) -> bool:
    """OS clutter that is never a photo, in an archive or a folder: `__MACOSX/…`, `.DS_Store`,
    `Thumbs.db`, `desktop.ini`, AppleDouble `._*` files (`path` with / separators)."""
    parts = path.split("/")
    base = parts[-1]
    return bool(JUNK_DIRS.intersection(parts[:-1])) or base.lower() in JUNK_FILES or base.startswith("._")


# Below this a member cannot be a bomb worth the name (the total cap bounds many of them), and flat
# images such as a one-colour BMP legitimately compress far better than `max_ratio`.
RATIO_FLOOR_BYTES = 1 << 20
_CHUNK = 1 << 16
_DRIVE = re.compile(r"^[A-Za-z]:")
# Control characters, and the bidirectional controls that make "gpj.exe" of "exe.jpg" on screen
# (U+202E RIGHT-TO-LEFT OVERRIDE and its kin): never kept in a file name.
_UNSAFE_NAME_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def strip_unsafe_chars(name: str) -> str:
    """`name` without control or bidirectional-control characters."""
    return _UNSAFE_NAME_CHARS.sub("", name)


def extract_archive(
    data: bytes,
    *,
    max_files: int,
    max_total_bytes: int,
    max_ratio: float,
    max_member_bytes: int,
    name: str = "",
) -> list[tuple[str, bytes]]:
    """Return the (file name, bytes) of every file in the ZIP `data`, or raise RejectedInput.

    Directories and OS clutter (`__MACOSX/`, `.DS_Store`, `Thumbs.db`, `._*`) are skipped. The whole
    archive is refused for: not a ZIP; no files; more than `max_files` files; a nested archive (by
    name or by content); absolute, `..`, backslash or drive-letter paths; symlink entries; encrypted
    entries; a member over `max_member_bytes` or a total over `max_total_bytes`; a member or the
    archive expanding more than `max_ratio` times (zip bombs). Sizes and ratios are checked from the
    headers first and again while decompressing, since headers can lie. Returned names are base names.
    """
    who = label(name, "archive")
    archive = _open_zip(data, who)
    with archive:
        infos = archive.infolist()
        # Bound the work before looking at each entry; junk entries can double a real count (macOS).
        if len(infos) > 4 * max_files + 64:
            raise _too_many(who, len(infos), max_files)
        for info in infos:
            _check_entry(info, who)
        members = [info for info in infos if not _skipped(info)]
        if not members:
            raise RejectedInput("archive_empty", f"{who}: the archive holds no files", status=422)
        if len(members) > max_files:
            raise _too_many(who, len(members), max_files)
        for info in members:
            if info.filename.lower().endswith(NESTED_EXTENSIONS):
                raise _nested(who, info.filename)
        _check_declared_sizes(
            who,
            data,
            infos,
            members,
            max_total_bytes=max_total_bytes,
            max_ratio=max_ratio,
            max_member_bytes=max_member_bytes,
        )
        out: list[tuple[str, bytes]] = []
        total = 0
        for info in members:
            content = _read_member(
                archive,
                info,
                who,
                already=total,
                max_total_bytes=max_total_bytes,
                max_member_bytes=max_member_bytes,
                max_ratio=max_ratio,
            )
            total += len(content)
            out.append((safe_member_name(info.filename), content))
    return out


def safe_member_name(path: str) -> str:
    """The base name of a member path, without control characters, at most 200 characters."""
    base = strip_unsafe_chars(path.rstrip("/").rsplit("/", 1)[-1]).strip()
    if len(base) > 200:
        stem, dot, ext = base.rpartition(".")
        base = (stem[: 200 - len(ext) - 1] + dot + ext) if dot and len(ext) <= 10 else base[:200]
    return base or "file"


def _open_zip(data: bytes, who: str) -> zipfile.ZipFile:
    if not data:
        raise RejectedInput("archive_invalid", f"{who}: the file is empty", status=400)
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        if data.startswith(b"PK"):
            raise RejectedInput(
                "archive_invalid", f"{who}: the ZIP archive is damaged and cannot be read ({exc})", status=422
            ) from None
        kind = _archive_kind(data)
        what = f"this looks like {kind}" if kind else "this is not a ZIP archive"
        raise RejectedInput(
            "archive_invalid", f"{who}: only ZIP archives are accepted; {what}", status=415
        ) from None
    except (zipfile.LargeZipFile, ValueError, OSError, EOFError, NotImplementedError) as exc:
        raise RejectedInput(
            "archive_invalid", f"{who}: the ZIP archive cannot be read ({exc})", status=422
        ) from None


def _check_entry(info: zipfile.ZipInfo, who: str) -> None:
    for path in {info.filename, info.orig_filename}:
        problem = _path_problem(path)
        if problem:
            raise RejectedInput(
                "archive_unsafe_path",
                f"{who}: entry {path!r} has {problem}; the archive was refused",
                status=422,
            )
    # Unix mode bits live in the high 16 bits of external_attr (zero for archives made on Windows).
    if stat.S_ISLNK(info.external_attr >> 16):
        raise RejectedInput(
            "archive_unsafe_path",
            f"{who}: entry {info.filename!r} is a symbolic link; the archive was refused",
            status=422,
        )
    if info.flag_bits & 0x1:
        raise RejectedInput(
            "archive_encrypted",
            f"{who}: entry {info.filename!r} is encrypted; upload an archive without a password",
            status=422,
        )


def _path_problem(path: str) -> str | None:
    if "\x00" in path:
        return "a NUL byte in its name"
    if path.startswith("/"):
        return "an absolute path"
    if "\\" in path:
        return "a backslash in its path"
    if _DRIVE.match(path):
        return "a drive-letter path"
    if ".." in path.split("/"):
        return "a '..' path segment"
    return None


def _skipped(info: zipfile.ZipInfo) -> bool:
    return info.is_dir() or is_os_junk(info.filename)


def _check_declared_sizes(
    who: str,
    data: bytes,
    infos: list[zipfile.ZipInfo],
    members: list[zipfile.ZipInfo],
    *,
    max_total_bytes: int,
    max_ratio: float,
    max_member_bytes: int,
) -> None:
    # Entries whose compressed data add up to more than the file must share (overlap) their data:
    # the trick of the "better zip bomb", which multiplies one compressed kernel many times.
    if sum(info.compress_size for info in infos) > len(data):
        raise RejectedInput(
            "archive_bomb",
            f"{who}: entries overlap each other (a zip bomb); the archive was refused",
            status=413,
        )
    for info in members:
        if info.file_size > max_member_bytes:
            raise _member_too_large(who, info.filename, info.file_size, max_member_bytes)
        _check_ratio(who, info, info.file_size, max_ratio)
    total = sum(info.file_size for info in members)
    if total > max_total_bytes:
        raise _total_too_large(who, total, max_total_bytes)
    if total > RATIO_FLOOR_BYTES and total / len(data) > max_ratio:
        raise RejectedInput(
            "archive_bomb",
            f"{who}: expands {total / len(data):,.0f} times "
            f"({human_bytes(len(data))} to {human_bytes(total)}); the limit is {max_ratio:g} times",
            status=413,
        )


def _check_ratio(who: str, info: zipfile.ZipInfo, produced: int, max_ratio: float) -> None:
    if produced > RATIO_FLOOR_BYTES and produced / max(info.compress_size, 1) > max_ratio:
        raise RejectedInput(
            "archive_bomb",
            f"{who}: entry {info.filename!r} expands {produced / max(info.compress_size, 1):,.0f} times "
            f"(a zip bomb?); the limit is {max_ratio:g} times",
            status=413,
        )


def _read_member(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    who: str,
    *,
    already: int,
    max_total_bytes: int,
    max_member_bytes: int,
    max_ratio: float,
) -> bytes:
    """Decompress one member in chunks, enforcing the limits on what actually comes out."""
    buf = bytearray()
    try:
        with archive.open(info) as stream:
            while chunk := stream.read(_CHUNK):
                buf += chunk
                if len(buf) > max_member_bytes:
                    raise _member_too_large(who, info.filename, len(buf), max_member_bytes)
                if already + len(buf) > max_total_bytes:
                    raise _total_too_large(who, already + len(buf), max_total_bytes)
                _check_ratio(who, info, len(buf), max_ratio)
                if len(buf) - len(chunk) < _MAGIC_BYTES and _is_archive(bytes(buf[:_MAGIC_BYTES])):
                    raise _nested(who, info.filename)
    except RejectedInput:
        raise
    except NotImplementedError:
        raise RejectedInput(
            "archive_invalid",
            f"{who}: entry {info.filename!r} uses a compression method we cannot read; "
            "use plain ZIP (deflate)",
            status=422,
        ) from None
    except Exception as exc:  # zipfile.BadZipFile (bad CRC, lying sizes), zlib/lzma errors, EOFError...
        raise RejectedInput(
            "archive_invalid", f"{who}: entry {info.filename!r} is damaged ({exc})", status=422
        ) from None
    if _is_archive(bytes(buf[:_MAGIC_BYTES])):
        raise _nested(who, info.filename)
    return bytes(buf)


def _is_archive(head: bytes) -> bool:
    return any(head[offset : offset + len(sig)] == sig for offset, sig in NESTED_MAGIC)


def _archive_kind(data: bytes) -> str | None:
    kinds = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"7z\xbc\xaf\x27\x1c": "7-Zip"}
    kinds |= {b"Rar!\x1a\x07": "RAR", b"\x28\xb5\x2f\xfd": "zstd"}
    for sig, kind in kinds.items():
        if data.startswith(sig):
            return f"a {kind} file"
    if data[257:262] == b"ustar":
        return "a tar archive"
    return None


def _too_many(who: str, count: int, max_files: int) -> RejectedInput:
    return RejectedInput(
        "archive_too_many_files", f"{who}: holds {count} files; the limit is {max_files}", status=413
    )


def _nested(who: str, member: str) -> RejectedInput:
    return RejectedInput(
        "archive_nested",
        f"{who}: entry {member!r} is itself an archive; nested archives are not accepted",
        status=422,
    )


def _member_too_large(who: str, member: str, size: int, limit: int) -> RejectedInput:
    shown, allowed = human_sizes(size, limit)
    return RejectedInput(
        "archive_member_too_large",
        f"{who}: entry {member!r} is {shown}; the limit per file is {allowed}",
        status=413,
    )


def _total_too_large(who: str, size: int, limit: int) -> RejectedInput:
    shown, allowed = human_sizes(size, limit)
    return RejectedInput(
        "archive_too_large", f"{who}: unpacks to at least {shown}; the limit is {allowed}", status=413
    )
