"""Full-text search over every caption (model, human and the photos' own descriptions), in Postgres.

A stored generated tsvector column `search_vector` (to_tsvector('english', text): stemming and stop
words) with a GIN index (migration 0002), `websearch_to_tsquery` for what people type, `ts_rank_cd` to
rank and `ts_headline` for snippets.

Bounded work: a search ranks the `IMGCAP_SEARCH_CANDIDATES` (200) most recent matching captions the
user can see, not every match, so that a word found in a quarter of a million captions costs about what
a rare one does. When there are more matches, `Candidates.capped` is true.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection
from django.db.models import BooleanField, QuerySet
from django.db.models.expressions import RawSQL
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from captions.models import Caption

# Highlight markers and stand-ins for < and > (private-use characters): swapped for markup after the
# text is HTML-escaped.
_OPEN, _CLOSE, _LT, _GT = "\ue000", "\ue001", "\ue002", "\ue003"
_BAD = "\ufffd"  # what a marker typed into a caption becomes
SNIPPET_WORDS = 24


@dataclass(frozen=True)
class LexicalMatch:
    caption_id: int
    image_id: int
    score: float  # ts_rank_cd: higher is better
    # 0: a caption the image shows or could (human, the photo's description, the model's best); 1: a lower
    # model candidate
    tier: int


@dataclass(frozen=True)
class Candidates:
    """The most recent matching captions the user may search, newest first, and whether older ones exist."""

    rows: list[LexicalMatch]
    capped: bool


def highlight(raw: str) -> SafeString:
    """A snippet from LexicalSearch.snippets (or any caption text) as safe HTML, matches in <mark>."""
    text = escape(raw).replace(_OPEN, "<mark>").replace(_CLOSE, "</mark>")
    return mark_safe(text.replace(_LT, "&lt;").replace(_GT, "&gt;"))  # noqa: S308 - escaped above


def plain(text: str) -> SafeString:
    """A caption's text as safe HTML, nothing highlighted (markers a person typed are neutralised)."""
    return highlight(text.replace(_OPEN, _BAD).replace(_CLOSE, _BAD).replace(_LT, _BAD).replace(_GT, _BAD))


class LexicalSearch:
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
    Visibility is looked up for the candidates only (never a join over every match), and with it whether
    the caption is still searchable: a model caption (or photo description) whose image has a human
    caption was replaced by its owner and no longer matches.
    """

    FIRST_WINDOW = 10_000
    GIN_ROW_COST = 15  # a match read through the GIN index costs about this many rows scanned in id order
    MAX_STEPS = 8  # then give up (capped): only when most matches are images the user cannot see

    # Each statement returns (caption_id, image_id, score, searchable, rank, source) for up to `n` matches,
    # newest first.
    # `ts_match_vq` is what `@@` calls, but a function call is not something an index can serve: the id
    # range is scanned. In the GIN statement `c.id + 0` keeps the primary key out of the plan.
    _OUTER = """
        SELECT s.id, s.image_id, ts_rank_cd(s.search_vector, websearch_to_tsquery('english', %(q)s), 1),
               (SELECT {visible} FROM captions_image i WHERE i.id = s.image_id)
               AND (s.source = 'human' OR NOT EXISTS (
                   SELECT 1 FROM captions_caption h WHERE h.image_id = s.image_id AND h.source = 'human')),
               s.rank, s.source
        FROM ({inner}) s
    """
    _SCAN = """
        SELECT c.id, c.image_id, c.search_vector, c.rank, c.source FROM captions_caption c
        WHERE c.id > %(low)s AND c.id <= %(high)s
          AND ts_match_vq(c.search_vector, websearch_to_tsquery('english', %(q)s))
        ORDER BY c.id DESC LIMIT %(n)s
    """
    _GIN = """
        SELECT c.id, c.image_id, c.search_vector, c.rank, c.source FROM captions_caption c
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
        found: list[LexicalMatch] = []
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
            for caption_id, image_id, score, searchable, rank, source in rows:
                if searchable:
                    shown += 1
                    # What the image shows (a human caption, the photo's description, the model's best:
                    # all rank 0) before its other candidates; a description keeps the model's best
                    # searchable beside it, as words about what is in the picture.
                    tier = 0 if source == "human" or rank == 0 else 1
                    found.append(LexicalMatch(int(caption_id), int(image_id), float(score), tier))
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
        marks = f"StartSel={_OPEN}, StopSel={_CLOSE}"
        # A caption of up to SNIPPET_WORDS words is shown whole (ts_headline would otherwise pick a window
        # and may drop its first words); a longer one as a window around the match.
        whole = f"{marks}, HighlightAll=true"
        window = f"{marks}, MaxWords={SNIPPET_WORDS}, MinWords=8, HighlightAll=false"
        # ts_headline's parser takes "<b>" for markup and drops it: angle brackets travel as stand-ins and
        # come back in highlight(); highlight markers a person typed are neutralised.
        sql = f"""
            SELECT id, ts_headline('english', translate(text, '<>{_OPEN}{_CLOSE}', '{_LT}{_GT}{_BAD}{_BAD}'),
                                   websearch_to_tsquery('english', %s),
                                   CASE WHEN array_length(regexp_split_to_array(trim(text), '\\s+'), 1) <= %s
                                        THEN %s ELSE %s END)
            FROM captions_caption WHERE id = ANY(%s)
        """
        with connection.cursor() as cursor:
            cursor.execute(sql, [query, SNIPPET_WORDS, whole, window, caption_ids])
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


def filter_captions(queryset: QuerySet[Caption], query: str) -> QuerySet[Caption]:
    """Keep the captions whose words match `query` (the same matching as the search)."""
    return LexicalSearch().filter(queryset, query.strip())
