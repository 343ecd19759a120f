"""`manage.py embed_captions [--all] [--user U]`: give images the search vector of the caption they show.

The worker embeds captions as it stores them; this fills in images captioned before search by meaning
existed, or while the embedding model could not be loaded, and those whose shown caption changed
without their vector following. `--all` embeds every image again (after a change of the embedding
model). Photos' own vectors and features come from the worker: `recaption_all --all` refreshes them.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand
from django.db.models import F, Q
from django.template.defaultfilters import pluralize

from captions.management.commands._common import get_user
from captions.models import Image
from captions.services.embeddings import embed_shown_captions

CHUNK = 256


class Command(BaseCommand):
    help = "Embed the caption each image shows, for search by meaning (images missing or out of date)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--all", action="store_true", help="every image, even those up to date")
        parser.add_argument("--user", help="only this user's images")

    def handle(self, *args, all: bool, user: str | None, **options) -> None:  # noqa: A002
        images = Image.objects.filter(captions__isnull=False).distinct()
        if user:
            images = images.filter(owner=get_user(user))
        if not all:
            # Missing, or pointing at a caption that is no longer the newest human one; changes among
            # model captions are found by embed_shown_captions itself.
            images = images.filter(
                Q(embedded_caption__isnull=True)
                | Q(captions__source="human", captions__id__gt=F("embedded_caption_id"))
                | Q(embedded_caption__source="model", captions__source__in=["human", "metadata"])
            ).distinct()
        ids = list(images.order_by("pk").values_list("pk", flat=True))
        updated = 0
        for start in range(0, len(ids), CHUNK):
            updated += embed_shown_captions(ids[start : start + CHUNK], force=all)
            self.stdout.write(f"{min(start + CHUNK, len(ids))}/{len(ids)} images looked at", ending="\r")
        self.stdout.write(self.style.SUCCESS(f"{updated} image{pluralize(updated)} embedded"))
