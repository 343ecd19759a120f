"""Synthetic captions in bulk, for search benchmarks: realistic English in the style of Flickr8k.

`python -m bench.synthetic_captions N [--user U]` (the database of DJANGO_SETTINGS_MODULE, by
default the local settings) or `generate_captions(...)` from a benchmark or test.

Images are rows only (no files: their media URLs answer 404); captions belong to a non-active
"synthetic" model version, so they never replace real captions as an image's best caption.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import time
from collections.abc import Iterator

import django
from django.apps import apps

if not apps.ready:  # run as a script; benchmarks and tests have set Django up already
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imgcap_site.settings.local")
    django.setup()

from django.db import transaction
from django.utils import timezone

from captions.models import Caption, Image, ModelVersion

SYNTHETIC_VERSION = "synthetic-captions"

# (singular, plural?) subjects; verbs as (singular, plural) forms.
_SUBJECTS = [
    ("a dog", False),
    ("a black dog", False),
    ("a brown dog", False),
    ("a white dog", False),
    ("two dogs", True),
    ("a puppy", False),
    ("a man", False),
    ("a woman", False),
    ("a young girl", False),
    ("a little boy", False),
    ("two children", True),
    ("a group of people", True),
    ("a cyclist", False),
    ("a skateboarder", False),
    ("a surfer", False),
    ("a snowboarder", False),
    ("a football player", False),
    ("three men", True),
    ("a child in a red shirt", False),
    ("a woman in a blue dress", False),
    ("a man in a black jacket", False),
    ("a cat", False),
    ("a horse", False),
    ("two girls", True),
    ("a crowd", True),
    ("a biker", False),
]
_VERBS = [
    ("runs", "run"),
    ("is running", "are running"),
    ("jumps", "jump"),
    ("is jumping", "are jumping"),
    ("plays", "play"),
    ("sits", "sit"),
    ("stands", "stand"),
    ("walks", "walk"),
    ("is walking", "are walking"),
    ("rides", "ride"),
    ("climbs", "climb"),
    ("swims", "swim"),
    ("looks", "look"),
    ("is playing", "are playing"),
    ("catches a ball", "catch a ball"),
    ("carries a stick", "carry a stick"),
    ("splashes", "splash"),
]
_PLACES = [
    "through the grass",
    "on the beach",
    "in the water",
    "along the street",
    "over a fence",
    "in a park",
    "on a bench",
    "down a hill",
    "in the snow",
    "across a field",
    "near a lake",
    "on a wooden bridge",
    "in front of a building",
    "on a dirt path",
    "through the woods",
    "at the edge of a pool",
    "on the sand",
    "in a crowded market",
    "on a rock",
    "under a tree",
    "by the ocean",
    "on a city sidewalk",
    "in a fountain",
]
_EXTRAS = [
    "",
    "",
    "",
    "while people watch",
    "on a sunny day",
    "near a tree",
    "with a ball in its mouth",
    "next to a red car",
    "in the evening",
    "with mountains behind",
    "while another dog follows",
]


def synthetic_caption(rng: random.Random) -> str:
    subject, plural = rng.choice(_SUBJECTS)
    singular_verb, plural_verb = rng.choice(_VERBS)
    words = [subject, plural_verb if plural else singular_verb, rng.choice(_PLACES), rng.choice(_EXTRAS)]
    return " ".join(w for w in words if w)


def generate_captions(*, owner, count: int, per_image: int = 3, seed: int = 0, chunk: int = 5000) -> int:
    """Create `count` captions (`per_image` per new image) with bulk inserts; returns the number created."""
    rng = random.Random(seed)
    version, _ = ModelVersion.objects.get_or_create(
        name=SYNTHETIC_VERSION, defaults={"encoder": "none", "metrics": {"synthetic": True}}
    )
    per_image = max(1, per_image)
    made = images_made = 0
    run = hashlib.sha256(f"{timezone.now().isoformat()}-{seed}".encode()).hexdigest()[:16]
    for start in range(0, count, chunk):
        size = min(chunk, count - start)
        with transaction.atomic():
            images = Image.objects.bulk_create(list(_images(owner, run, images_made, size, per_image)))
            images_made += len(images)
            captions = []
            for i in range(size):
                image = images[i // per_image]
                captions.append(
                    Caption(
                        image=image,
                        text=synthetic_caption(rng),
                        score=round(-rng.uniform(0.2, 1.5), 4),
                        rank=i % per_image,
                        model_version=version,
                        source=Caption.Source.MODEL,
                    )
                )
            Caption.objects.bulk_create(captions, batch_size=chunk)
        made += size
    return made


def _images(owner, run: str, first: int, size: int, per_image: int) -> Iterator[Image]:
    now = timezone.now()
    for n in range(first, first + (size + per_image - 1) // per_image):
        sha = hashlib.sha256(f"synthetic-{run}-{n}".encode()).hexdigest()
        yield Image(
            owner=owner,
            file=f"synthetic/{sha}.jpg",
            sha256=sha,
            original_name=f"synthetic-{n}.jpg",
            width=500,
            height=375,
            format="JPEG",
            size=0,
            status=Image.Status.DONE,
            visibility=Image.Visibility.PUBLIC,
            captioned_at=now,
        )


def main(argv: list[str] | None = None) -> int:
    from django.contrib.auth import get_user_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", type=int)
    parser.add_argument("--user", default="synthetic", help="owner of the rows (created if missing)")
    parser.add_argument("--per-image", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk", type=int, default=5000, help="rows per INSERT transaction")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("N must be at least 1")
    User = get_user_model()  # noqa: N806 - Django's idiom
    owner, _ = User.objects.get_or_create(**{User.USERNAME_FIELD: args.user})
    started = time.perf_counter()
    made = generate_captions(
        owner=owner, count=args.count, per_image=args.per_image, seed=args.seed, chunk=max(100, args.chunk)
    )
    print(f"{made} captions created in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
