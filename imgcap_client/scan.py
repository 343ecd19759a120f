"""Which files of the given folders are photos to upload, and their contents' SHA-256."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

# What the server might take, by name: the bytes decide there (a text file named .jpg is refused with
# the server's reason, HEIC is refused as unsupported today). Everything else is never sent.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif"}
)
# Clutter that operating systems leave beside photos (the server skips the same inside zip archives).
JUNK_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini", "__macosx"})
CHUNK = 1 << 20


@dataclass
class Scan:
    """The photos found (sorted, each once) and how many other files were passed over."""

    files: list[Path] = field(default_factory=list)
    ignored: int = 0  # files that are not images by name, junk, or hidden
    missing: list[Path] = field(default_factory=list)  # paths given that do not exist


def is_junk(name: str) -> bool:
    """OS clutter and hidden entries (`.DS_Store`, `._photo.jpg` AppleDouble files, `Thumbs.db`,
    `__MACOSX`, `.git`, …)."""
    return name.startswith(".") or name.lower() in JUNK_NAMES


def is_image_name(name: str) -> bool:
    return not is_junk(name) and Path(name).suffix.lower() in IMAGE_EXTENSIONS


def find_images(paths: list[Path], *, recursive: bool = True) -> Scan:
    """The image files under `paths` (folders, or files named directly), in path order. Symbolic links
    to folders are not followed, so a link loop cannot make the walk endless."""
    scan = Scan()
    seen: set[Path] = set()

    def add(path: Path) -> None:
        if not is_image_name(path.name):
            scan.ignored += 1
            return
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            scan.files.append(path)

    for root in paths:
        if root.is_file():
            add(root)
        elif root.is_dir():
            if recursive:
                for folder, dirs, names in os.walk(root):
                    skipped = [d for d in dirs if is_junk(d)]
                    dirs[:] = sorted(d for d in dirs if not is_junk(d))  # os.walk descends into what is left
                    scan.ignored += sum(_count_files(Path(folder) / d) for d in skipped)
                    for name in sorted(names):
                        path = Path(folder) / name
                        if path.is_file():
                            add(path)
            else:
                for path in sorted(root.iterdir()):
                    if path.is_file():
                        add(path)
        else:
            scan.missing.append(root)
    return scan


def _count_files(folder: Path) -> int:
    return sum(len(names) for _, _, names in os.walk(folder))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
