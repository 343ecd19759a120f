"""Every read of captions' data, always through what a user may see: their own images and public ones.

Another user's private image does not exist for you: lookups raise Http404, never 403.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db.models import (
    Case,
    Count,
    Exists,
    F,
    Max,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    When,
    prefetch_related_objects,
)
from django.db.models.functions import Coalesce, Lower
from django.http import Http404
from rest_framework.authtoken.models import Token

from captions.attention import AttentionFormatError, decode_attention
from captions.ingest import RejectedInput
from captions.models import (
    Album,
    AlbumItem,
    Batch,
    BatchItem,
    Caption,
    Image,
    ImageTag,
    ModelVersion,
    Webhook,
    WebhookDelivery,
)
from captions.search import SearchResults, search_images, similar

STATUSES = tuple(Image.Status.values)


@dataclass(frozen=True)
class CaptionChoice:
    """An image's best caption and the N-best list it comes from."""

    best: Caption | None
    candidates: list[Caption] = field(default_factory=list)
    human: list[Caption] = field(default_factory=list)  # newest first
    metadata: Caption | None = None  # the description the photo's file carried, if any


@dataclass(frozen=True)
class BatchStatus:
    batch: Batch
    counts: dict[str, int]
    # fetching (URLs still downloading) / pending (nothing started) / processing / done (nothing left
    # to do; failures are counted)
    status: str
    items: list[BatchItem]
    fetching: list[str]  # the URLs not downloaded yet, in the order given


def visible_images(user) -> QuerySet[Image]:
    """Images `user` may see: their own and public ones (only public ones for anonymous users)."""
    public = Q(visibility=Image.Visibility.PUBLIC)
    if user is None or not user.is_authenticated:
        return Image.objects.filter(public)
    return Image.objects.filter(public | Q(owner=user))


def active_model_version() -> ModelVersion | None:
    return ModelVersion.objects.filter(active=True).first()


def _captions_prefetch() -> list[Prefetch]:
    return [
        Prefetch(
            "captions", queryset=Caption.objects.select_related("model_version").order_by("rank", "-id")
        ),
        Prefetch("tags", queryset=ImageTag.objects.order_by("rank")),
    ]


def with_captions(images: QuerySet[Image]) -> QuerySet[Image]:
    """Prefetch what `choose_captions` needs, and the tags, in two extra queries for a whole page."""
    return images.select_related("owner").prefetch_related(*_captions_prefetch())


def load_captions(image: Image, *, new: bool = False) -> Image:
    """`image` (e.g. one intake just stored or found) with what `choose_captions` needs, without
    reading the image row again; `new`: just stored, so it has nothing to read (no query)."""
    if new:
        nothing = [Prefetch("captions", Caption.objects.none()), Prefetch("tags", ImageTag.objects.none())]
        prefetch_related_objects([image], *nothing)
    else:
        prefetch_related_objects([image], *_captions_prefetch())
    return image


def list_images(
    user,
    *,
    status: str | None = None,
    batch: int | None = None,
    mine: bool = False,
    visibility: str | None = None,
    ids: Sequence[int] | None = None,
    tag: str | None = None,
    sha256: Sequence[str] | None = None,
    album: int | None = None,
    sort: str = "-added",
    needs_review: bool = False,
) -> QuerySet[Image]:
    """Visible images, filtered (the filters are checked by their callers' forms and filter
    serializers) and in the order `sort` names (IMAGE_SORTS; newest upload first by default).
    `sha256` lists only the user's own images: whether someone else has the same bytes is theirs to
    know. `needs_review`: only those whose shown caption needs review (see `needs_review`)."""
    images = visible_images(user)
    if ids is not None:
        images = images.filter(pk__in=ids)
    if sha256 is not None:
        images = images.filter(owner=user, sha256__in=sha256) if _signed_in(user) else images.none()
    if status:
        images = images.filter(status=status)
    if visibility:
        images = images.filter(visibility=visibility)
    if batch is not None:
        # Batches are never public: another user's batch id lists nothing, not their public images in it.
        if _signed_in(user):
            images = images.filter(batch_items__batch_id=batch, batch_items__batch__owner=user)
        else:
            images = images.none()
    if album is not None:
        # As batches: someone else's album id lists nothing (their albums are reached by share links).
        if _signed_in(user):
            images = images.filter(album_items__album_id=album, album_items__album__owner=user)
        else:
            images = images.none()
    if mine:
        images = images.filter(owner=user) if _signed_in(user) else images.none()
    tag = (tag or "").strip().lower()  # labels are stored lower case (ml/encoders/imagenet_labels.txt)
    if tag:
        images = images.filter(pk__in=ImageTag.objects.filter(label=tag).values("image_id"))
    if needs_review:
        images = _needing_review(images)
    return sort_images(with_captions(images), sort)


