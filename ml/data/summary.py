"""A short description of a dataset, for the CLI and logs."""

from __future__ import annotations

from typing import Any

from ml.data.records import CaptionDataset


def _counts(ds: CaptionDataset) -> dict[str, Any]:
    words = sum(len(r.caption.split()) for r in ds.records)
    return {
        "images": len(ds.images()),
        "captions": len(ds.records),
        "mean_caption_words": round(words / len(ds.records), 2) if ds.records else 0.0,
    }


def dataset_summary(ds: CaptionDataset) -> dict[str, Any]:
    """Images, captions, mean caption length in words, skipped rows, and the same per split."""
    splits: dict[str, dict[str, Any]] = {}
    for label in ds.splits():
        subset = CaptionDataset(label, [r for r in ds.records if r.split == label])
        splits[label] = _counts(subset)
    unsplit = [r for r in ds.records if r.split is None]
    if unsplit and splits:
        splits["(none)"] = _counts(CaptionDataset("(none)", unsplit))
    return {"name": ds.name, "source": ds.source, **_counts(ds), "skipped": ds.skipped, "splits": splits}
