"""More like this: the images nearest to one image by the encoder's pooled features (pgvector HNSW,
cosine), among those the user may see, from the same model version's features."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection

from captions.models import Image
from captions.search.semantic import vector_literal, visible_sql


@dataclass(frozen=True)
class Similar:
    image_id: int
    similarity: float  # cosine similarity of the pooled features, 1 = the same picture


def similar_images(image: Image, user_id: int | None, limit: int) -> list[Similar]:
    """The nearest images to `image` (not itself), best first; none when it has no features yet."""
    mine = Image.objects.filter(pk=image.pk).values_list("features", "features_model_version_id").first()
    if mine is None or mine[0] is None:
        return []  # not captioned yet, or by an encoder whose features are not stored
    features, version = vector_literal(mine[0]), mine[1]
    visible, params = visible_sql(user_id)
    sql = f"""
        SELECT i.id, 1 - (i.features <=> %s::halfvec) FROM captions_image i
        WHERE i.features IS NOT NULL AND i.id <> %s AND i.features_model_version_id = %s AND {visible}
        ORDER BY i.features <=> %s::halfvec
        LIMIT %s
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [features, image.pk, version, *params, features, limit])
        rows = cursor.fetchall()
    found = [Similar(int(i), float(s)) for i, s in rows]
    found.sort(key=lambda s: (-s.similarity, -s.image_id))  # iterative scans return them nearly sorted
    return found