# The orders a gallery or API client can ask for; "-" first: descending.
IMAGE_SORTS = {
    "-added": "newest upload first",
    "added": "oldest upload first",
    "-taken": "newest photo first (date taken; the upload date when the photo has none)",
    "taken": "oldest photo first",
    "name": "file name A-Z",
    "-name": "file name Z-A",
    "confidence": "least sure caption first (to review them)",
    "-confidence": "surest caption first",
}


def sort_images(images: QuerySet[Image], sort: str) -> QuerySet[Image]:
    """`images` in the order `sort` names (a key of IMAGE_SORTS); ids break ties, so pages never
    overlap. Images without a model confidence come last either way."""
    descending, key = sort.startswith("-"), sort.lstrip("-")
    if key == "taken":
        images = images.annotate(sort_key=Coalesce("taken_at", "created_at"))
    elif key == "name":
        images = images.annotate(sort_key=Lower("original_name"))
    elif key == "confidence":
        best = Caption.objects.filter(image=OuterRef("pk"), source=Caption.Source.MODEL, rank=0)
        newest = best.order_by("-created_at", "-id").values("confidence")[:1]
        images = images.annotate(sort_key=Subquery(newest))
    elif key == "added":
        images = images.annotate(sort_key=F("created_at"))
    else:
        raise ValueError(f"sort must be one of {', '.join(IMAGE_SORTS)}; got {sort!r}")
    order = F("sort_key").desc(nulls_last=True) if descending else F("sort_key").asc(nulls_last=True)
    return images.order_by(order, "-id" if descending else "id")


def _needing_review(images: QuerySet[Image]) -> QuerySet[Image]:
    """`needs_review` in SQL: no human caption, and the best model caption (rank 0 of the active
    version's captions, else of the newest version's, as choose_captions picks) below the threshold."""
    best = Caption.objects.filter(image=OuterRef("pk"), source=Caption.Source.MODEL, rank=0)
    active = active_model_version()
    if active is not None:
        best = best.annotate(other=Case(When(model_version=active, then=0), default=1)).order_by(
            "other", "-created_at", "-id"
        )
    else:
        best = best.order_by("-created_at", "-id")
    # A person's caption, or a description the photo carried, is shown instead: nothing to review.
    shown_instead = Caption.objects.filter(
        image=OuterRef("pk"), source__in=[Caption.Source.HUMAN, Caption.Source.METADATA]
    )
    return (
        images.annotate(best_confidence=Subquery(best.values("confidence")[:1]))
        .filter(best_confidence__lt=settings.IMGCAP_NEEDS_REVIEW_BELOW)
        .exclude(Exists(shown_instead))
    )


def filter_all_images(*, status: str | None, batch: int | None) -> QuerySet[Image]:
    images = Image.objects.all()
    if status:
        images = images.filter(status=status)
    if batch is not None:
        images = images.filter(batch_items__batch_id=batch)
    return images


def get_image(user, image_id: int | str) -> Image:
    """A visible image, or Http404."""
    try:
        return with_captions(visible_images(user)).get(pk=int(image_id))
    except (Image.DoesNotExist, ValueError, TypeError):
        raise Http404("no such image") from None


def get_own_image(user, image_id: int | str) -> Image:
    """An image `user` may change: 404 if they cannot see it, 403 if they see it but do not own it."""
    image = get_image(user, image_id)
    if image.owner_id != getattr(user, "pk", None):
        raise PermissionDenied("only the owner can change this image")
    return image


def get_image_by_file(user, name: str) -> Image:
    """The visible image stored as media file `name` (Http404 otherwise): what the media view serves."""
    if "\x00" in name:  # no stored name has one, and Postgres refuses it in a query
        raise Http404("no such file")
    # The same bytes may be several owners' images: a user's own comes first (it is served whole).
    own_first = Case(When(owner_id=user.pk, then=0), default=1)
    image = visible_images(user).filter(file=name).order_by(own_first, "id").first()
    if image is None:
        raise Http404("no such file")
    return image


