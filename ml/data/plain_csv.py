"""A plain CSV of image (path or URL) and caption, with a header, as the old project exported.

Column names are matched case-insensitively: the image is `image`, `image_url`, `url`,
`path`, `filename` (or `image_path`, `file_name`, `file`), the caption `caption` or `text`,
and an optional `split` column labels rows. Relative paths resolve against the CSV's
folder (or `images_dir` when given); URLs are kept as they are.
"""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

from ml.data.parsing import BadRows, find_glob, image_path, pick_images_dir, read_text
from ml.data.records import CaptionDataset, CaptionRecord, DatasetError

IMAGE_COLUMNS = ("image", "image_url", "url", "path", "filename", "image_path", "file_name", "file")
CAPTION_COLUMNS = ("caption", "text")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def read_csv(
    root: Path, split: str | None, bad: BadRows, images_dir: str | Path | None = None
) -> CaptionDataset:
    path = _pick_file(find_glob(root, ["*.csv"], "CSV file"))
    base = pick_images_dir(images_dir, [path.parent], None)
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    columns: dict[str, int] | None = None
    width = 0
    records: list[CaptionRecord] = []
    last_line = 0
    try:
        for row in reader:
            number, last_line = last_line + 1, reader.line_num  # a quoted field may span lines
            if not any(cell.strip() for cell in row):
                continue
            if columns is None:
                columns, width = _columns(row, path, number), len(row)
                continue
            record = _record(row, columns, width, base, path, number, bad)
            if record is not None:
                records.append(record)
    except csv.Error as err:
        raise DatasetError(f"unreadable CSV ({err})", path, reader.line_num) from None
    if columns is None:
        raise DatasetError("empty CSV (a header and rows are required)", path)

    ds = CaptionDataset("csv", records, bad.count, str(path))
    if split is not None:
        if "split" not in columns:
            raise DatasetError(f"no 'split' column, so split {split!r} cannot be selected", path)
        return ds.split(split)
    return ds


def _pick_file(files: list[Path]) -> Path:
    if len(files) == 1:
        return files[0]
    for f in files:
        if f.name == "captions.csv":
            return f
    names = ", ".join(f.name for f in files)
    raise DatasetError(f"several CSV files ({names}); pass the one you want as root", files[0].parent)


def _columns(header: list[str], path: Path, number: int) -> dict[str, int]:
    """Role ("image", "caption", "split") -> column index, from the header row."""
    names = [h.strip().lower() for h in header]
    roles: dict[str, int] = {}
    for role, options in (("image", IMAGE_COLUMNS), ("caption", CAPTION_COLUMNS), ("split", ("split",))):
        for option in options:
            if option in names:
                roles[role] = names.index(option)
                break
    if "image" not in roles or "caption" not in roles:
        raise DatasetError(
            f"header needs an image column ({', '.join(IMAGE_COLUMNS)}) and a caption column "
            f"({', '.join(CAPTION_COLUMNS)}); got {', '.join(header)}",
            path,
            number,
        )
    return roles


def _record(
    row: list[str], columns: dict[str, int], width: int, base: Path, path: Path, number: int, bad: BadRows
) -> CaptionRecord | None:
    # an unquoted caption with commas in the last column spills into extra fields: rejoin them
    if len(row) > width and columns["caption"] == width - 1:
        row = row[: width - 1] + [",".join(row[width - 1 :])]
    if len(row) != width:
        bad.bad(f"expected {width} fields, got {len(row)}", path, number)
        return None
    value, caption = row[columns["image"]].strip(), row[columns["caption"]].strip()
    if not value:
        bad.bad("empty image path/URL", path, number)
        return None
    if not caption:
        bad.bad(f"empty caption for {value}", path, number)
        return None
    label = row[columns["split"]].strip() or None if "split" in columns else None
    image = value if _URL.match(value) else image_path(base, os.path.expanduser(value))
    return CaptionRecord(image, caption, value, label)
