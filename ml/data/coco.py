"""MS-COCO captions: `annotations/captions_<split>.json` with images under `<root>/<split>/`.

The split label is the file's (`captions_val2017.json` -> "val2017"); asking for "val"
picks the one `captions_val*.json` there is. JSON has no useful line numbers (the official
files are one line), so bad entries are located as e.g. ``annotations[12]``.
"""

from __future__ import annotations

import re
from pathlib import Path

from ml.data.parsing import BadRows, clean_caption, find_glob, image_path, pick_images_dir, read_json
from ml.data.records import CaptionDataset, CaptionRecord, DatasetError

_ALIASES = {"dev": "val", "validation": "val"}


def split_label(path: Path) -> str:
    """`captions_val2017.json` -> "val2017"."""
    stem = path.stem
    return stem[len("captions_") :] if stem.startswith("captions_") else stem


def _family(label: str) -> str:
    """ "val2017" -> "val": what a user types to mean any year of that split."""
    return re.sub(r"\d+$", "", label)


def _choose(files: list[Path], split: str) -> Path:
    labels = {f: split_label(f) for f in files}
    wanted = _ALIASES.get(split, split)
    chosen = [f for f in files if labels[f] == wanted] or [f for f in files if _family(labels[f]) == wanted]
    available = ", ".join(labels.values())
    if not chosen:
        raise DatasetError(f"no captions file for split {split!r}; available: {available}", files[0].parent)
    if len(chosen) > 1:
        raise DatasetError(
            f"split {split!r} is ambiguous here ({available}); name it in full", files[0].parent
        )
    return chosen[0]


def read_coco(
    root: Path, split: str | None, bad: BadRows, images_dir: str | Path | None = None
) -> CaptionDataset:
    files = find_glob(root, ["annotations/captions_*.json", "captions_*.json"], "COCO captions_*.json")
    if split is not None:
        files = [_choose(files, split)]
    records: list[CaptionRecord] = []
    for path in files:
        records.extend(_read_file(path, bad, images_dir))
    # let ds.split("val") find "val2017" on a dataset loaded whole
    aliases: dict[str, tuple[str, ...]] = {}
    for label in dict.fromkeys(split_label(f) for f in files):
        aliases.setdefault(_family(label), ())
        aliases[_family(label)] += (label,)
    for alias, target in _ALIASES.items():
        if target in aliases:
            aliases[alias] = aliases[target]
    source = str(files[0]) if len(files) == 1 else str(files[0].parent)
    return CaptionDataset("coco", records, bad.count, source, aliases)


def _read_file(path: Path, bad: BadRows, images_dir: str | Path | None) -> list[CaptionRecord]:
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError("not a COCO captions file (no 'images' list)", path)
    if not isinstance(data.get("annotations"), list):
        raise DatasetError("not a COCO captions file (no 'annotations' list)", path)
    label = split_label(path)

    file_names: dict[object, str] = {}
    for i, image in enumerate(data["images"]):
        name = image.get("file_name") if isinstance(image, dict) else None
        if not isinstance(name, str) or not name.strip() or not isinstance(image.get("id"), (int, str)):
            bad.bad("image entry without id or file_name", path, item=f"images[{i}]")
            continue
        file_names[image["id"]] = name.strip()

    data_root = path.parent.parent if path.parent.name == "annotations" else path.parent
    folder = pick_images_dir(
        images_dir,
        [data_root / label, data_root / "images" / label, data_root / "images"],
        next(iter(file_names.values()), None),
    )
    records = []
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            bad.bad("annotation is not an object", path, item=f"annotations[{i}]")
            continue
        image_id = ann.get("image_id")
        name = file_names.get(image_id) if isinstance(image_id, (int, str)) else None
        caption = clean_caption(ann.get("caption"))
        if name is None:
            bad.bad(f"unknown image_id {image_id!r}", path, item=f"annotations[{i}]")
        elif not caption:
            bad.bad(f"empty or missing caption for {name}", path, item=f"annotations[{i}]")
        else:
            records.append(CaptionRecord(image_path(folder, name), caption, name, label))
    return records
