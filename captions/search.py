"""Full-text search over every caption (model and human), on Postgres or SQLite.

Postgres: a stored generated tsvector column `search_vector` (to_tsvector('english', text): stemming and
stop words) with a GIN index, `websearch_to_tsquery` for what people type, `ts_rank_cd` to rank and
`ts_headline` for snippets. SQLite: an FTS5 table over the captions (external content, Porter stemming)
kept in sync by triggers, `bm25` to rank and `snippet()` for snippets. Both are created by migration
0002, each only on its own database.

An image matches when one of its captions does; it ranks by its best-matching caption, whose snippet
is shown. Only images visible to the user are searched.

Bounded work: a search ranks the `IMGCAP_SEARCH_CANDIDATES` (1,000) most recent matching captions the
user can see, not every match, so that a word found in a quarter of a million captions costs about what
a rare one does. When there are more matches, `SearchResults.capped` is true and the count is the number
of images among those candidates ("1,000+" rather than an exact count, which would cost a pass over
every match).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
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
    image: Image  # as loaded by the queryset given to SearchResults (selectors.search: id and file only)
    caption: Caption  # the best-matching caption
    snippet: SafeString  # caption text, HTML-escaped, with the matching words in <mark>…</mark>
    score: float  # higher is better (Postgres ts_rank_cd; SQLite -bm25)
    best: Caption | None = None  # the image's best caption, when SearchResults was given `best_caption`

    @property
    def other_best_text(self) -> str | None:
        """The text of the image's best caption when that is not the matched caption, else None."""
        return self.best.text if self.best is not None and self.best.pk != self.caption.pk else None


@dataclass(frozen=True)
class Candidates:
    """The most recent matching captions visible to the user, newest first, and whether older ones exist."""

    rows: list[tuple[int, int, float]]  # (caption_id, image_id, score)
    capped: bool


class SearchResults:
    """The ranked hits of one query for one user, fetched a page at a time.

    A lazy sequence: Django's Paginator and DRF's pagination call `count()` and slice it. The candidates
    are found and scored once per instance (one statement on SQLite, two to four on Postgres) and ranked
    here; a page then costs a snippets query and the images with their captions.

    `images`: the queryset hits' images come from (selectors pass one that loads only what a hit shows,
    with the captions prefetched); `best_caption(image)`, if given, fills each hit's `best`.
    """

    def __init__(
        self,
        query: str,
        user,
        images: QuerySet[Image] | None = None,
        best_caption: Callable[[Image], Caption | None] | None = None,
    ) -> None:
        self.query = query.strip()
        self.user_id = user.pk if user is not None and user.is_authenticated else None
        self._images = images if images is not None else Image.objects.all()
        self._best_caption = best_caption
        self._backend = _backend()
        self._ranked: list[tuple[int, int, float]] | None = None
        self._capped = False

    @property
    def capped(self) -> bool:
        """True when more captions match than were ranked: count() is then a lower bound."""
        self._rank()
        return self._capped

    def count(self) -> int:
        return len(self._rank())

    def __len__(self) -> int:
        return self.count()

    def __getitem__(self, key: slice | int) -> list[SearchHit] | SearchHit:
        if isinstance(key, int):
            return self[key : key + 1][0]
        ranked = self._rank()[key]
        if not ranked:
            return []
        caption_ids = [caption_id for _, caption_id, _ in ranked]
        snippets = self._backend.snippets(self.query, caption_ids)
        images = self._images.in_bulk([image_id for image_id, _, _ in ranked])
        captions = _matched_captions(images.values(), caption_ids)
        best = self._best_caption or (lambda image: None)
        return [
            SearchHit(
                image=images[image_id],
                caption=captions[caption_id],
                snippet=_highlight(snippets.get(caption_id, captions[caption_id].text)),
                score=score,
                best=best(images[image_id]),
            )
            for image_id, caption_id, score in ranked
            if image_id in images and caption_id in captions
        ]

    def _rank(self) -> list[tuple[int, int, float]]:
        """(image_id, caption_id, score) of each matching image, best first: an image ranks by its best
        caption (ties: the newer caption), images with equal scores newest first."""
        if self._ranked is None:
            found = Candidates(rows=[], capped=False)
            if self.query:
                limit = max(1, settings.IMGCAP_SEARCH_CANDIDATES)
                found = self._backend.candidates(self.query, self.user_id, limit=limit)
            best: dict[int, tuple[float, int]] = {}
            for caption_id, image_id, score in found.rows:
                if image_id not in best or (score, caption_id) > best[image_id]:
                    best[image_id] = (score, caption_id)
            self._ranked = sorted(
                ((image_id, caption_id, score) for image_id, (score, caption_id) in best.items()),
                key=lambda hit: (-hit[2], -hit[0]),
            )
            self._capped = found.capped
        return self._ranked


