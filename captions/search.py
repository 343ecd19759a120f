"""Full-text search over every caption (model and human), on Postgres or SQLite.

Postgres: a stored generated tsvector column `search_vector` (to_tsvector('english', text): stemming and
stop words) with a GIN index, `websearch_to_tsquery` for what people type, `ts_rank_cd` to rank and
`ts_headline` for snippets. SQLite: an FTS5 table over the captions (external content, Porter stemming)
kept in sync by triggers, `bm25` to rank and `snippet()` for snippets. Both are created by migration
0002, each only on its own database.

An image matches when one of its captions does; it ranks by its best-matching caption, whose snippet
is shown. Only images visible to the user are searched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.db import connection
from django.db.models import BooleanField, QuerySet
from django.db.models.expressions import RawSQL
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from captions.models import Caption, Image

FTS_TABLE = "captions_caption_fts"
# Highlight markers that cannot occur in captions; swapped for <mark> after the text is HTML-escaped.
_OPEN, _CLOSE = "\ue000", "\ue001"
SNIPPET_WORDS = 24

# The 'english' Postgres configuration drops these; on SQLite we drop them from the query the same way.
_STOP_WORDS = frozenset(
    "a an and are as at be but by for from has he her his in into is it its of on or she that the their "  # noqa: SIM905
    "them there they this to was were will with".split()
)


@dataclass(frozen=True)
class SearchHit:
    image: Image
    caption: Caption
    snippet: SafeString  # caption text, HTML-escaped, with the matching words in <mark>…</mark>
    score: float  # higher is better (Postgres ts_rank_cd; SQLite -bm25)


class SearchResults:
    """The ranked hits of one query for one user, fetched a page at a time.

    A lazy sequence: Django's Paginator and DRF's pagination call `count()` and slice it.
    """

    def __init__(self, query: str, user) -> None:
        self.query = query.strip()
        self.user_id = user.pk if user is not None and user.is_authenticated else None
        self._backend = _backend()
        self._count: int | None = None

    def count(self) -> int:
        if self._count is None:
            self._count = self._backend.count(self.query, self.user_id) if self.query else 0
        return self._count

    def __len__(self) -> int:
        return self.count()

    def __getitem__(self, key: slice | int) -> list[SearchHit] | SearchHit:
        if isinstance(key, int):
            return self[key : key + 1][0]
        start = key.start or 0
        stop = key.stop if key.stop is not None else self.count()
        if not self.query or stop <= start:
            return []
        ranked = self._backend.page(self.query, self.user_id, limit=stop - start, offset=start)
        if not ranked:
            return []
        caption_ids = [caption_id for _, caption_id, _ in ranked]
        snippets = self._backend.snippets(self.query, caption_ids)
        images = Image.objects.select_related("owner").in_bulk([image_id for image_id, _, _ in ranked])
        captions = Caption.objects.select_related("model_version").in_bulk(caption_ids)
        return [
            SearchHit(
                image=images[image_id],
                caption=captions[caption_id],
                snippet=_highlight(snippets.get(caption_id, captions[caption_id].text)),
                score=score,
            )
            for image_id, caption_id, score in ranked
            if image_id in images and caption_id in captions
        ]


def search_images(query: str, user) -> SearchResults:
    """Images visible to `user` whose captions match `query`, best first (see SearchResults)."""
    return SearchResults(query, user)


def filter_captions(queryset: QuerySet[Caption], query: str) -> QuerySet[Caption]:
    """Keep the captions that match `query` (the same matching as the search)."""
    return _backend().filter(queryset, query.strip())


def _highlight(raw: str) -> SafeString:
    return mark_safe(escape(raw).replace(_OPEN, "<mark>").replace(_CLOSE, "</mark>"))  # noqa: S308 - escaped above


def _visible_sql(user_id: int | None) -> tuple[str, list]:
    if user_id is None:
        return "i.visibility = 'public'", []
    return "(i.visibility = 'public' OR i.owner_id = %s)", [user_id]


class _Postgres:
    def count(self, query: str, user_id: int | None) -> int:
        visible, params = _visible_sql(user_id)
        sql = f"""
            SELECT COUNT(DISTINCT c.image_id)
            FROM captions_caption c JOIN captions_image i ON i.id = c.image_id
            WHERE c.search_vector @@ websearch_to_tsquery('english', %s) AND {visible}
        """
        with connection.cursor() as cursor:
            cursor.execute(sql, [query, *params])
            return int(cursor.fetchone()[0])

    def page(
        self, query: str, user_id: int | None, *, limit: int, offset: int
    ) -> list[tuple[int, int, float]]:
        visible, params = _visible_sql(user_id)
        # ts_rank_cd (cover density: more and closer occurrences of the query words score higher) with
        # normalisation 1 (divide by 1 + log(length)), so among equal matches shorter captions rank first.
        # Plain ts_rank barely rewards repeated words and let length dominate in our tests.
        sql = f"""
            SELECT image_id, caption_id, score FROM (
                SELECT DISTINCT ON (c.image_id) c.image_id, c.id AS caption_id,
                       ts_rank_cd(c.search_vector, q.query, 1) AS score
                FROM captions_caption c
                JOIN captions_image i ON i.id = c.image_id
                CROSS JOIN websearch_to_tsquery('english', %s) AS q(query)
                WHERE c.search_vector @@ q.query AND {visible}
                ORDER BY c.image_id, score DESC, c.id DESC
            ) best
            ORDER BY score DESC, image_id DESC
            LIMIT %s OFFSET %s
        """
        with connection.cursor() as cursor:
            cursor.execute(sql, [query, *params, limit, offset])
            return [(int(a), int(b), float(s)) for a, b, s in cursor.fetchall()]

    def snippets(self, query: str, caption_ids: list[int]) -> dict[int, str]:
        options = (
            f"StartSel={_OPEN}, StopSel={_CLOSE}, MaxWords={SNIPPET_WORDS}, MinWords=8, HighlightAll=false"
        )
        sql = """
            SELECT id, ts_headline('english', text, websearch_to_tsquery('english', %s), %s)
            FROM captions_caption WHERE id = ANY(%s)
        """
        with connection.cursor() as cursor:
            cursor.execute(sql, [query, options, caption_ids])
            return {int(i): s for i, s in cursor.fetchall()}

    def filter(self, queryset: QuerySet[Caption], query: str) -> QuerySet[Caption]:
        if not query:
            return queryset
        match = RawSQL(
            "captions_caption.search_vector @@ websearch_to_tsquery('english', %s)",
            [query],
            output_field=BooleanField(),
        )
        return queryset.alias(_fts_match=match).filter(_fts_match=True)


class _SQLite:
    def count(self, query: str, user_id: int | None) -> int:
        match = fts5_query(query)
        if not match:
            return 0
        visible, params = _visible_sql(user_id)
        sql = f"""
            SELECT COUNT(DISTINCT c.image_id)
            FROM {FTS_TABLE} f
            JOIN captions_caption c ON c.id = f.rowid
            JOIN captions_image i ON i.id = c.image_id
            WHERE {FTS_TABLE} MATCH %s AND {visible}
        """
        with connection.cursor() as cursor:
            cursor.execute(sql, [match, *params])
            return int(cursor.fetchone()[0])

    def page(
        self, query: str, user_id: int | None, *, limit: int, offset: int
    ) -> list[tuple[int, int, float]]:
        match = fts5_query(query)
        if not match:
            return []
        visible, params = _visible_sql(user_id)
        # bm25() is lower-is-better; scores are negated so that, as on Postgres, higher is better.
        sql = f"""
            WITH hits AS (
                SELECT c.image_id AS image_id, c.id AS caption_id, -bm25({FTS_TABLE}) AS score
                FROM {FTS_TABLE} f
                JOIN captions_caption c ON c.id = f.rowid
                JOIN captions_image i ON i.id = c.image_id
                WHERE {FTS_TABLE} MATCH %s AND {visible}
            ), best AS (
                SELECT image_id, caption_id, score,
                       ROW_NUMBER() OVER (PARTITION BY image_id ORDER BY score DESC, caption_id DESC) AS n
                FROM hits
            )
            SELECT image_id, caption_id, score FROM best WHERE n = 1
            ORDER BY score DESC, image_id DESC
            LIMIT %s OFFSET %s
        """
        with connection.cursor() as cursor:
            cursor.execute(sql, [match, *params, limit, offset])
            return [(int(a), int(b), float(s)) for a, b, s in cursor.fetchall()]

    def snippets(self, query: str, caption_ids: list[int]) -> dict[int, str]:
        match = fts5_query(query)
        marks = ", ".join(["%s"] * len(caption_ids))
        sql = f"""
            SELECT rowid, snippet({FTS_TABLE}, 0, %s, %s, '…', {SNIPPET_WORDS})
            FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH %s AND rowid IN ({marks})
        """
        with connection.cursor() as cursor:
            cursor.execute(sql, [_OPEN, _CLOSE, match, *caption_ids])
            return {int(i): s for i, s in cursor.fetchall()}

    def filter(self, queryset: QuerySet[Caption], query: str) -> QuerySet[Caption]:
        if not query:
            return queryset
        match = fts5_query(query)
        if not match:
            return queryset.none()
        ids = RawSQL(f"SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH %s", [match])
        return queryset.filter(id__in=ids)


def fts5_query(query: str) -> str:
    """What a person typed → an FTS5 query: every word must occur (each quoted, so no operator syntax);
    stop words are dropped as Postgres' 'english' configuration does."""
    words = [w for w in re.findall(r"\w+", query.lower()) if w not in _STOP_WORDS]
    return " ".join(f'"{w}"' for w in words)


