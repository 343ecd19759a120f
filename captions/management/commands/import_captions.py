"""`manage.py import_captions --format kaggle|flickr8k|coco|csv FILE --images DIR --user U`:
a captioned dataset's captions become human captions of its images (uploaded if new)."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.template.defaultfilters import pluralize

from captions.ingest import RejectedInput
from captions.management.commands._common import get_user, skipped_line
from captions.services.images import add_human_captions
from captions.services.intake import IncomingFile, upload_image

# ml.data's readers are plain Python (no TensorFlow): safe in the web process.
FORMATS = {"kaggle": "flickr8k_kaggle", "flickr8k": "flickr8k", "coco": "coco", "csv": "csv"}


class Command(BaseCommand):
    help = "Import a dataset's captions as human captions (images are uploaded and queued if new)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", type=Path, help="the captions file (or the dataset folder)")
        parser.add_argument("--format", required=True, choices=sorted(FORMATS), dest="fmt")
        parser.add_argument("--images", type=Path, help="folder of the images (default: the format's own)")
        parser.add_argument("--user", required=True, help="owner of the images and author of the captions")
        parser.add_argument(
            "--split", help="only this split (e.g. train, dev, test) where the format has them"
        )
        parser.add_argument("--limit", type=int, help="only the first N images")
        parser.add_argument("--public", action="store_true", help="make new images public")
        parser.add_argument("--skip-bad", action="store_true", help="skip malformed rows instead of stopping")

    def handle(self, *args, file: Path, fmt: str, images: Path | None, user: str, **options) -> None:
        from ml.data import DatasetError, load_dataset

        owner = get_user(user)
        try:
            dataset = load_dataset(
                FORMATS[fmt], file, split=options["split"], skip_bad=options["skip_bad"], images_dir=images
            )
        except DatasetError as exc:
            raise CommandError(str(exc)) from None
        grouped = dataset.captions_by_image()
        paths = list(grouped)[: options["limit"]] if options["limit"] else list(grouped)
        visibility = "public" if options["public"] else "private"
        uploaded = known = added = 0
        missing: list[str] = []
        for image_path in paths:
            if "://" in image_path:
                missing.append(image_path)  # URLs in a CSV: not fetched by an offline import
                continue
            path = Path(image_path)
            try:
                data = path.read_bytes()
                result = upload_image(owner=owner, file=IncomingFile(path.name, data), visibility=visibility)
            except OSError:
                missing.append(image_path)
                continue
            except RejectedInput as exc:
                self.stderr.write(skipped_line(path.name, exc.message))
                continue
            uploaded += result.created
            known += not result.created
            added += add_human_captions(
                rows=[(result.image, text) for text in grouped[image_path]], author=owner
            )
        if missing:
            self.stderr.write(f"{len(missing)} image{pluralize(len(missing))} not found, e.g. {missing[0]}")
        if dataset.skipped:
            self.stderr.write(f"{dataset.skipped} malformed row{pluralize(dataset.skipped)} skipped")
        images = uploaded + known
        self.stdout.write(
            self.style.SUCCESS(
                f"{added} caption{pluralize(added)} imported for {images} image{pluralize(images)} "
                f"({uploaded} new, {known} known)"
            )
        )
