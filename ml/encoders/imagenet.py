"""ImageNet-1k class names (for checking converted classifier weights) and their short labels (tags)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

CLASSES_FILE = Path(__file__).with_name("imagenet_classes.txt")
LABELS_FILE = Path(__file__).with_name("imagenet_labels.txt")


@lru_cache(maxsize=2)
def _lines(path: Path) -> tuple[str, ...]:
    """One entry per class, in class-index order."""
    lines = tuple(path.read_text(encoding="utf-8").splitlines())
    if len(lines) != 1000:
        raise RuntimeError(f"{path} has {len(lines)} lines, expected 1000")
    return lines


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names in class-index order (see make_imagenet_classes.py)."""
    return list(_lines(CLASSES_FILE))


def imagenet_labels() -> list[str]:
    """One short everyday tag per ImageNet-1k class, class-index order (see make_imagenet_labels.py)."""
    return list(_lines(LABELS_FILE))