def search_images(
    query: str,
    user,
    images: QuerySet[Image] | None = None,
    best_caption: Callable[[Image], Caption | None] | None = None,
) -> SearchResults:
    """Images visible to `user` whose captions match `query`, best first (see SearchResults)."""
    return SearchResults(query, user, images, best_caption)


def filter_captions(queryset: QuerySet[Caption], query: str) -> QuerySet[Caption]:
    """Keep the captions that match `query` (the same matching as the search)."""
    return _backend().filter(queryset, query.strip())


def _highlight(raw: str) -> SafeString:
    return mark_safe(escape(raw).replace(_OPEN, "<mark>").replace(_CLOSE, "</mark>"))  # noqa: S308 - escaped above


def _matched_captions(images, caption_ids: list[int]) -> dict[int, Caption]:
    """The matched captions, taken from the images' prefetched captions when they were prefetched."""
    wanted = set(caption_ids)
    found: dict[int, Caption] = {}
    for image in images:
        prefetched = getattr(image, "_prefetched_objects_cache", {}).get("captions")
        if prefetched is not None:
            found.update((c.pk, c) for c in prefetched if c.pk in wanted)
    missing = wanted - found.keys()
    if missing:
        found.update(Caption.objects.defer("words", "attention").in_bulk(missing))
    return found


def _visible_sql(user_id: int | None) -> tuple[str, list]:
    if user_id is None:
        return "i.visibility = 'public'", []
    return "(i.visibility = 'public' OR i.owner_id = %s)", [user_id]


