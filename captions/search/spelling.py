"""Typo tolerance: query words no caption uses are corrected to the nearest word the captions use.

The vocabulary is read from the captions themselves (the newest IMGCAP_SPELLING_SAMPLE captions,
unstemmed, with how many captions use each word), so it follows what the library holds and needs
no extension (the embedded Postgres has no pg_trgm). It is cached per process for a few minutes.
Distances are optimal string alignment (a swap of two letters counts once: "dgo" -> "dog"), from
rapidfuzz.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
from rapidfuzz import distance, process

_WORD = re.compile(r"[^\W\d_]+")  # letters only: numbers and codes are never "corrected"
_lock = threading.Lock()
_cache: dict[str, object] = {"words": None, "at": 0.0}


@dataclass(frozen=True)
class Correction:
    query: str  # what to search for
    changed: bool  # whether that differs from what was typed


def vocabulary() -> dict[str, int]:
    """word -> number of captions using it, among the newest captions (cached per process)."""
    with _lock:
        words = _cache["words"]
        if words is not None and time.monotonic() - float(_cache["at"]) < settings.IMGCAP_SPELLING_CACHE_S:
            return words  # type: ignore[return-value]
    sample = int(settings.IMGCAP_SPELLING_SAMPLE)
    sql = f"""
        SELECT word, ndoc FROM ts_stat($$
            SELECT to_tsvector('simple', text) FROM (
                SELECT text FROM captions_caption ORDER BY id DESC LIMIT {sample}) c
        $$)
    """
    with connection.cursor() as cursor:
        cursor.execute(sql)
        found = {word: int(n) for word, n in cursor.fetchall() if _WORD.fullmatch(word)}
    with _lock:
        _cache.update(words=found, at=time.monotonic())
    return found


def _used(words: list[str]) -> set[str]:
    """Those of `words` that some caption uses (any form of them): the cached vocabulary may be older
    than the newest captions, and holds only the newest of them. One statement, a GIN index probe per
    word: for an EXISTS Postgres would rather scan the table, expecting an early match, which for a
    word no caption uses means reading every caption (150 ms at a million), so sequential scans are
    off for this one statement."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('enable_seqscan'), set_config('enable_seqscan', 'off', true)")
        before = cursor.fetchone()[0]
        cursor.execute(
            "SELECT w FROM unnest(%s::text[]) AS w WHERE EXISTS "
            "(SELECT 1 FROM captions_caption WHERE search_vector @@ plainto_tsquery('english', w))",
            [words],
        )
        used = {str(row[0]) for row in cursor.fetchall()}
        cursor.execute("SELECT set_config('enable_seqscan', %s, true)", [before])
    return used


def forget_vocabulary() -> None:
    """Drop the cached vocabulary (tests; it also expires by itself)."""
    with _lock:
        _cache.update(words=None, at=0.0)


def correct(query: str) -> Correction:
    """`query` with each word the captions never use (3+ letters) replaced by the closest word they use:
    one edit away for words up to 5 letters, two for longer ones; ties go to the more common word."""
    words = vocabulary()
    if not words:
        return Correction(query, False)
    nearest: dict[str, str] = {}  # a typed word the sampled captions do not use -> its correction
    for typed in _WORD.findall(query):
        lower = typed.lower()
        if len(lower) < 3 or lower in words or lower in nearest:
            continue
        limit = 1 if len(lower) <= 5 else 2
        near = process.extract(
            lower, words.keys(), scorer=distance.OSA.distance, score_cutoff=limit, limit=20
        )
        if near:
            nearest[lower] = min(near, key=lambda hit: (hit[1], -words[hit[0]], hit[0]))[0]
    # Only a word that has a correction needs asking whether an older caption uses it as typed.
    for used in _used(sorted(nearest)) if nearest else ():
        del nearest[used]
    fixed = _WORD.sub(lambda match: nearest.get(match.group(0).lower(), match.group(0)), query)
    return Correction(fixed, fixed != query)
