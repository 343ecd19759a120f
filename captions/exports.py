"""Caption exports as CSV or JSON Lines: their rows (read through what a user may see, as every
selector reads) and their rendering, row by row so any size streams in constant memory. By default
one row per image, the caption the site shows for it; `every_caption` adds every candidate."""

from __future__ import annotations

import csv
import datetime
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from django.contrib.postgres.aggregates import StringAgg
from django.db.models import Case, F, IntegerField, OuterRef, QuerySet, Subquery, Value, When
from django.utils.text import slugify

from captions.metadata import on_camera_clock
from captions.models import Caption, ImageTag
from captions.search import filter_captions
from captions.selectors import active_model_version, filter_all_images, list_images

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
    "tags",
    "taken_at",
    "camera",
)
CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson; charset=utf-8"}


@dataclass(frozen=True)
class ExportRow:
    image_id: int
    image_file: str
    original_name: str
    caption: str
    score: float | None
    rank: int
    model_version: str
    source: str
    created_at: str
    tags: str = ""  # the image's concept tags, most probable first, ";"-separated
    taken_at: str = ""  # the photo's date taken on its camera's clock (ISO 8601), "" when unknown
    camera: str = ""


EXPORT_SOURCES = tuple(Caption.Source.values)


def export_rows(
    user,
    *,
    batch: int | None = None,
    album: int | None = None,
    status: str | None = None,
    source: str | None = None,
    model: str | None = None,
    q: str | None = None,
    mine: bool = False,
    all_images: bool = False,
    every_caption: bool = False,
    chunk_size: int = 2000,
) -> Iterator[ExportRow]:
    """The shown caption of each visible image matching the filters (checked by the caller: the API's
    ExportFilterSerializer, the command's choices), or with `every_caption` every caption of them
    (each model run's N-best list and the human ones), streamed from the database in chunks."""
    captions = _export_queryset(
        user,
        batch=batch,
        album=album,
        status=status,
        source=source,
        model=model,
        q=q,
        mine=mine,
        all_images=all_images,
    )
    if not every_caption:
        captions = _shown(captions)
    rows = captions.values_list(
        "image_id",
        "image__file",
        "image__original_name",
        "text",
        "score",
        "rank",
        "model_version__name",
        "source",
        "created_at",
        "image_tags",
        "image__taken_at",
        "image__taken_offset",
        "image__camera",
    ).iterator(chunk_size=chunk_size)
    return (_export_row(*values) for values in rows)


def _iso(moment: datetime.datetime) -> str:
    """ISO 8601 as the API writes it (DRF): UTC as "Z"."""
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _export_row(
    image_id, file, name, text, score, rank, version, source, created, tags, taken_utc, offset, camera
) -> ExportRow:
    """An ExportRow from `export_rows`' columns, in their order."""
    taken = on_camera_clock(taken_utc, offset)
    return ExportRow(
        image_id=image_id,
        image_file=file,
        original_name=name,
        caption=text,
        score=score,
        rank=rank,
        model_version=version or "",
        source=source,
        created_at=created.isoformat(),
        tags=tags or "",
        taken_at=_iso(taken) if taken else "",
        camera=camera,
    )


def _export_queryset(
    user,
    *,
    batch: int | None,
    status: str | None,
    source: str | None,
    model: str | None,
    q: str | None,
    mine: bool,
    album: int | None = None,
    all_images: bool = False,
) -> QuerySet[Caption]:
    """`all_images`: every image whatever its owner and visibility (admin commands only)."""
    images = list_images(user, status=status, batch=batch, album=album, mine=mine).order_by()
    if all_images:
        images = filter_all_images(status=status, batch=batch)
    captions = Caption.objects.filter(image__in=images.values("id"))
    if source:
        captions = captions.filter(source=source)
    if model:
        captions = captions.filter(model_version__name=model)
    if q:
        captions = filter_captions(captions, q)
    tags = (
        ImageTag.objects.filter(image_id=OuterRef("image_id"))
        .order_by()
        .values("image_id")
        .annotate(joined=StringAgg("label", ";", order_by="rank"))
        .values("joined")
    )
    captions = captions.annotate(image_tags=Subquery(tags))
    return captions.order_by("image_id", "source", "model_version_id", "rank", "id")


def _shown(captions: QuerySet[Caption]) -> QuerySet[Caption]:
    """Of each image's captions, the one selectors.choose_captions shows, picked in SQL (DISTINCT ON)
    so the export still streams: the newest human caption, else the photo's own description (the
    newest metadata caption), else rank 0 of the active model version's list, else rank 0 of the
    newest model run."""
    active = active_model_version()
    newest_run = (
        Caption.objects.filter(image_id=OuterRef("image_id"), source=Caption.Source.MODEL)
        .order_by("-created_at", "-id")
        .values("model_version_id")[:1]
    )

    def first_if(condition: When) -> Case:
        return Case(condition, default=Value(1), output_field=IntegerField())

    return (
        captions.annotate(
            not_human=first_if(When(source=Caption.Source.HUMAN, then=Value(0))),
            human_order=Case(When(source=Caption.Source.HUMAN, then=-F("id")), default=Value(0)),
            not_metadata=first_if(When(source=Caption.Source.METADATA, then=Value(0))),
            metadata_order=Case(When(source=Caption.Source.METADATA, then=-F("id")), default=Value(0)),
            not_active=first_if(When(model_version_id=active.pk if active else None, then=Value(0))),
            not_newest=first_if(When(model_version_id=Subquery(newest_run), then=Value(0))),
        )
        .order_by(
            "image_id",
            "not_human",
            "human_order",
            "not_metadata",
            "metadata_order",
            "not_active",
            "not_newest",
            "rank",
            "id",
        )
        .distinct("image_id")
    )


def export_filename(
    fmt: str,
    *,
    batch: int | None = None,
    album: str | None = None,
    mine: bool = False,
    today: datetime.date,
) -> str:
    """What the download is called: what was exported and when, e.g. imgcap-batch-3-2026-12-02.csv or
    imgcap-album-crete-2026-2026-12-02.csv (`album`: its name)."""
    parts = ["imgcap"]
    if album is not None:
        parts.append(f"album-{slugify(album)[:60] or 'untitled'}")
    if batch:
        parts.append(f"batch-{batch}")
    if mine and not batch and album is None:
        parts.append("mine")
    return "-".join([*parts, today.isoformat()]) + f".{fmt}"


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
        "tags": row.tags,
        "taken_at": row.taken_at or None,
        "camera": row.camera,
    }


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP's CSV injection): a caption
# or file name someone typed must stay text, so it gets a leading apostrophe, which spreadsheets hide.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def render_rows(rows: Iterable[ExportRow], fmt: str, url_for: Callable[[ExportRow], str]) -> Iterator[str]:
    """Lines of the export: a CSV header then one line per caption, or one JSON object per line."""
    if fmt == "csv":
        writer = csv.writer(_Echo())
        yield writer.writerow(COLUMNS)
        for row in rows:
            data = row_dict(row, url_for)
            yield writer.writerow([_cell(data[c]) for c in COLUMNS])
    elif fmt == "jsonl":
        for row in rows:
            yield json.dumps(row_dict(row, url_for), ensure_ascii=False) + "\n"
    else:
        raise ValueError(f"export format must be one of {', '.join(EXPORT_FORMATS)}; got {fmt!r}")
