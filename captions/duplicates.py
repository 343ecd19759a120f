"""Near-duplicate photos: a resized, re-encoded or rotated copy of an image the owner already has.

Exact copies share a sha256 (intake returns the stored image). Near copies share a perceptual hash:
the DCT hash of imagehash (64 bits: the low frequencies of the picture, which survive resizing and
JPEG re-encoding), stored per image in a pgvector `bit(64)` column with an HNSW index on Hamming
distance. A photo is hashed upright (after its EXIF orientation) at intake; a new photo is compared in
its four quarter turns, so a rotated copy is found too. Found copies are reported, never refused.
"""

from __future__ import annotations

from collections.abc import Sequence

import imagehash
from django.conf import settings
from django.db import connection
from PIL import Image as PILImage

QUARTER_TURNS = (
    None,
    PILImage.Transpose.ROTATE_90,
    PILImage.Transpose.ROTATE_180,
    PILImage.Transpose.ROTATE_270,
)


def perceptual_hashes(picture: PILImage.Image) -> tuple[str, ...]:
    """The 64-bit perceptual hash of an upright, decoded picture and of its three quarter turns, each as a
    string of 64 '0'/'1' (pgvector's bit literal); the first is the one stored."""
    small = picture.convert("L").resize((128, 128), PILImage.Resampling.LANCZOS)  # cheap for big photos
    hashes = []
    for turn in QUARTER_TURNS:
        turned = small if turn is None else small.transpose(turn)
        bits = imagehash.phash(turned).hash.flatten()
        hashes.append("".join("1" if b else "0" for b in bits))
    return tuple(hashes)


def near_duplicates(
    owner_id: int, hashes: Sequence[str], exclude: Sequence[int] = (), limit: int = 5
) -> list[int]:
    """Ids of the owner's images whose hash is within IMGCAP_NEAR_DUPLICATE_BITS of any of `hashes`
    (a photo's quarter turns), closest first. One statement: an HNSW probe per hash."""
    distinct = list(dict.fromkeys(hashes))
    if not distinct:
        return []
    probe = """
        (SELECT i.id, i.perceptual_hash <~> %s::bit(64) AS d
         FROM captions_image i
         WHERE i.owner_id = %s AND i.perceptual_hash IS NOT NULL AND NOT (i.id = ANY(%s))
         ORDER BY i.perceptual_hash <~> %s::bit(64)
         LIMIT %s)
    """
    probes = " UNION ALL ".join([probe] * len(distinct))
    sql = f"SELECT id, min(d) FROM ({probes}) near WHERE d <= %s GROUP BY id"
    params: list = []
    for bits in distinct:
        params += [bits, owner_id, list(exclude), bits, limit]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, settings.IMGCAP_NEAR_DUPLICATE_BITS])
        found = {int(image_id): int(distance) for image_id, distance in cursor.fetchall()}
    return sorted(found, key=lambda i: (found[i], -i))[:limit]