def _backend() -> _Postgres | _SQLite:
    if connection.vendor == "postgresql":
        return _Postgres()
    if connection.vendor == "sqlite":
        return _SQLite()
    raise NotImplementedError(f"caption search supports Postgres and SQLite, not {connection.vendor}")


# --- schema (migration 0002, and re-checked after every migrate on SQLite) ------------------------------

POSTGRES_FORWARD = [
    "ALTER TABLE captions_caption ADD COLUMN search_vector tsvector "
    "GENERATED ALWAYS AS (to_tsvector('english', text)) STORED",
    "CREATE INDEX captions_caption_search_gin ON captions_caption USING GIN (search_vector)",
]
POSTGRES_BACKWARD = [
    "DROP INDEX IF EXISTS captions_caption_search_gin",
    "ALTER TABLE captions_caption DROP COLUMN IF EXISTS search_vector",
]

SQLITE_TRIGGERS = {
    f"{FTS_TABLE}_ai": f"""
        CREATE TRIGGER IF NOT EXISTS {FTS_TABLE}_ai AFTER INSERT ON captions_caption BEGIN
            INSERT INTO {FTS_TABLE}(rowid, text) VALUES (new.id, new.text);
        END""",
    f"{FTS_TABLE}_ad": f"""
        CREATE TRIGGER IF NOT EXISTS {FTS_TABLE}_ad AFTER DELETE ON captions_caption BEGIN
            INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, text) VALUES ('delete', old.id, old.text);
        END""",
    f"{FTS_TABLE}_au": f"""
        CREATE TRIGGER IF NOT EXISTS {FTS_TABLE}_au AFTER UPDATE OF text ON captions_caption BEGIN
            INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, text) VALUES ('delete', old.id, old.text);
            INSERT INTO {FTS_TABLE}(rowid, text) VALUES (new.id, new.text);
        END""",
}