def choose_captions(image: Image, active: ModelVersion | None = None) -> CaptionChoice:
    """The best caption: the newest human one if any, else the description the photo carried (a
    metadata caption), else rank 0 of the active model's captions, falling back to the newest model
    captions; candidates: that model version's N-best list. exports._shown picks the same in SQL."""
    captions = list(image.captions.all())
    human = sorted(
        (c for c in captions if c.source == Caption.Source.HUMAN), key=lambda c: c.id, reverse=True
    )
    metadata = max(
        (c for c in captions if c.source == Caption.Source.METADATA), key=lambda c: c.id, default=None
    )
    model = [c for c in captions if c.source == Caption.Source.MODEL]
    version_id = None
    if active is not None and any(c.model_version_id == active.pk for c in model):
        version_id = active.pk
    elif model:
        version_id = max(model, key=lambda c: (c.created_at, c.id)).model_version_id
    candidates = sorted((c for c in model if c.model_version_id == version_id), key=lambda c: (c.rank, c.id))
    best = human[0] if human else metadata or (candidates[0] if candidates else None)
    return CaptionChoice(best=best, candidates=candidates, human=human, metadata=metadata)


def needs_review(best: Caption | None) -> bool:
    """Whether an image's shown caption (`choose_captions(...).best`) is the model's and the model is
    probably wrong about it: its confidence is below IMGCAP_NEEDS_REVIEW_BELOW. A person's caption
    never needs review; nor does a model caption without a confidence (older models)."""
    return (
        best is not None
        and best.source == Caption.Source.MODEL
        and best.confidence is not None
        and best.confidence < settings.IMGCAP_NEEDS_REVIEW_BELOW
    )


def get_batch(user, batch_id: int | str) -> Batch:
    """The user's own batch, or Http404 (batches are never public)."""
    if user is None or not user.is_authenticated:
        raise Http404("no such batch")
    try:
        return Batch.objects.get(pk=int(batch_id), owner=user)
    except (Batch.DoesNotExist, ValueError, TypeError):
        raise Http404("no such batch") from None


def find_own_batch(user, batch_id: int) -> Batch:
    """The user's own batch for a new item, or RejectedInput (400): naming a batch is part of the input."""
    try:
        return get_batch(user, batch_id)
    except Http404:
        raise RejectedInput("unknown_batch", f"you have no batch {batch_id}") from None


def batch_status(batch: Batch) -> BatchStatus:
    rows = Image.objects.filter(batch_items__batch=batch).values("status").annotate(n=Count("id"))
    counts = dict.fromkeys(STATUSES, 0)
    for row in rows:
        counts[row["status"]] = row["n"]
    fetching = [entry["url"] for entry in sorted(batch.urls_waiting, key=lambda entry: entry["position"])]
    if fetching:
        overall = "fetching"
    elif counts["pending"] + counts["processing"] == 0:
        overall = "done"
    elif counts["processing"] + counts["done"] + counts["failed"] == 0:
        overall = "pending"
    else:
        overall = "processing"
    items = list(BatchItem.objects.filter(batch=batch).select_related("image").order_by("position", "id"))
    return BatchStatus(batch=batch, counts=counts, status=overall, items=items, fetching=fetching)


def list_batches(user) -> QuerySet[Batch]:
    if user is None or not user.is_authenticated:
        return Batch.objects.none()
    return Batch.objects.filter(owner=user).annotate(n_items=Count("items")).order_by("-created_at", "-id")


def list_webhooks(user) -> QuerySet[Webhook]:
    """The user's webhooks, newest first (webhooks are never anyone else's to see)."""
    if user is None or not user.is_authenticated:
        return Webhook.objects.none()
    return Webhook.objects.filter(owner=user).order_by("-created_at", "-id")


def get_webhook(user, webhook_id: int | str) -> Webhook:
    """The user's own webhook, or Http404."""
    try:
        return list_webhooks(user).get(pk=int(webhook_id))
    except (Webhook.DoesNotExist, ValueError, TypeError):
        raise Http404("no such webhook") from None


def list_deliveries(webhook: Webhook) -> QuerySet[WebhookDelivery]:
    """A webhook's deliveries, newest first."""
    return WebhookDelivery.objects.filter(webhook=webhook).order_by("-created_at", "-id")


# --- albums ------------------------------------------------------------------------------------------


def _signed_in(user) -> bool:
    return user is not None and user.is_authenticated


def list_albums(user, *, name: str | None = None) -> QuerySet[Album]:
    """The user's albums by name, each with `n_images`, `cover_id` (the image added last) and
    `last_added`; `name`: only the album of that exact name (how the uploader finds one)."""
    if not _signed_in(user):
        return Album.objects.none()
    if name is not None and "\x00" in name:  # no album is named so, and Postgres refuses it in a query
        return Album.objects.none()
    albums = Album.objects.filter(owner=user)
    if name is not None:
        albums = albums.filter(name=" ".join(name.split()))
    newest = AlbumItem.objects.filter(album=OuterRef("pk")).order_by("-added_at", "-id")
    return albums.annotate(
        n_images=Count("items"),
        cover_id=Subquery(newest.values("image_id")[:1]),
        last_added=Max("items__added_at"),
    ).order_by("name", "id")


