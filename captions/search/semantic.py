"""Search by meaning: the query as a sentence embedding, and the images nearest to it in pgvector.

Three lists, each of images the user may see, best first (`nearest` gives the first two):
* by caption: the image's shown caption (Image.caption_embedding) is close in meaning to the query
  ("puppy" finds "a brown dog runs on the grass");
* by picture: the photo itself, projected into the same space (Image.visual_embedding), is close
  to the query: it reaches photos whose caption missed what the query names;
* `by_tag`: a concept tag of the image (ImageTag) is one of the query's words ("banana");
* `by_photo_words`: the photo's pooled features are near where the training photos described with the
  query's words lie (ml/word_vectors.py): the keywords' list.

The vector lists walk the HNSW indexes with pgvector's iterative scan, so that filtering by
visibility still yields `limit` rows; a similarity floor keeps unrelated images out (every image is
somewhat similar to any query).
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import connection

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Near:
    image_id: int
    similarity: float  # cosine similarity (tags: the tag's probability)
    label: str = ""  # by_tag: the tag that matched


@functools.lru_cache(maxsize=512)
def embed_query(query: str) -> tuple[float, ...]:
    """The query's sentence embedding (cached: paging through results embeds it once)."""
    from ml.text_embedding import shared_embedder  # numpy + tokenizers: no TensorFlow in the web process

    return tuple(float(x) for x in shared_embedder().embed([query])[0])


def vector_literal(vector: Sequence[float] | np.ndarray) -> str:
    """pgvector's text form of a vector, for a query parameter."""
    return "[" + ",".join(f"{x:.6g}" for x in vector) + "]"


def visible_sql(user_id: int | None) -> tuple[str, list]:
    """The SQL condition (on captions_image `i`) and parameters of the images `user_id` may see."""
    if user_id is None:
        return "i.visibility = 'public'", []
    return "(i.visibility = 'public' OR i.owner_id = %s)", [user_id]


def nearest(
    vector: tuple[float, ...], user_id: int | None, limit: int, picture: tuple[float, ...] | None = None
) -> tuple[list[Near], list[Near]]:
    """(by caption, by picture): the visible images nearest to a query's embedding (`embed_query`; the
    photos' projections meet `picture` instead when given, see `picture_query`), each list best first,
    at most `limit` long and above its similarity floor. One statement for both (HNSW scans; the
    connection's hnsw.* settings let them go past the images the user cannot see)."""
    visible, params = visible_sql(user_id)
    literals = {
        "caption_embedding": vector_literal(vector),
        "visual_embedding": vector_literal(picture if picture is not None else vector),
    }
    parts, values = [], []
    for column, literal in literals.items():
        parts.append(f"""
            (SELECT '{column}', i.id, 1 - (i.{column} <=> %s::vector)
             FROM captions_image i
             WHERE i.{column} IS NOT NULL AND {visible}
             ORDER BY i.{column} <=> %s::vector
             LIMIT %s)
        """)
        values += [literal, *params, literal, limit]
    with connection.cursor() as cursor:
        cursor.execute(" UNION ALL ".join(parts), values)
        rows = cursor.fetchall()
    floors = {
        "caption_embedding": settings.IMGCAP_SEARCH_CAPTION_FLOOR,
        "visual_embedding": settings.IMGCAP_SEARCH_PICTURE_FLOOR,
    }
    lists: dict[str, list[Near]] = {column: [] for column in floors}
    for column, image_id, similarity in rows:
        lists[column].append(Near(int(image_id), float(similarity)))
    for column, found in lists.items():
        found.sort(key=lambda n: (-n.similarity, -n.image_id))  # relaxed_order: nearly sorted only
        if found:
            # A short query is only so similar to any sentence ("puppy" and "a brown dog runs on the
            # grass": 0.25): what counts is being near the best match, above a floor for no match at all.
            floor = max(floors[column], settings.IMGCAP_SEARCH_RELATIVE_FLOOR * found[0].similarity)
            lists[column] = [n for n in found if n.similarity >= floor]
    return lists["caption_embedding"], lists["visual_embedding"]