class _Postgres:
    """The most recent matches, found in two ways whose costs the search weighs as it goes.

    * Scanning caption ids downwards from the newest (the primary key), testing each caption: cost grows
      with the captions looked at, about limit / (share of captions that match). Cheap for common words.
    * The GIN index: cost grows with the number of matches (each is a random heap read, ~15 times a
      scanned row on a 1M-caption table), whatever their age. Cheap for rare words.

    Left to itself, Postgres picks one plan from its estimates, and a wrong estimate (a rare word it takes
    for a common one, or two common words that seldom meet) means a scan of the whole table. So the
    shape of each statement fixes its plan, and the search chooses: it first scans the newest
    FIRST_WINDOW captions, then from the share that matched there either scans a window just big enough
    for the rest of the candidates or takes the GIN index for everything older, whichever costs less.
    Visibility is looked up for the candidates only (never a join over every match).
    """

    FIRST_WINDOW = 10_000
    GIN_ROW_COST = 15  # a match read through the GIN index costs about this many rows scanned in id order
    MAX_STEPS = 8  # then give up (capped): only when most matches are images the user cannot see

    # Each statement returns (caption_id, image_id, score, visible) for up to `n` matches, newest first.
    # `ts_match_vq` is what `@@` calls, but a function call is not something an index can serve: the id
    # range is scanned. In the GIN statement `c.id + 0` keeps the primary key out of the plan.
    _OUTER = """
        SELECT s.id, s.image_id, ts_rank_cd(s.search_vector, websearch_to_tsquery('english', %(q)s), 1),
               (SELECT {visible} FROM captions_image i WHERE i.id = s.image_id)
        FROM ({inner}) s
    """
    _SCAN = """
        SELECT c.id, c.image_id, c.search_vector FROM captions_caption c
        WHERE c.id > %(low)s AND c.id <= %(high)s
          AND ts_match_vq(c.search_vector, websearch_to_tsquery('english', %(q)s))
        ORDER BY c.id DESC LIMIT %(n)s
    """
    _GIN = """
        SELECT c.id, c.image_id, c.search_vector FROM captions_caption c
        WHERE c.search_vector @@ websearch_to_tsquery('english', %(q)s) AND c.id + 0 <= %(high)s
        ORDER BY c.id + 0 DESC LIMIT %(n)s
    """

    def candidates(self, query: str, user_id: int | None, *, limit: int) -> Candidates:
        with connection.cursor() as cursor:
            # A query of stop words only matches nothing; the newest id bounds the first window.
            cursor.execute(
                "SELECT numnode(websearch_to_tsquery('english', %s)), (SELECT max(id) FROM captions_caption)",
                [query],
            )
            nodes, newest = cursor.fetchone()
            if not nodes or newest is None:
                return Candidates(rows=[], capped=False)
            return self._walk(cursor, query, user_id, limit, newest)

    def _walk(self, cursor, query: str, user_id: int | None, limit: int, newest: int) -> Candidates:
        visible = "i.visibility = 'public'"
        if user_id is not None:
            visible = "(i.visibility = 'public' OR i.owner_id = %(u)s)"
        scan_sql = self._OUTER.format(visible=visible, inner=self._SCAN)
        gin_sql = self._OUTER.format(visible=visible, inner=self._GIN)
        found: list[tuple[int, int, float]] = []
        high = newest  # everything above `high` has been looked at
        scanned = matched = shown = 0
        use_gin = False
        window = self.FIRST_WINDOW
        for _ in range(self.MAX_STEPS):
            wanted = limit + 1 - len(found)  # one more than needed tells whether older matches exist
            share_visible = (shown + 1) / (matched + 1)
            n = min(int(wanted / share_visible) + 1, 10 * (limit + 1))
            if scanned and not use_gin:
                density = (matched + 1) / scanned
                # GIN: about density * high matches left; scan: about n / density rows to look at.
                use_gin = density * high * self.GIN_ROW_COST < n / density
                window = int(n / density * 1.25) + 100
            params = {"q": query, "u": user_id, "high": high, "n": n}
            if use_gin:
                cursor.execute(gin_sql, params)
            else:
                low = max(0, high - window)
                cursor.execute(scan_sql, {**params, "low": low})
            rows = cursor.fetchall()
            matched += len(rows)
            for caption_id, image_id, score, is_visible in rows:
                if is_visible:
                    shown += 1
                    found.append((int(caption_id), int(image_id), float(score)))
            if len(found) > limit:
                return Candidates(rows=found[:limit], capped=True)
            if len(rows) == n:
                below = int(rows[-1][0]) - 1  # stopped at the limit: carry on below the last one
            elif use_gin or low <= 0:
                return Candidates(rows=found, capped=False)  # no match is left below
            else:
                below = low
            if not use_gin:
                scanned += high - below
            high = below
        return Candidates(rows=found, capped=True)  # gave up looking further (mostly invisible matches)

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
    def candidates(self, query: str, user_id: int | None, *, limit: int) -> Candidates:
        match = fts5_query(query)
        if not match:
            return Candidates(rows=[], capped=False)
        visible, params = _visible_sql(user_id)
        # FTS5 walks its matches by rowid (= caption id), newest first, and stops at the limit.
        # bm25() is lower-is-better; scores are negated so that, as on Postgres, higher is better.
        sql = f"""
            SELECT c.id, c.image_id, -bm25({FTS_TABLE})
            FROM {FTS_TABLE} f
            JOIN captions_caption c ON c.id = f.rowid
            JOIN captions_image i ON i.id = c.image_id
            WHERE {FTS_TABLE} MATCH %s AND {visible}
            ORDER BY f.rowid DESC
            LIMIT %s
        """
        with connection.cursor() as cursor:
            cursor.execute(sql, [match, *params, limit + 1])
            rows = [(int(c), int(i), float(s)) for c, i, s in cursor.fetchall()]
        return Candidates(rows=rows[:limit], capped=len(rows) > limit)

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
