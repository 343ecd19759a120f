"""More like this (the encoder's pooled features in pgvector) and near-duplicates at upload (perceptual
hashes of real photos, resized, re-encoded and turned)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image as PILImage

from captions.models import IMAGE_FEATURE_DIM, Image
from captions.services.images import set_visibility
from tests.web.platform_harness import FLICKR_IMAGES

pytestmark = pytest.mark.django_db


def features(seed: int, near: np.ndarray | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vector = np.abs(rng.normal(size=IMAGE_FEATURE_DIM)).astype(np.float32)  # ReLU6 features are >= 0
    return vector if near is None else near + 0.05 * vector


@pytest.fixture
def photos() -> list[bytes]:
    files = sorted(FLICKR_IMAGES.glob("*.jpg"))[:3]
    if len(files) < 3:
        pytest.skip(f"real photos not found in {FLICKR_IMAGES}")
    return [f.read_bytes() for f in files]


def jpeg(
    data: bytes, *, scale: float = 1.0, turn: PILImage.Transpose | None = None, quality: int = 75
) -> bytes:
    picture = PILImage.open(io.BytesIO(data)).convert("RGB")
    if scale != 1.0:
        picture = picture.resize((int(picture.width * scale), int(picture.height * scale)))
    if turn is not None:
        picture = picture.transpose(turn)
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=quality)
    return out.getvalue()


def test_similar_images_are_the_nearest_by_features_among_the_visible(
    api, user, other_user, make_image, model_version, save_captions, photos
):
    base = features(0)
    mine = make_image(user, "public", photos[0])
    save_captions(mine, model_version, ["a dog on the grass"], features=base)
    close = make_image(user, "private", photos[1])
    save_captions(close, model_version, ["a dog on a lawn"], features=features(1, near=base))
    far = make_image(user, "public", photos[2])
    save_captions(far, model_version, ["a city at night"], features=features(2))
    theirs = make_image(other_user, "private", photos[1])
    save_captions(theirs, model_version, ["a dog"], features=features(3, near=base))

    body = api.get(f"/api/v1/images/{mine.pk}/similar/").json()
    assert [hit["image"]["id"] for hit in body] == [close.pk, far.pk]  # bob's private one is not shown
    assert body[0]["similarity"] > 0.99 > body[1]["similarity"]
    assert body[0]["near_duplicate"] is True and body[1]["near_duplicate"] is False
    assert body[0]["image"]["best_caption"] == "a dog on a lawn"
    assert [hit["image"]["id"] for hit in api.get(f"/api/v1/images/{mine.pk}/similar/?limit=1").json()] == [
        close.pk
    ]
    for bad in ("0", "51", "x", "99999999999999999999"):
        answer = api.get(f"/api/v1/images/{mine.pk}/similar/?limit={bad}")
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "bad_filter"

    # A stranger sees only public images, and only those of the same model's features.
    set_visibility(image=close, visibility="public")
    from rest_framework.test import APIClient

    stranger = [hit["image"]["id"] for hit in APIClient().get(f"/api/v1/images/{mine.pk}/similar/").json()]
    assert stranger == [close.pk, far.pk]
    Image.objects.filter(pk=far.pk).update(features_model_version=None)
    assert [hit["image"]["id"] for hit in api.get(f"/api/v1/images/{mine.pk}/similar/").json()] == [close.pk]

    # Not captioned yet: nothing to compare, not an error.
    pending = make_image(user, "private", jpeg(photos[2], quality=40))
    assert api.get(f"/api/v1/images/{pending.pk}/similar/").json() == []


def test_the_image_page_shows_tags_and_more_like_this(
    alice, user, make_image, model_version, save_captions, photos
):
    base = features(0)
    mine = make_image(user, "private", photos[0])
    save_captions(
        mine, model_version, ["a dog on the grass"], features=base, tags=[("dog", 0.9), ("ball", 0.3)]
    )
    close = make_image(user, "private", photos[1])
    save_captions(close, model_version, ["a dog on a lawn"], features=features(1, near=base))
    page = alice.get(f"/images/{mine.pk}/").content.decode()
    assert 'href="/?tag=dog"' in page and ">ball</a>" in page
    assert "More like this" in page and f'href="/images/{close.pk}/"' in page
    gallery = alice.get("/", {"tag": "dog"}).content.decode()
    assert f'href="/images/{mine.pk}/"' in gallery and f'href="/images/{close.pk}/"' not in gallery


def test_near_copies_are_found_at_upload_resized_reencoded_or_turned(
    api, user, other_user, make_image, photos
):
    original = make_image(user, "private", photos[0])
    copies = {
        "resized": jpeg(photos[0], scale=0.5),
        "re-encoded": jpeg(photos[0], quality=30),
        "turned": jpeg(photos[0], turn=PILImage.Transpose.ROTATE_90),
        "upside down": jpeg(photos[0], turn=PILImage.Transpose.ROTATE_180, scale=0.8),
    }
    family = [original.pk]
    for what, data in copies.items():
        answer = api.post("/api/v1/images/", {"image": io.BytesIO(data)}, format="multipart")
        assert answer.status_code == 202, answer.content
        # Reported (the original, or a copy of it that is nearer still), and stored anyway.
        assert answer.json()["near_duplicate_of"] in family, what
        family.append(answer.json()["id"])
    other = api.post("/api/v1/images/", {"image": io.BytesIO(photos[1])}, format="multipart").json()
    assert other["near_duplicate_of"] is None  # another photo
    # Another user's copy is theirs: nothing is said about alice's photos.
    assert make_image(other_user, "private", copies["resized"]).near_duplicate_of_id is None
    assert Image.objects.filter(owner=user).count() == 2 + len(copies)