def create_search_schema(schema_editor) -> None:
    """Migration forward: the vendor's search structures (nothing on other databases)."""
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        for sql in POSTGRES_FORWARD:
            schema_editor.execute(sql)
    elif vendor == "sqlite":
        ensure_sqlite_fts(schema_editor.connection)


def drop_search_schema(schema_editor) -> None:
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        for sql in POSTGRES_BACKWARD:
            schema_editor.execute(sql)
    elif vendor == "sqlite":
        with schema_editor.connection.cursor() as cursor:
            for trigger in SQLITE_TRIGGERS:
                cursor.execute(f"DROP TRIGGER IF EXISTS {trigger}")
            cursor.execute(f"DROP TABLE IF EXISTS {FTS_TABLE}")


def ensure_sqlite_fts(conn) -> None:
    """Create the FTS5 table and its triggers if missing, and rebuild the index when they were.

    Also run after every `migrate`: SQLite migrations that alter captions_caption copy it into a new
    table, which drops its triggers; this puts them back and re-indexes.
    """
    if conn.vendor != "sqlite":
        return
    with conn.cursor() as cursor:
        cursor.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'trigger')")
        present = {row[0] for row in cursor.fetchall()}
        if "captions_caption" not in present:
            return
        missing = FTS_TABLE not in present or any(t not in present for t in SQLITE_TRIGGERS)
        if not missing:
            return
        cursor.execute(
            f"CREATE VIRTUAL TABLE IF NOT EXISTS {FTS_TABLE} USING fts5("
            "text, content='captions_caption', content_rowid='id', "
            "tokenize='porter unicode61 remove_diacritics 2')"
        )
        for sql in SQLITE_TRIGGERS.values():
            cursor.execute(sql)
        cursor.execute(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('rebuild')")
