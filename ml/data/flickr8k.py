"""Flickr8k, in its official token format and in Kaggle's `captions.txt`.

Both share the official split files (`Flickr_8k.{train,dev,test}Images.txt`), which are
looked up beside the caption file (or in a `Flickr8k_text/` folder there, as in the
original zip). An image listed in no split file gets split None.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from ml.data.parsing import BadRows, find_file, image_path, iter_lines, pick_images_dir
from ml.data.records import CaptionDataset, CaptionRecord, DatasetError

SPLIT_FILES = {
    "train": "Flickr_8k.trainImages.txt",
    "dev": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}
# "val" is what most training code calls the official dev split
SPLIT_ALIASES = {"val": ("dev",), "validation": ("dev",)}

# NAME.jpg#N then a tab (some re-distributions use spaces) then the caption
_TOKEN_LINE = re.compile(r"^(?P<name>[^\t#]+)#(?P<num>\d+)(?:\t|\s+)(?P<caption>.*)$")

# (image file name, caption) as read from a caption file
Row = tuple[str, str]


def read_flickr8k(
    root: Path, split: str | None, bad: BadRows, images_dir: str | Path | None = None
) -> CaptionDataset:
    """Official `Flickr8k.token.txt` (`root` is the file or a folder holding it)."""
    path = find_file(root, ["Flickr8k.token.txt", "Flickr8k_text/Flickr8k.token.txt"], "Flickr8k.token.txt")
    split_files(path, split)  # fail before parsing when the asked split has no file
    rows: list[Row] = []
    for number, line in iter_lines(path):
        match = _TOKEN_LINE.match(line)
        if match is None:
            bad.bad("expected NAME.jpg#N<TAB>caption", path, number)
            continue
        name, caption = match["name"].strip(), match["caption"].strip()
        if not caption:
            bad.bad(f"empty caption for {name}", path, number)
            continue
        rows.append((name, caption))
    return _assemble("flickr8k", path, rows, split, bad, images_dir)


def read_flickr8k_kaggle(
    root: Path, split: str | None, bad: BadRows, images_dir: str | Path | None = None
) -> CaptionDataset:
    """Kaggle's `captions.txt`: an `image,caption` header, then one caption per line.

    Captions may hold commas, so a line is split on its first comma only; a caption that is
    a properly quoted CSV field is unquoted (the Kaggle file quotes those with commas).
    """
    path = find_file(root, ["captions.txt"], "captions.txt")
    split_files(path, split)
    rows: list[Row] = []
    header_seen = False
    for number, line in iter_lines(path):
        if not header_seen:
            header_seen = True
            if line.replace(" ", "").lower().startswith("image,caption"):
                continue
            raise DatasetError("expected the header 'image,caption'", path, number)
        name, sep, raw = line.partition(",")
        name, caption = _unquote(name), _unquote(raw)
        if not sep or not name:
            bad.bad("expected image,caption", path, number)
            continue
        if not caption:
            bad.bad(f"empty caption for {name}", path, number)
            continue
        rows.append((name, caption))
    return _assemble("flickr8k_kaggle", path, rows, split, bad, images_dir)


def _unquote(field: str) -> str:
    """A CSV-quoted field's value; anything else (even a caption that merely starts with a quote) as is."""
    field = field.strip()
    if field.startswith('"'):
        parsed = next(csv.reader([field]), [])
        if len(parsed) == 1:
            return parsed[0].strip()
    return field


def _assemble(
    fmt: str, path: Path, rows: list[Row], split: str | None, bad: BadRows, images_dir: str | Path | None
) -> CaptionDataset:
    text_dir = path.parent
    # the original zip keeps text files in Flickr8k_text/ beside the image folder
    data_root = text_dir.parent if text_dir.name == "Flickr8k_text" else text_dir
    images = pick_images_dir(
        images_dir,
        [data_root / d for d in ("images", "Images", "Flicker8k_Dataset", "Flickr8k_Dataset")],
        rows[0][0] if rows else None,
    )
    assigned = _read_splits(path, split_files(path, split), {name for name, _ in rows}, bad)
    wanted = _label(split) if split is not None else None
    records = []
    for name, caption in rows:
        label = assigned.get(name)
        if wanted is None or label == wanted:
            records.append(CaptionRecord(image_path(images, name), caption, name, label))
    return CaptionDataset(fmt, records, bad.count, str(path), dict(SPLIT_ALIASES))


def _label(split: str) -> str:
    return SPLIT_ALIASES.get(split, (split,))[0]


def split_files(path: Path, split: str | None) -> dict[str, Path]:
    """Split label -> split file beside caption file `path`: all that exist, or just the asked one.

    Raises DatasetError when `split` is asked for and its file is not there.
    """
    dirs = [path.parent, path.parent / "Flickr8k_text"]
    found: dict[str, Path] = {}
    for label, fname in SPLIT_FILES.items():
        for d in dirs:
            if (d / fname).is_file():
                found.setdefault(label, d / fname)
    if split is None:
        return found
    label = _label(split)
    if label not in SPLIT_FILES:
        raise DatasetError(
            f"unknown split {split!r}; Flickr8k has {', '.join(SPLIT_FILES)} (and 'val' for dev)", path
        )
    if not found:
        raise DatasetError(
            f"no split files beside this file (looked for {', '.join(SPLIT_FILES.values())}), "
            "so it cannot be split; load it without a split",
            path,
        )
    if label not in found:
        where = " or ".join(str(d) for d in dirs)
        raise DatasetError(f"split {split!r} needs {SPLIT_FILES[label]}, not found in {where}", path)
    return {label: found[label]}


def _read_splits(path: Path, files: dict[str, Path], names: set[str], bad: BadRows) -> dict[str, str]:
    """Image name -> split label; a listed image without captions is a bad row of its split file."""
    assigned: dict[str, str] = {}
    for label, split_path in files.items():
        for number, line in iter_lines(split_path):
            name = line.strip()
            if name not in names:
                bad.bad(f"{name} has no captions in {path.name}", split_path, number)
            elif name in assigned and assigned[name] != label:
                bad.bad(f"{name} is already in split {assigned[name]!r}", split_path, number)
            else:
                assigned[name] = label
    return assigned
