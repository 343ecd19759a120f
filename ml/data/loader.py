"""`load_dataset`: one entry point over every caption-file format."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ml.data.coco import read_coco
from ml.data.flickr8k import read_flickr8k, read_flickr8k_kaggle
from ml.data.flickr30k import read_flickr30k
from ml.data.img2dataset import read_img2dataset
from ml.data.karpathy import read_karpathy
from ml.data.parsing import BadRows, existing_path
from ml.data.plain_csv import read_csv
from ml.data.records import CaptionDataset, DatasetError

Reader = Callable[[Path, str | None, BadRows, str | Path | None], CaptionDataset]

_READERS: dict[str, Reader] = {
    "flickr8k": read_flickr8k,
    "flickr8k_kaggle": read_flickr8k_kaggle,
    "flickr30k": read_flickr30k,
    "coco": read_coco,
    "karpathy": read_karpathy,
    "csv": read_csv,
    "img2dataset": read_img2dataset,
}

DATASET_FORMATS: tuple[str, ...] = tuple(_READERS)


def load_dataset(
    fmt: str,
    root: str | Path,
    split: str | None = None,
    skip_bad: bool = False,
    images_dir: str | Path | None = None,
) -> CaptionDataset:
    """Read a captioned-image dataset.

    `root` is the dataset folder or its main file. `split` keeps one split (format-specific
    names and aliases, see each reader). With `skip_bad`, malformed rows are counted in
    `skipped` instead of raising DatasetError; missing files always raise. `images_dir`
    overrides where image paths point.
    """
    try:
        reader = _READERS[fmt]
    except KeyError:
        raise DatasetError(
            f"unknown dataset format {fmt!r}; choose from {', '.join(DATASET_FORMATS)}"
        ) from None
    return reader(existing_path(root), split, BadRows(skip_bad), images_dir)
