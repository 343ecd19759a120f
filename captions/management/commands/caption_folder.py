"""`manage.py caption_folder PATH --user U [--public]`: queue every image of a folder as one batch."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.template.defaultfilters import pluralize

from captions.ingest import RejectedInput, is_os_junk
from captions.management.commands._common import get_user, skipped_line
from captions.services.intake import create_batch_from_paths


class Command(BaseCommand):
    help = "Upload every image in a folder (recursively) as one batch and queue it for captioning."

    def add_arguments(self, parser) -> None:
        parser.add_argument("path", type=Path, help="folder of images")
        parser.add_argument("--user", required=True, help="owner of the images")
        parser.add_argument("--public", action="store_true", help="make the images public (default private)")
        parser.add_argument(
            "--no-recursive", action="store_true", help="only the folder itself, not subfolders"
        )

    def handle(self, *args, path: Path, user: str, public: bool, no_recursive: bool, **options) -> None:
        owner = get_user(user)
        if not path.is_dir():
            raise CommandError(f"{path} is not a folder")
        pattern = "*" if no_recursive else "**/*"
        # OS clutter is skipped; anything else is offered to the image checks.
        files = sorted(
            p for p in path.glob(pattern) if p.is_file() and not is_os_junk(p.relative_to(path).as_posix())
        )
        if not files:
            raise CommandError(f"no files in {path}")
        try:
            result = create_batch_from_paths(
                owner=owner, paths=files, visibility="public" if public else "private", root=path
            )
        except RejectedInput as exc:
            rejected = getattr(exc, "rejected", None)
            if not rejected:
                raise CommandError(exc.message) from None
            # The API's message points at its 'rejected' list; here each reason goes to stderr.
            for rejection in rejected:
                self.stderr.write(skipped_line(rejection.name, rejection.message))
            raise CommandError(f"no acceptable image in {path} ({len(rejected)} skipped)") from None
        batch = result.batch
        items = batch.items.count()
        duplicates = batch.items.filter(duplicate=True).count()
        for rejection in batch.rejected:
            self.stderr.write(skipped_line(rejection["name"], rejection["message"]))
        self.stdout.write(
            self.style.SUCCESS(
                f"batch {batch.pk}: {items - duplicates} image{pluralize(items - duplicates)} queued, "
                f"{duplicates} already uploaded, "
                f"{len(batch.rejected)} skipped"
            )
        )