@functools.lru_cache(maxsize=1)
def _word_vectors():
    """The serving model's words in the photo space (ml/word_vectors.py), or None without the file."""
    from ml.paths import default_model_dir  # numpy only: no TensorFlow in the web process
    from ml.word_vectors import WordVectors

    directory = settings.IMGCAP_MODEL_DIR or default_model_dir()
    try:
        return WordVectors.load(directory)
    except (OSError, ValueError, KeyError) as exc:
        logger.error("imgcap search: unusable word vectors in %s (%s)", directory, exc)
        return None


def forget_word_vectors() -> None:
    """Read the model directory's word vectors again on the next query (tests, a model change)."""
    _word_vectors.cache_clear()
    _from_word_vectors.cache_clear()


@functools.lru_cache(maxsize=1024)
def _from_word_vectors(method: str, query: str) -> tuple[float, ...] | None:
    """WordVectors.`method`(query) as a tuple (cached: paging through results asks again), or None."""
    vectors = _word_vectors()
    found = getattr(vectors, method)(query) if vectors is not None else None
    return None if found is None else tuple(float(x) for x in found)


def preload() -> None:
    """Read now what every search reads from disk: the query embedder (about 90 MB, 0.5-0.7 s) and the
    model's word vectors, so that a web process's first search is as fast as the others. Never fails:
    what cannot load now is tried again, and logged, by the first search that needs it."""
    if not settings.IMGCAP_SEMANTIC_SEARCH:
        return
    from ml.text_embedding import shared_embedder

    try:
        shared_embedder()
    except Exception as exc:  # noqa: BLE001 - a web process starts without it; search falls back to words
        logger.warning("imgcap search: the query embedder did not load at start (%s)", exc)
    _word_vectors()


# A query of at most this many words meets the photos' projections with the sentence vector of its
# words added: keywords R@10 31.5 -> 33.1 on the retrieval benchmark (bench/README.md). A longer query
# is a sentence already, as the projection was trained on, and is left as typed.
SHORT_QUERY_WORDS = 3


def picture_query(query: str, embedding: tuple[float, ...]) -> tuple[float, ...]:
    """What the photos' projections are compared with: the query's embedding, plus, for a short query,
    where the training captions using its words lie in the same space (ml/word_vectors.py: a two-word
    query embeds far from the sentences the projection learned from)."""
    if len(re.findall(r"[a-z]+", query.lower())) > SHORT_QUERY_WORDS:
        return embedding
    words = _from_word_vectors("sentence_vector", query)
    if words is None:
        return embedding
    both = np.asarray(embedding, np.float32) + np.asarray(words, np.float32)
    return tuple(float(x) for x in both / max(float(np.linalg.norm(both)), 1e-12))


def photo_words_vector(query: str) -> tuple[float, ...] | None:
    """Where photos described with the query's words lie in the encoder's feature space; None when the
    model has no word vectors or knows none of the words."""
    return _from_word_vectors("query_vector", query)


