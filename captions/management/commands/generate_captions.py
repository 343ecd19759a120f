"""`manage.py generate_captions N [--user U]`: N synthetic captions in bulk, for search benchmarks."""

from __future__ import annotations

import time

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from captions.synthetic import generate_captions


class Command(BaseCommand):
    help = "Bulk-create N synthetic captions (Flickr8k-style English) on image rows without files."

    def add_arguments(self, parser) -> None:
        parser.add_argument("count", type=int)
        parser.add_argument("--user", default="synthetic", help="owner of the rows (created if missing)")
        parser.add_argument("--per-image", type=int, default=3)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--chunk", type=int, default=5000, help="rows per INSERT transaction")

    def handle(self, *args, count: int, user: str, per_image: int, seed: int, chunk: int, **options) -> None:
        if count < 1:
            raise CommandError("N must be at least 1")
        User = get_user_model()  # noqa: N806 - Django's idiom
        owner, _ = User.objects.get_or_create(**{User.USERNAME_FIELD: user})
        started = time.perf_counter()
        made = generate_captions(
            owner=owner, count=count, per_image=per_image, seed=seed, chunk=max(100, chunk)
        )
        seconds = time.perf_counter() - started
        self.stdout.write(self.style.SUCCESS(f"{made} captions created in {seconds:.1f} s"))
