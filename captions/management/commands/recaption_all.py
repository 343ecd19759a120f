"""`manage.py recaption_all [--model-version NAME] [--all] [--user U]`: queue finished images again so
the workers' current model captions them; existing captions are kept."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.template.defaultfilters import pluralize

from captions.management.commands._common import get_user
from captions.models import Caption, Image, ModelVersion
from captions.services.images import requeue_images


class Command(BaseCommand):
    help = (
        "Re-caption finished images that have no captions from a model version (default: the active one). "
        "The workers caption with the model they loaded (IMGCAP_MODEL_DIR)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--model-version", help="the version images should have captions from (default: active)"
        )
        parser.add_argument(
            "--all", action="store_true", help="every finished image, whatever captions it has"
        )
        parser.add_argument("--user", help="only this user's images")

    def handle(self, *args, model_version: str | None, all: bool, user: str | None, **options) -> None:  # noqa: A002
        images = Image.objects.all()
        if user:
            images = images.filter(owner=get_user(user))
        if not all:
            version = self._version(model_version)
            if version is not None:
                done_by_it = Caption.objects.filter(model_version=version, source=Caption.Source.MODEL)
                images = images.exclude(id__in=done_by_it.values("image_id"))
        ids = requeue_images(images=images)
        self.stdout.write(self.style.SUCCESS(f"{len(ids)} image{pluralize(len(ids))} queued for captioning"))

    def _version(self, name: str | None) -> ModelVersion | None:
        if name:
            try:
                return ModelVersion.objects.get(name=name)
            except ModelVersion.DoesNotExist:
                raise CommandError(f"no model version {name!r}") from None
        return ModelVersion.objects.filter(active=True).first()