def get_album(user, album_id: int | str) -> Album:
    """The user's own album (with list_albums' annotations), or Http404: albums are their owner's."""
    try:
        return list_albums(user).get(pk=int(album_id))
    except (Album.DoesNotExist, ValueError, TypeError):
        raise Http404("no such album") from None


def find_own_album(user, album_id: int | str) -> Album:
    """The user's album for new uploads, or RejectedInput (400): naming an album is part of the input."""
    try:
        return get_album(user, album_id)
    except Http404:
        raise RejectedInput("unknown_album", f"you have no album {album_id}") from None


def get_shared_album(token: str) -> Album:
    """The album shared under `token` (anyone holding the link may see it), or Http404."""
    if not token or "\x00" in token or len(token) > 64:
        raise Http404("no such album")
    try:
        return Album.objects.select_related("owner").get(share_token=token)
    except Album.DoesNotExist:
        raise Http404("no such album") from None


def album_images(album: Album) -> QuerySet[Image]:
    """An album's images, the most recently added first, with what choose_captions needs. No visibility
    filter: the album's owner owns them all, and a share link shows them whatever their visibility."""
    return with_captions(Image.objects.filter(album_items__album=album)).order_by(
        "-album_items__added_at", "-id"
    )


def get_shared_image(token: str, image_id: int | str) -> Image:
    """An image of the album shared under `token`, or Http404."""
    album = get_shared_album(token)
    try:
        return album_images(album).get(pk=int(image_id))
    except (Image.DoesNotExist, ValueError, TypeError):
        raise Http404("no such image") from None


def image_neighbours(user, image: Image) -> tuple[int | None, int | None]:
    """The visible images just newer and just older than `image`, in the gallery's order (newest
    upload first): the image page's previous and next."""
    images = visible_images(user)
    newer = images.filter(
        Q(created_at__gt=image.created_at) | Q(created_at=image.created_at, id__gt=image.pk)
    )
    older = images.filter(
        Q(created_at__lt=image.created_at) | Q(created_at=image.created_at, id__lt=image.pk)
    )
    before = newer.order_by("created_at", "id").values_list("id", flat=True).first()
    after = older.order_by("-created_at", "-id").values_list("id", flat=True).first()
    return before, after


def albums_of(user, image: Image) -> list[Album]:
    """The user's albums `image` is in, by name (the image page lists them to its owner)."""
    if not _signed_in(user) or image.owner_id != user.pk:
        return []
    return list(Album.objects.filter(owner=user, items__image=image).order_by("name", "id"))


# What a search hit shows (captions.api.serializers.SearchHitSerializer, the search page), and what
# choose_captions needs to find each image's best caption: not the words, attention or image metadata.
SEARCH_IMAGE_FIELDS = ("id", "file")
SEARCH_CAPTION_FIELDS = ("id", "image", "text", "source", "rank", "model_version", "created_at")


def slim_images(*fields: str) -> QuerySet[Image]:
    """Images with only SEARCH_IMAGE_FIELDS (and `fields`) loaded, their captions prefetched with only
    what choose_captions needs: search hits, similar images, the search vectors' upkeep."""
    captions = Caption.objects.only(*SEARCH_CAPTION_FIELDS).order_by("rank", "-id")
    return Image.objects.only(*SEARCH_IMAGE_FIELDS, *fields).prefetch_related(
        Prefetch("captions", queryset=captions)
    )


def search(user, query: str) -> SearchResults:
    """Visible images whose captions match `query`, ranked, each with a highlighted snippet and the image's
    best caption (`hit.best`, as choose_captions picks it). Hits are slim: images carry only their id and
    file, captions only what choose_captions and a hit show (see SEARCH_*_FIELDS)."""
    images = slim_images()
    active: list[ModelVersion | None] = []  # looked up once, and only when a page has hits

    def best_caption(image: Image) -> Caption | None:
        if not active:
            active.append(active_model_version())
        return choose_captions(image, active[0]).best

    return search_images(query, user, images=images, best_caption=best_caption)


@dataclass(frozen=True)
class SimilarImage:
    """One of an image's nearest images, shaped like a search hit (the search page's card, the API's
    SearchImageSerializer): `image`, `other_best_text`, plus how similar it is."""

    image: Image
    similarity: float
    near_duplicate: bool
    best: Caption | None

    @property
    def other_best_text(self) -> str | None:
        return self.best.text if self.best is not None else None


