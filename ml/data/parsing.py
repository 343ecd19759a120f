"""Helpers shared by the readers: finding files, reading text/JSON, handling bad rows."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ml.data.records import DatasetError


class BadRows:
    """Raises on a malformed row, or (with `skip_bad`) counts it and lets the reader go on."""

    def __init__(self, skip_bad: bool = False) -> None:
        self.skip_bad = skip_bad
        self.count = 0

    def bad(self, reason: str, path: Path, line: int | None = None, item: str | None = None) -> None:
        if not self.skip_bad:
            raise DatasetError(reason, path, line=line, item=item)
        self.count += 1


def existing_path(root: str | Path) -> Path:
    """`root` as an absolute Path, or DatasetError if nothing is there."""
    path = Path(os.path.abspath(Path(root).expanduser()))
    if not path.exists():
        raise DatasetError(f"dataset path not found: {path}")
    return path


def find_file(root: Path, candidates: Iterable[str], what: str) -> Path:
    """`root` itself if it is a file, else the first of `candidates` (relative paths) under it."""
    if root.is_file():
        return root
    tried = list(candidates)
    for rel in tried:
        if (root / rel).is_file():
            return root / rel
    raise DatasetError(f"no {what} found in {root} (looked for {', '.join(tried)})")


def find_glob(root: Path, patterns: Iterable[str], what: str) -> list[Path]:
    """`[root]` if it is a file, else every file under `root` matching the first pattern that matches."""
    if root.is_file():
        return [root]
    tried = list(patterns)
    for pattern in tried:
        hits = sorted(p for p in root.glob(pattern) if p.is_file())
        if hits:
            return hits
    raise DatasetError(f"no {what} found in {root} (looked for {', '.join(tried)})")


def pick_images_dir(images_dir: str | Path | None, candidates: Iterable[Path], probe: str | None) -> Path:
    """The explicit `images_dir`, else the first candidate holding `probe`, else the first that exists.

    Falls back to the first candidate so records still get a sensible path when images are
    not downloaded yet (captions alone are enough to build a vocabulary).
    """
    if images_dir is not None:
        return Path(os.path.abspath(Path(images_dir).expanduser()))
    options = list(candidates)
    existing = [c for c in options if c.is_dir()]
    if probe is not None:
        for c in existing:
            if (c / probe).exists():
                return c
    return existing[0] if existing else options[0]


def read_text(path: Path) -> str:
    """UTF-8 text (a BOM is dropped); an undecodable byte is reported with its line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DatasetError(f"not valid UTF-8 ({err.reason})", path, line=line) from None


def iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its newline) for every non-blank line."""
    # split on "\n" only: str.splitlines() would also break on rare separators inside captions
    for number, line in enumerate(read_text(path).split("\n"), start=1):
        line = line.rstrip("\r")
        if line.strip():
            yield number, line


def read_json(path: Path) -> Any:
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise DatasetError(f"invalid JSON ({err.msg})", path, line=err.lineno) from None


def clean_caption(value: Any) -> str:
    """A stripped caption, or "" when the value is missing or not text."""
    return value.strip() if isinstance(value, str) else ""


def image_path(folder: Path, name: str) -> str:
    """Absolute, normalised path of `name` under `folder` (an absolute `name` wins).

    Plain string joins: building a pathlib.Path per record dominated load time. Symlinks
    are kept, since the user's layout is what they expect to see.
    """
    return os.path.normpath(os.path.join(os.path.abspath(folder), name))
