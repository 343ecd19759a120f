"""The types every dataset reader returns: one record per (image, caption) pair."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


class DatasetError(ValueError):
    """A dataset file is missing or malformed.

    `path` is the file at fault; `line` is the 1-based line of a bad row in a text file, and
    `item` locates a bad entry in a JSON file (e.g. ``annotations[12]``), which has no
    meaningful line numbers (the official COCO files are a single line).
    """

    def __init__(
        self, message: str, path: str | Path | None = None, line: int | None = None, item: str | None = None
    ) -> None:
        self.reason = message
        self.path = str(path) if path is not None else None
        self.line = line
        self.item = item
        where = self.path or ""
        if line is not None:
            where += f", line {line}"
        if item is not None:
            where += f", {item}"
        super().__init__(f"{where}: {message}" if where else message)


@dataclass(frozen=True)
class CaptionRecord:
    """One caption of one image.

    `image` is an absolute path (or a URL, only from the plain CSV format); `image_id` is the
    dataset's own key for the image (its file name, or the CSV's value as written).
    """

    image: str
    caption: str
    image_id: str
    split: str | None = None


@dataclass
class CaptionDataset:
    """The records of one dataset, in file order.

    `aliases` maps a split name a user may ask for to the split labels it covers, so that
    e.g. Karpathy's "train" also takes "restval" and Flickr8k's "val" means "dev".
    """

    name: str
    records: list[CaptionRecord]
    skipped: int = 0
    source: str | None = None
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)

    def images(self) -> list[str]:
        """Unique `image` values, in first-seen order."""
        return list(dict.fromkeys(r.image for r in self.records))

    def captions_by_image(self) -> dict[str, list[str]]:
        """`image` -> its captions, images in first-seen order."""
        grouped: dict[str, list[str]] = {}
        for r in self.records:
            grouped.setdefault(r.image, []).append(r.caption)
        return grouped

    def splits(self) -> list[str]:
        """The split labels present (None excluded), in first-seen order."""
        return list(dict.fromkeys(r.split for r in self.records if r.split is not None))

    def resolve_split(self, name: str) -> tuple[str, ...]:
        """The split labels that `name` stands for; DatasetError if none of them is present."""
        labels = self.aliases.get(name, (name,))
        present = self.splits()
        if not any(label in present for label in labels):
            known = ", ".join(present) if present else "none: this dataset has no splits"
            raise DatasetError(f"unknown split {name!r} for {self.name}; available: {known}", self.source)
        return labels

    def split(self, name: str) -> CaptionDataset:
        """The records of split `name` (aliases honoured) as a new dataset."""
        labels = self.resolve_split(name)
        return CaptionDataset(
            name=f"{self.name}:{name}",
            records=[r for r in self.records if r.split in labels],
            skipped=self.skipped,
            source=self.source,
            aliases=self.aliases,
        )
