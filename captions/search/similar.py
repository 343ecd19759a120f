"""More like this: the images nearest to one image by the encoder's pooled features (pgvector HNSW,
cosine), among those the user may see, from the same model version's features."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection

from captions.models import Image
from captions.search.semantic import visible_sql


@dataclass(frozen=True)
class Similar:
    image_id: int
    similarity: float  # cosine similarity of the pooled features, 1 = the same picture


def similar_images(image: Image, user_id: int | None, limit: int) -> list[Similar]:
    """The nearest images to `image` (not itself), best first; none when it has no features yet."""
    if not Image.objects.filter(pk=image.pk, features__isnull=False).exists():
        return []  # not captioned yet, or by an encoder whose features are not stored
    visible, params = visible_sql(user_id)
    # Scalar subqueries, not a join: the planner takes them as parameters, so the HNSW index serves
    # the ORDER BY.
    mine = "(SELECT {} FROM captions_image WHERE id = %s)"
    features, version = mine.format("features"), mine.format("features_model_version_id")
    sql = f"""
        SELECT i.id, 1 - (i.features <=> {features}) FROM captions_image i
        WHERE i.features IS NOT NULL AND i.id <> %s AND i.features_model_version_id = {version}
          AND {visible}
        ORDER BY i.features <=> {features}
        LIMIT %s
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [image.pk, image.pk, image.pk, *params, image.pk, limit])
        rows = cursor.fetchall()
    found = [Similar(int(i), float(s)) for i, s in rows]
    found.sort(key=lambda s: (-s.similarity, -s.image_id))  # iterative scans return them nearly sorted
    return found
