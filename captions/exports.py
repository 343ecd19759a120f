"""Caption exports as CSV or JSON Lines, produced row by row so any size streams in constant memory."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator

from captions.selectors import ExportRow

EXPORT_FORMATS = ("csv", "jsonl")
COLUMNS = (
    "image_url",
    "caption",
    "score",
    "model_version",
    "source",
    "rank",
    "image_id",
    "original_name",
    "created_at",
)
CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson; charset=utf-8"}


class _Echo:
    """csv.writer writes one row into this and we hand the string on (Django's streaming-CSV recipe)."""

    def write(self, value: str) -> str:
        return value


def row_dict(row: ExportRow, url_for: Callable[[ExportRow], str]) -> dict:
    return {
        "image_url": url_for(row),
        "caption": row.caption,
        "score": row.score,
        "model_version": row.model_version or None,
        "source": row.source,
        "rank": row.rank,
        "image_id": row.image_id,
        "original_name": row.original_name,
        "created_at": row.created_at,
    }


def render_rows(rows: Iterable[ExportRow], fmt: str, url_for: Callable[[ExportRow], str]) -> Iterator[str]:
    """Lines of the export: a CSV header then one line per caption, or one JSON object per line."""
    if fmt == "csv":
        writer = csv.writer(_Echo())
        yield writer.writerow(COLUMNS)
        for row in rows:
            data = row_dict(row, url_for)
            yield writer.writerow(["" if data[c] is None else data[c] for c in COLUMNS])
    elif fmt == "jsonl":
        for row in rows:
            yield json.dumps(row_dict(row, url_for), ensure_ascii=False) + "\n"
    else:
        raise ValueError(f"export format must be one of {', '.join(EXPORT_FORMATS)}; got {fmt!r}")