def similar_images(user, image: Image, limit: int = 12) -> list[SimilarImage]:
    """The visible images that look most like `image`, most similar first; near copies are flagged."""
    user_id = user.pk if user is not None and user.is_authenticated else None
    near = similar.similar_images(image, user_id, limit)
    if not near:
        return []
    found = slim_images("near_duplicate_of").in_bulk([n.image_id for n in near])
    active = active_model_version()
    copies = {image.near_duplicate_of_id} | {
        pk for pk, im in found.items() if im.near_duplicate_of_id == image.pk
    }
    return [
        SimilarImage(
            image=found[n.image_id],
            similarity=n.similarity,
            near_duplicate=n.image_id in copies or n.similarity >= settings.IMGCAP_NEAR_DUPLICATE_SIMILARITY,
            best=choose_captions(found[n.image_id], active).best,
        )
        for n in near
        if n.image_id in found
    ]


# --- the web UI's reads ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CaptionAttention:
    """Where the model looked for each word of one of its captions: maps is float32 [words, h, w]."""

    caption: Caption
    words: list[str]
    maps: np.ndarray


def caption_attention(image: Image, caption_id: int | str | None = None) -> CaptionAttention:
    """The attention maps of one model caption of a visible `image` (prefetched by get_image): by default
    the best model caption (rank 0 of the version choose_captions picks), else the caption `caption_id`.

    Raises RejectedInput (404) when that caption does not exist or has no maps, (400) for a bad id.
    """
    model_captions = [c for c in image.captions.all() if c.source == Caption.Source.MODEL]
    if caption_id in (None, ""):
        candidates = choose_captions(image, active_model_version()).candidates
        caption = candidates[0] if candidates else None
    else:
        try:
            wanted = int(caption_id)
        except (TypeError, ValueError):
            raise RejectedInput("bad_filter", f"caption must be a number; got {caption_id!r}") from None
        caption = next((c for c in model_captions if c.pk == wanted), None)
        if caption is None:
            raise RejectedInput("not_found", f"image {image.pk} has no model caption {wanted}", status=404)
    if caption is None or not caption.attention:
        raise RejectedInput("no_attention", f"image {image.pk} has no attention maps yet", status=404)
    try:
        maps = decode_attention(caption.attention)
    except AttentionFormatError as exc:
        message = f"image {image.pk}'s attention maps are unreadable: {exc}"
        raise RejectedInput("no_attention", message, status=404) from None
    words = [str(w) for w in (caption.words or caption.text.split())]
    count = min(len(words), maps.shape[0])  # the maps cover the words, not the end token
    return CaptionAttention(caption=caption, words=words[:count], maps=maps[:count])


def get_api_token(user) -> Token | None:
    """The user's REST API token, if they made one."""
    if user is None or not user.is_authenticated:
        return None
    return Token.objects.filter(user=user).first()


def recent_batches(user, limit: int = 20) -> list[Batch]:
    """The user's newest batches, for the gallery's batch filter."""
    return list(list_batches(user)[:limit])


# Words not worth suggesting as a search.
_STOPWORDS = frozenset(
    (  # noqa: SIM905 - a list of words reads better as words
        "a an the and or of in on at to with is are its it his her their two three four some other "
        "near into onto by for from while who that this there up down over under out one"
    ).split()
)


def search_suggestions(user, limit: int = 6, sample: int = 30) -> list[str]:
    """Words that occur most in the captions of the newest `sample` images `user` can see: what an empty
    search page offers. Two small indexed queries, whatever the number of captions."""
    newest = list(visible_images(user).order_by("-created_at", "-id").values_list("id", flat=True)[:sample])
    counts: Counter[str] = Counter()
    for text in Caption.objects.filter(image_id__in=newest).values_list("text", flat=True):
        words = {w.strip(".,!?;:\"'()").lower() for w in text.split()}
        counts.update(w for w in words if len(w) > 2 and w.isalpha() and w not in _STOPWORDS)
    return [word for word, _ in counts.most_common(limit)]


def batch_items_with_captions(state: BatchStatus) -> list[tuple[BatchItem, Caption | None]]:
    """A batch's items, each with its image's best caption (one extra query for all of them)."""
    ids = [item.image_id for item in state.items]
    images = with_captions(Image.objects.filter(id__in=ids)).in_bulk()
    active = active_model_version()
    return [
        (item, choose_captions(images[item.image_id], active).best if item.image_id in images else None)
        for item in state.items
    ]
