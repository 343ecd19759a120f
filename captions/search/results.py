"""One search: full-text and meaning, fused into one ranking, fetched a page at a time.

The query's words are first corrected against the captions' vocabulary (spelling.py) for the word and
tag lists; meaning is searched with the query as typed. Up to four lists of images, each best first:
the captions' words (lexical.py), the shown caption's meaning, the photo itself and its concept tags
(semantic.py). Reciprocal rank fusion (Cormack et al. 2009) adds weight / (RRF_K + rank) over the
lists an image is in: an image found several ways rises. The weights were chosen on the retrieval
benchmark (bench/bench_retrieval.py); exact words weigh most among what a short query finds. A model's
lower-ranked candidates match at a lower weight than what the image shows. Each hit says how it
matched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import QuerySet
from django.utils.safestring import SafeString

from captions.models import Caption, Image
from captions.search import lexical, semantic, spelling

logger = logging.getLogger(__name__)

RRF_K = 60
# How much each way of matching counts, chosen on the retrieval benchmark (bench/bench_retrieval.py,
# Flickr8k dev, recall@10 of held-out human captions): the photo's own vector finds most (57.8 against
# 48.9 with meaning first), the shown caption's meaning adds a little; a caption's own words weigh most,
# so that its top 20 matches rank above any photo found only by its picture.
WEIGHTS = {"words": 4.0, "other_words": 1.0, "meaning": 0.5, "picture": 3.0, "photo_words": 3.0, "tag": 1.0}
_SHOWN_AS = {"other_words": "words", "photo_words": "picture"}  # how a hit says it was found that way
# Query embeddings, beside the request's own thread (two: a threaded server may search twice at once).
_embedding = ThreadPoolExecutor(max_workers=2, thread_name_prefix="imgcap-query-embedding")


@dataclass(frozen=True)
class SearchHit:
    image: Image  # as loaded by the queryset given to SearchResults (selectors.search: id and file only)
    caption: Caption  # the caption whose words matched, else the image's best caption
    snippet: SafeString  # caption text, HTML-escaped, with the matching words in <mark>…</mark>
    score: float  # fused relevance, higher is better (comparable within one search only)
    best: Caption | None = None  # the image's best caption, when SearchResults was given `best_caption`
    matched_by: tuple[str, ...] = ()  # "words", "meaning", "picture", "tag": how the image was found
    tags: tuple[str, ...] = ()  # the image's tags that the query named

    @property
    def other_best_text(self) -> str | None:
        """The text of the image's best caption when that is not the matched caption, else None."""
        return self.best.text if self.best is not None and self.best.pk != self.caption.pk else None

    @property
    def reasons(self) -> list[str]:
        """How it matched, in words for people (the search page; search.js says the same)."""
        said = {"words": "matching words", "meaning": "similar meaning", "picture": "looks like it"}
        out = [said[way] for way in self.matched_by if way in said]
        return out + [f"tag: {tag}" for tag in self.tags]


@dataclass
class _Ranked:
    image_id: int
    score: float = 0.0
    caption_id: int | None = None  # the lexical match
    matched_by: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)


