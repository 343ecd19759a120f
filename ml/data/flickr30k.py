"""Flickr30k as distributed on Kaggle: `results.csv`, `image_name| comment_number| comment`.

Flickr30k has no official split; Karpathy's `dataset_flickr30k.json` (format "karpathy")
is the usual one.
"""

from __future__ import annotations

import re
from pathlib import Path

from ml.data.parsing import BadRows, find_file, image_path, iter_lines, pick_images_dir
from ml.data.records import CaptionDataset, CaptionRecord, DatasetError

# The real file has a row whose separator before the comment is lost, so the number
# field reads e.g. "4   A dog runs across the grass ." -- recover number and comment.
_NUMBER_THEN_TEXT = re.compile(r"^(\d+)\s+(\S.*)$")


def read_flickr30k(
    root: Path, split: str | None, bad: BadRows, images_dir: str | Path | None = None
) -> CaptionDataset:
    path = find_file(root, ["results.csv", "flickr30k_images/results.csv"], "Flickr30k results.csv")
    if split is not None:
        raise DatasetError(
            "Flickr30k has no official split; use format 'karpathy' with dataset_flickr30k.json "
            "for the usual train/val/test split",
            path,
        )
    rows: list[tuple[str, str]] = []
    first = True
    for number, line in iter_lines(path):
        fields = [f.strip() for f in line.split("|", 2)]
        if first:
            first = False
            if fields[0].lower() == "image_name":  # header (optional)
                continue
        if len(fields) == 2 and (quirk := _NUMBER_THEN_TEXT.match(fields[1])):
            fields = [fields[0], quirk[1], quirk[2]]
        if len(fields) < 3 or not fields[2]:
            bad.bad("missing comment (expected image_name| comment_number| comment)", path, number)
            continue
        name, comment_number, comment = fields
        if not name or not comment_number.isdigit():
            bad.bad(f"bad image name or comment number: {line.strip()!r}", path, number)
            continue
        rows.append((name, comment))

    images = pick_images_dir(
        images_dir,
        [path.parent / "flickr30k_images", path.parent / "images", path.parent],
        rows[0][0] if rows else None,
    )
    records = [CaptionRecord(image_path(images, name), caption, name, None) for name, caption in rows]
    return CaptionDataset("flickr30k", records, bad.count, str(path))
