"""Karpathy's splits: `dataset_flickr8k.json`, `dataset_flickr30k.json`, `dataset_coco.json`.

Each image has a `split` of train, val, test or restval. Records keep the file's label,
but asking for "train" also returns "restval" (as is usual: COCO's 113k training images
are train + restval); "dev" and "validation" mean "val". Bad entries are located as e.g.
``images[3].sentences[1]``.
"""

from __future__ import annotations

from pathlib import Path

from ml.data.parsing import BadRows, clean_caption, find_glob, image_path, pick_images_dir, read_json
from ml.data.records import CaptionDataset, CaptionRecord, DatasetError

SPLIT_ALIASES = {"train": ("train", "restval"), "dev": ("val",), "validation": ("val",)}


def read_karpathy(
    root: Path, split: str | None, bad: BadRows, images_dir: str | Path | None = None
) -> CaptionDataset:
    files = find_glob(root, ["dataset_*.json"], "Karpathy dataset_*.json")
    if len(files) > 1:
        names = ", ".join(f.name for f in files)
        raise DatasetError(f"several Karpathy files ({names}); pass the one you want as root", root)
    path = files[0]
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError("not a Karpathy split file (no 'images' list)", path)

    # (relative image path, file name, caption, split)
    rows: list[tuple[str, str, str, str]] = []
    for i, entry in enumerate(data["images"]):
        where = f"images[{i}]"
        if not isinstance(entry, dict):
            bad.bad("entry is not an object", path, item=where)
            continue
        name, folder, label = entry.get("filename"), entry.get("filepath") or "", entry.get("split")
        sentences = entry.get("sentences")
        if not isinstance(name, str) or not name.strip() or not isinstance(folder, str):
            bad.bad("missing or bad 'filename'/'filepath'", path, item=where)
            continue
        if not isinstance(label, str) or not label.strip():
            bad.bad(f"missing 'split' for {name}", path, item=where)
            continue
        if not isinstance(sentences, list) or not sentences:
            bad.bad(f"no 'sentences' for {name}", path, item=where)
            continue
        rel = f"{folder.strip()}/{name.strip()}" if folder.strip() else name.strip()
        for j, sentence in enumerate(sentences):
            caption = _caption(sentence)
            if caption:
                rows.append((rel, name.strip(), caption, label.strip()))
            else:
                bad.bad(f"empty or missing caption for {name}", path, item=f"{where}.sentences[{j}]")

    data_root = path.parent
    images = pick_images_dir(
        images_dir,
        [data_root / d for d in ("images", "Images", "Flicker8k_Dataset", "flickr30k_images")] + [data_root],
        rows[0][0] if rows else None,
    )
    records = [
        CaptionRecord(image_path(images, rel), caption, name, label) for rel, name, caption, label in rows
    ]
    dataset_name = "karpathy_" + path.stem.removeprefix("dataset_")
    ds = CaptionDataset(dataset_name, records, bad.count, str(path), dict(SPLIT_ALIASES))
    return ds.split(split) if split is not None else ds


def _caption(sentence: object) -> str:
    """`raw`, or the joined `tokens` when a file carries only those."""
    if not isinstance(sentence, dict):
        return ""
    caption = clean_caption(sentence.get("raw"))
    tokens = sentence.get("tokens")
    if not caption and isinstance(tokens, list) and all(isinstance(t, str) for t in tokens):
        caption = " ".join(tokens).strip()
    return caption