class SearchResults:
    """The ranked hits of one query for one user, fetched a page at a time.

    A lazy sequence: Django's Paginator and DRF's pagination call `count()` and slice it. The lists are
    found and fused once per instance; a page then costs a snippets query and the images with their
    captions.

    `images`: the queryset hits' images come from (selectors pass one that loads only what a hit shows,
    with the captions prefetched); `best_caption(image)`, if given, fills each hit's `best` (and is the
    caption a hit found by meaning shows).
    """

    def __init__(
        self,
        query: str,
        user,
        images: QuerySet[Image] | None = None,
        best_caption: Callable[[Image], Caption | None] | None = None,
    ) -> None:
        self.typed = query.strip()
        self.correction = spelling.correct(self.typed) if self.typed else None
        self.query = self.correction.query if self.correction is not None else ""
        self.user_id = user.pk if user is not None and user.is_authenticated else None
        self._images = images if images is not None else Image.objects.all()
        self._best_caption = best_caption
        self._ranked: list[_Ranked] | None = None
        self._capped = False

    @property
    def corrected(self) -> str | None:
        """The query searched for when words of the typed one were corrected, else None."""
        return self.query if self.correction is not None and self.correction.changed else None

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
        lexical_ids = [r.caption_id for r in ranked if r.caption_id is not None]
        snippets = lexical.LexicalSearch().snippets(self.query, lexical_ids) if lexical_ids else {}
        images = self._images.in_bulk([r.image_id for r in ranked])
        captions = _matched_captions(images.values(), lexical_ids)
        best_of = self._best_caption or (lambda image: None)
        hits = []
        for r in ranked:
            image = images.get(r.image_id)
            if image is None:
                continue
            best = best_of(image)
            caption = captions.get(r.caption_id) if r.caption_id is not None else best
            if caption is None:
                continue  # nothing to show (the image lost its captions meanwhile)
            raw = snippets.get(caption.pk)
            snippet = lexical.highlight(raw) if raw is not None else lexical.plain(caption.text)
            hits.append(SearchHit(image, caption, snippet, r.score, best, tuple(r.matched_by), tuple(r.tags)))
        return hits

    def _rank(self) -> list[_Ranked]:
        if self._ranked is None:
            self._ranked = self._fuse() if self.query else []
        return self._ranked

    def _fuse(self) -> list[_Ranked]:
        meaning = None
        if settings.IMGCAP_SEMANTIC_SEARCH:
            # Meaning is searched with what was typed: a word no caption uses may be a real one the
            # sentence model knows ("goalie" is not a typo of "goal"); words and tags, corrected. The
            # query's embedding (~10 ms of numpy, which lets go of the GIL) is worked out while Postgres
            # finds the other lists.
            meaning = _embedding.submit(semantic.embed_query, self.typed)
        limit = max(1, settings.IMGCAP_SEARCH_CANDIDATES)
        found = lexical.LexicalSearch().candidates(self.query, self.user_id, limit=limit)
        self._capped = found.capped
        fused: dict[int, _Ranked] = {}

        def add(image_id: int, rank: int, way: str) -> _Ranked:
            entry = fused.get(image_id)
            if entry is None:
                entry = fused[image_id] = _Ranked(image_id)
            entry.score += WEIGHTS[way] / (RRF_K + rank)
            label = _SHOWN_AS.get(way, way)
            if label not in entry.matched_by:
                entry.matched_by.append(label)
            return entry

        # An image's best lexical match: what it shows before its other candidates, then the score.
        best: dict[int, lexical.LexicalMatch] = {}
        for match in found.rows:
            held = best.get(match.image_id)
            if held is None or (match.tier, -match.score, -match.caption_id) < (
                held.tier,
                -held.score,
                -held.caption_id,
            ):
                best[match.image_id] = match
        ordered = sorted(best.values(), key=lambda m: (m.tier, -m.score, -m.image_id))
        for rank, match in enumerate(ordered, start=1):
            add(
                match.image_id, rank, "words" if match.tier == 0 else "other_words"
            ).caption_id = match.caption_id

        if meaning is not None:
            n = max(1, settings.IMGCAP_SEARCH_SEMANTIC_CANDIDATES)
            by_tag = semantic.by_tag(self.query, self.user_id, n)
            # The words as typed, as for meaning: a word no caption uses may be one the training photos know.
            by_photo_words = semantic.by_photo_words(self.typed, self.user_id, n)
            by_caption, by_picture = [], []
            try:
                vector = meaning.result()
            except (ImportError, OSError) as exc:  # the embedding model is not installed or unreadable
                logger.error("imgcap search: no search by meaning (%s); searching words and tags", exc)
            else:
                picture = semantic.picture_query(self.typed, vector)
                by_caption, by_picture = semantic.nearest(vector, self.user_id, n, picture)
            for rank, near in enumerate(by_caption, start=1):
                add(near.image_id, rank, "meaning")
            for rank, near in enumerate(by_picture, start=1):
                add(near.image_id, rank, "picture")
            for rank, near in enumerate(by_photo_words, start=1):
                add(near.image_id, rank, "photo_words")
            for rank, near in enumerate(by_tag, start=1):
                add(near.image_id, rank, "tag").tags.append(near.label)
        return sorted(fused.values(), key=lambda r: (-r.score, -r.image_id))


def search_images(
    query: str,
    user,
    images: QuerySet[Image] | None = None,
    best_caption: Callable[[Image], Caption | None] | None = None,
) -> SearchResults:
    """Images visible to `user` that match `query`, best first (see SearchResults)."""
    return SearchResults(query, user, images, best_caption)


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
