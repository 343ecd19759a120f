"""`manage.py export_captions --format csv|jsonl [--out FILE] [--all-captions]`: each image's shown
caption (or every caption), to a file or stdout."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.urls import reverse

from captions import selectors
from captions.exports import EXPORT_FORMATS, EXPORT_SOURCES, export_rows, render_rows
from captions.ingest import RejectedInput
from captions.management.commands._common import get_user


class Command(BaseCommand):
    help = "Export captions (image URL, caption, score, model version, source, …) as CSV or JSON Lines."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--format", choices=EXPORT_FORMATS, default="csv", dest="fmt")
        parser.add_argument("--out", type=Path, help="output file (default: standard output)")
        parser.add_argument("--user", help="only what this user can see (default: every image)")
        parser.add_argument("--batch", type=int)
        parser.add_argument("--status", choices=selectors.STATUSES)
        parser.add_argument("--source", choices=EXPORT_SOURCES)
        parser.add_argument("--model", help="only captions of this model version (its name)")
        parser.add_argument("-q", "--query", help="only captions matching this full-text search")
        parser.add_argument(
            "--all-captions", action="store_true", help="every caption, not only the one each image shows"
        )

    def handle(self, *args, fmt: str, out: Path | None, user: str | None, **options) -> None:
        owner = get_user(user) if user else None
        try:
            rows = export_rows(
                owner,
                batch=options["batch"],
                status=options["status"],
                source=options["source"],
                model=options["model"],
                q=options["query"],
                all_images=owner is None,
                every_caption=options["all_captions"],
            )
        except RejectedInput as exc:
            raise CommandError(exc.message) from None
        media_prefix = settings.IMGCAP_SITE_URL.rstrip("/") + reverse("media", args=["x"])[: -len("x")]
        lines = render_rows(rows, fmt, lambda row: media_prefix + row.image_file)
        count = -1 if fmt == "csv" else 0  # the CSV header is not a row
        if out is None:
            for line in lines:
                self.stdout.write(line, ending="")
                count += 1
        else:
            with out.open("w", encoding="utf-8", newline="") as handle:
                for line in lines:
                    handle.write(line)
                    count += 1
        self.stderr.write(f"{count} captions exported" + (f" to {out}" if out else ""))