def by_photo_words(query: str, user_id: int | None, limit: int) -> list[Near]:
    """The visible photos whose pooled features are nearest to where photos described with the query's
    words lie ("goalie" reaches a goalkeeper whose caption says "a man in a net"), best first."""
    vector = photo_words_vector(query)
    if vector is None:
        return []
    visible, params = visible_sql(user_id)
    literal = vector_literal(vector)
    sql = f"""
        SELECT i.id, 1 - (i.features <=> %s::halfvec) FROM captions_image i
        WHERE i.features IS NOT NULL AND {visible}
        ORDER BY i.features <=> %s::halfvec
        LIMIT %s
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [literal, *params, literal, limit])
        rows = cursor.fetchall()
    found = sorted((Near(int(i), float(sim)) for i, sim in rows), key=lambda n: (-n.similarity, -n.image_id))
    if not found or found[0].similarity <= 0:
        return []
    floor = settings.IMGCAP_SEARCH_RELATIVE_FLOOR * found[0].similarity
    return [n for n in found if n.similarity >= floor]


def by_tag(query: str, user_id: int | None, limit: int) -> list[Near]:
    """Images with a tag that any word of the query names (stemmed: "bananas" finds "banana"), most
    probable first; of each image its most probable such tag (an image keeps the tags of its latest
    captioning only). The labels are a small vocabulary (a few hundred), matched in Python; then the top
    `limit` tags of each named label come from the (label, score) index, so a label on a fifth of the
    library costs what a rare one does."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT max(id) FROM captions_imagetag), tsvector_to_array(to_tsvector('english', %s))",
            [query],
        )
        newest, words = cursor.fetchone()
        named = set(words)
        labels = [label for label, stems in _tag_labels(cursor, newest).items() if stems & named]
        if not labels:
            return []
        visible, params = visible_sql(user_id)
        cursor.execute(
            f"""
            SELECT t.image_id, t.score, t.label FROM unnest(%s::text[]) AS named(label)
            CROSS JOIN LATERAL (
                SELECT t.image_id, t.score, t.label FROM captions_imagetag t
                JOIN captions_image i ON i.id = t.image_id
                WHERE t.label = named.label AND t.score >= %s AND {visible}
                ORDER BY t.score DESC LIMIT %s
            ) t
            """,
            [labels, settings.IMGCAP_SEARCH_TAG_FLOOR, *params, limit],
        )
        rows = cursor.fetchall()
    best: dict[int, Near] = {}
    for image_id, score, label in rows:
        if image_id not in best or score > best[image_id].similarity:
            best[image_id] = Near(int(image_id), float(score), label)
    return sorted(best.values(), key=lambda n: (-n.similarity, -n.image_id))[:limit]


# label -> its stems, for every label any tag has had, and the newest tag id looked at: tags are only
# ever added with higher ids, so one max(id) per search tells whether there is anything new to read.
_labels_lock = threading.Lock()
_LABELS_READ_BY_ID = 20_000  # more new tags than this: read every label through the index instead
_labels: dict[str, object] = {"stems": {}, "newest": 0}


def _tag_labels(cursor, newest: int | None) -> dict[str, frozenset[str]]:
    """Every tag label with its stems (English text search), brought up to tag id `newest`."""
    with _labels_lock:
        known = _labels["stems"]
        seen = int(_labels["newest"])  # type: ignore[arg-type]
    if newest is None or newest < seen:  # no tags, or fewer than before (emptied, restored): read anew
        known, seen = {}, 0
    if newest is None or newest == seen:
        return known  # type: ignore[return-value]
    if newest - seen > _LABELS_READ_BY_ID:
        # Every distinct label, one (label, score) index descent each: a few ms for hundreds of labels,
        # where DISTINCT over the rows reads them all (270 ms at 450,000 tags).
        cursor.execute("""
            WITH RECURSIVE labels(label) AS (
                (SELECT label FROM captions_imagetag ORDER BY label LIMIT 1)
                UNION ALL
                SELECT (
                    SELECT t.label FROM captions_imagetag t WHERE t.label > l.label ORDER BY t.label LIMIT 1
                ) FROM labels l WHERE l.label IS NOT NULL
            )
            SELECT label, tsvector_to_array(to_tsvector('english', label)) FROM labels WHERE label IS NOT NULL
        """)
    else:  # the tags added since: few
        cursor.execute(
            "SELECT DISTINCT label, tsvector_to_array(to_tsvector('english', label)) FROM captions_imagetag "
            "WHERE id > %s AND id <= %s",
            [seen, newest],
        )
    grown = {**known, **{label: frozenset(stems) for label, stems in cursor.fetchall()}}  # type: ignore[dict-item]
    with _labels_lock:
        _labels.update(stems=grown, newest=newest)
    return grown


def forget_tag_labels() -> None:
    """Read the tag labels again (tests: each test database starts its ids anew)."""
    with _labels_lock:
        _labels.update(stems={}, newest=0)
