"""Shapes of the API's requests and answers. Reading and writing go through selectors and services."""

from __future__ import annotations

import datetime
from typing import Any
from urllib.parse import quote

import numpy as np
from django.urls import reverse
from django.utils.http import RFC3986_SUBDELIMS
from rest_framework import serializers

from captions.models import Caption, Image, Webhook, WebhookDelivery
from captions.selectors import BatchStatus, choose_captions, needs_review

# --- requests ---------------------------------------------------------------------------------------


class ImageUploadSerializer(serializers.Serializer):
    # Empty files pass here so that captions.ingest refuses them with its own code and message.
    image = serializers.FileField(
        allow_empty_file=True, help_text="The image file (JPEG, PNG, WebP, GIF, BMP, TIFF)."
    )
    visibility = serializers.ChoiceField(choices=Image.Visibility.choices, default=Image.Visibility.PRIVATE)
    batch = serializers.IntegerField(
        required=False,
        help_text="One of your batches: the image joins it (a rejection is listed in its `rejected`), so "
        "files sent one request each still make one batch, with its page and exports.",
    )
    album = serializers.IntegerField(
        required=False, help_text="One of your albums (id): the image is put in it, a duplicate too."
    )


class ImagePatchSerializer(serializers.Serializer):
    caption = serializers.CharField(
        required=False, allow_blank=True, help_text="A caption written by a person; model captions are kept."
    )
    visibility = serializers.ChoiceField(choices=Image.Visibility.choices, required=False)
    share_location = serializers.BooleanField(
        required=False, help_text="Let others see where the photo was taken (its EXIF GPS position)."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs:
            raise serializers.ValidationError('send "caption", "visibility" and/or "share_location"')
        return attrs


class BatchCreateSerializer(serializers.Serializer):
    images = serializers.ListField(
        child=serializers.FileField(allow_empty_file=True), required=False, help_text="Many image files."
    )
    archive = serializers.FileField(
        allow_empty_file=True, required=False, help_text="A zip archive of images."
    )
    urls = serializers.ListField(
        child=serializers.CharField(max_length=2048), required=False, help_text="http(s) URLs of images."
    )
    visibility = serializers.ChoiceField(choices=Image.Visibility.choices, default=Image.Visibility.PRIVATE)
    album = serializers.IntegerField(
        required=False,
        help_text="One of your albums (id): every image of the batch is put in it (URLs' once fetched).",
    )


class BatchPatchSerializer(serializers.Serializer):
    name = serializers.CharField(
        allow_blank=True, max_length=10_000, help_text='e.g. "Lisbon, day 2"; "" to unname it.'
    )


def _events_field(**kwargs: Any) -> serializers.ListField:
    return serializers.ListField(
        child=serializers.ChoiceField(choices=Webhook.Event.choices),
        allow_empty=False,
        help_text="What to be told of: caption.done (captions stored), caption.failed (captioning gave up).",
        **kwargs,
    )


class WebhookCreateSerializer(serializers.Serializer):
    url = serializers.CharField(
        max_length=2048,
        help_text="The http(s) URL events are POSTed to; it must reach a public address.",
    )
    events = _events_field(required=False)  # default: every event
    active = serializers.BooleanField(default=True)


class WebhookPatchSerializer(serializers.Serializer):
    url = serializers.CharField(max_length=2048, required=False)
    events = _events_field(required=False)
    active = serializers.BooleanField(required=False, help_text="false: events are not delivered meanwhile.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs:
            raise serializers.ValidationError('send "url", "events" and/or "active"')
        return attrs


# --- answers ----------------------------------------------------------------------------------------


def absolute(request, path: str) -> str:
    return request.build_absolute_uri(path) if request is not None else path


def image_urls(request, image: Image) -> dict[str, str]:
    return {
        "self": absolute(request, reverse("api:image-detail", args=[image.pk])),
        "file": absolute(request, reverse("media", args=[image.file.name])),
        "page": absolute(request, reverse("captions:image", args=[image.pk])),
        "thumb": absolute(request, reverse("thumbnail", args=[image.pk])),
        "similar": absolute(request, reverse("api:image-similar", args=[image.pk])),
    }


class ImageUrls:
    """image_urls for many images: each route is reversed once, then only the id or file name changes
    (three reverse() calls per image cost more than the rest of a search hit's serialisation)."""

    _ID = 9876543210  # stands for the image id while reversing
    _NAME = "imgcap-file-name"  # stands for the file name

    def __init__(self, request) -> None:
        def parts(route: str, arg: int | str) -> tuple[str, str]:
            before, after = absolute(request, reverse(route, args=[arg])).split(str(arg))
            return before, after

        self._self = parts("api:image-detail", self._ID)
        self._page = parts("captions:image", self._ID)
        self._file = parts("media", self._NAME)
        self._thumb = parts("thumbnail", self._ID)
        self._similar = parts("api:image-similar", self._ID)

    def __call__(self, image: Image) -> dict[str, str]:
        pk = str(image.pk)
        # reverse() quotes a path argument this way (django.urls.resolvers).
        name = quote(image.file.name, safe=RFC3986_SUBDELIMS + "/~:@")
        return {
            "self": pk.join(self._self),
            "file": name.join(self._file),
            "page": pk.join(self._page),
            "thumb": pk.join(self._thumb),
            "similar": pk.join(self._similar),
        }


class CameraClockField(serializers.DateTimeField):
    """A date shown with the offset it carries (a photo's camera clock), not moved to the server's zone."""

    def enforce_timezone(self, value: datetime.datetime) -> datetime.datetime:
        return value


class CaptionSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="model_version.name", default=None, read_only=True)
    confidence = serializers.FloatField(
        read_only=True,
        allow_null=True,
        help_text="The model's calibrated probability (0-1) that the caption is right; on its best "
        "caption only, null for people's captions and older models.",
    )

    class Meta:
        model = Caption
        fields = ["id", "text", "score", "confidence", "rank", "model", "source", "created_at"]
        read_only_fields = fields


class ImageSerializer(serializers.ModelSerializer):
    """An image with its best caption and the N-best candidates. Context: request, active (ModelVersion)."""

    owner = serializers.CharField(source="owner.get_username", read_only=True)
    caption = serializers.SerializerMethodField()
    candidates = serializers.SerializerMethodField()
    tags = serializers.SerializerMethodField(
        help_text="The ImageNet concepts the encoder saw, most probable first: [{label, score}]."
    )
    near_duplicate_of = serializers.SerializerMethodField(
        help_text="Your image this one is a near copy of (resized, re-encoded or rotated), found when it "
        "came in; shown to the owner only."
    )
    share_location = serializers.SerializerMethodField(
        help_text="Whether others get the photo's EXIF GPS position (removed from their copy when "
        "false); shown to the owner only."
    )
    taken_at = CameraClockField(
        source="taken_on_camera",
        read_only=True,
        allow_null=True,
        help_text="When the photo was taken (its EXIF DateTimeOriginal), on the camera's clock: with the "
        'offset the camera wrote ("2026-07-01T14:00:00+02:00"), else read as UTC; null when the file '
        "does not say.",
    )
    camera = serializers.CharField(
        read_only=True,
        help_text='The camera that took it (EXIF Make and Model, "Apple iPhone 13"); "" if unknown.',
    )
    needs_review = serializers.SerializerMethodField(
        help_text="The shown caption is the model's and it is probably wrong (confidence below "
        "IMGCAP_NEEDS_REVIEW_BELOW): worth a person's look."
    )
    urls = serializers.SerializerMethodField()

    class Meta:
        model = Image
        fields = [
            "id",
            "status",
            "error",
            "visibility",
            "share_location",
            "owner",
            "original_name",
            "width",
            "height",
            "format",
            "size",
            "sha256",
            "batch",
            "attempts",
            "created_at",
            "updated_at",
            "captioned_at",
            "taken_at",
            "camera",
            "caption",
            "candidates",
            "needs_review",
            "tags",
            "near_duplicate_of",
            "urls",
        ]
        read_only_fields = fields

    def _choice(self, image: Image):
        cache = self.context.setdefault("_choices", {})
        if image.pk not in cache:
            cache[image.pk] = choose_captions(image, self.context.get("active"))
        return cache[image.pk]

    def _caption_serializer(self) -> CaptionSerializer:
        # One for every caption this serializer shows: a new ModelSerializer works its fields out again,
        # which cost more than the rest of a 50-image page.
        if not hasattr(self, "_captions"):
            self._captions = CaptionSerializer(context=self.context)
        return self._captions

    def get_caption(self, image: Image) -> dict[str, Any] | None:
        best = self._choice(image).best
        return self._caption_serializer().to_representation(best) if best is not None else None

    def get_candidates(self, image: Image) -> list[dict[str, Any]]:
        captions = self._caption_serializer()
        return [captions.to_representation(c) for c in self._choice(image).candidates]

    def get_needs_review(self, image: Image) -> bool:
        return needs_review(self._choice(image).best)

    def get_tags(self, image: Image) -> list[dict[str, Any]]:
        return [{"label": t.label, "score": round(t.score, 4)} for t in image.tags.all()]

    def _mine(self, image: Image) -> bool:
        request = self.context.get("request")
        return request is not None and request.user.is_authenticated and request.user.pk == image.owner_id

    def get_near_duplicate_of(self, image: Image) -> int | None:
        return image.near_duplicate_of_id if self._mine(image) else None

    def get_share_location(self, image: Image) -> bool | None:
        return image.share_location if self._mine(image) else None

    def get_urls(self, image: Image) -> dict[str, str]:
        request = self.context.get("request")
        # The file named as uploaded with its caption inside (captions/downloads.py); search hits' slim
        # urls (ImageUrls) leave it out.
        download = absolute(request, reverse("api:image-download", args=[image.pk]))
        return {**image_urls(request, image), "download": download}


class BatchItemSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="image.id")
    name = serializers.CharField()
    status = serializers.CharField(source="image.status")
    duplicate = serializers.BooleanField(help_text="The owner already had these bytes; not queued again.")
    error = serializers.CharField(source="image.error", help_text="Why captioning failed (status failed).")
    urls = serializers.SerializerMethodField()

    def get_urls(self, item) -> dict[str, str]:
        return image_urls(self.context.get("request"), item.image)


class RejectionSerializer(serializers.Serializer):
    name = serializers.CharField()
    code = serializers.CharField()
    message = serializers.CharField()


class BatchSerializer(serializers.Serializer):
    """Serialises a selectors.BatchStatus."""

    id = serializers.IntegerField(source="batch.id")
    name = serializers.CharField(source="batch.name", help_text='What you call it; "" when unnamed.')
    status = serializers.ChoiceField(
        choices=["fetching", "pending", "processing", "done"],
        help_text="fetching: URLs still downloading; done: nothing left to do (failures are counted).",
    )
    counts = serializers.DictField(child=serializers.IntegerField())
    items = BatchItemSerializer(many=True)
    rejected = RejectionSerializer(source="batch.rejected", many=True)
    fetching = serializers.ListField(
        child=serializers.CharField(),
        help_text="URLs a worker has yet to download; each becomes an item or a rejection.",
    )
    idempotency_key = serializers.CharField(source="batch.idempotency_key", allow_null=True)
    created_at = serializers.DateTimeField(source="batch.created_at")
    urls = serializers.SerializerMethodField()

    def get_urls(self, state: BatchStatus) -> dict[str, str]:
        request = self.context.get("request")
        return {
            "self": absolute(request, reverse("api:batch-detail", args=[state.batch.pk])),
            "page": absolute(request, reverse("captions:batch", args=[state.batch.pk])),
        }


class BatchSummarySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    created_at = serializers.DateTimeField()
    items = serializers.IntegerField(source="n_items")
    rejected = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()

    def get_rejected(self, batch) -> int:
        return len(batch.rejected)

    def get_url(self, batch) -> str:
        return absolute(self.context.get("request"), reverse("api:batch-detail", args=[batch.pk]))


class MatchedCaptionSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    text = serializers.CharField()
    source = serializers.CharField(help_text="model or human")


class SearchImageSerializer(serializers.Serializer):
    """The image of a search hit (a SearchHit): its id, URLs and best caption, not the full image."""

    id = serializers.IntegerField(source="image.pk")
    urls = serializers.SerializerMethodField(
        help_text="self (API), file (the image), page (HTML), thumb (a small WebP)"
    )
    best_caption = serializers.CharField(
        source="other_best_text",
        allow_null=True,
        help_text="The image's best caption (the one the image's API shows), or null when it is the "
        "matched caption.",
    )

    def get_urls(self, hit) -> dict[str, str]:
        if "_image_urls" not in self.context:  # once per page
            self.context["_image_urls"] = ImageUrls(self.context.get("request"))
        return self.context["_image_urls"](hit.image)


class SearchHitSerializer(serializers.Serializer):
    """One search hit, slim: a page of hits costs no N-best lists, attention or image metadata."""

    image = SearchImageSerializer(source="*")
    matched = MatchedCaptionSerializer(source="caption")
    snippet = serializers.CharField(
        help_text="The matched caption, HTML-escaped, the words that matched in <mark>…</mark>."
    )
    score = serializers.FloatField(help_text="Relevance; higher is better (comparable within one search).")
    matched_by = serializers.ListField(
        child=serializers.ChoiceField(choices=["words", "meaning", "picture", "tag"]),
        help_text="How the image was found: the words of a caption, a caption similar in meaning, the "
        "photo itself resembling the query, a concept tag the query names.",
    )
    tags = serializers.ListField(child=serializers.CharField(), help_text="The image's tags the query named.")


class SimilarImageSerializer(serializers.Serializer):
    """One of an image's nearest images (a selectors.SimilarImage)."""

    image = SearchImageSerializer(source="*")
    similarity = serializers.FloatField(help_text="Cosine similarity of the photos' features (1 = the same).")
    near_duplicate = serializers.BooleanField(
        help_text="Close enough to be a copy: resized, re-encoded, rotated or lightly edited."
    )


class ModelVersionSerializer(serializers.Serializer):
    name = serializers.CharField()
    encoder = serializers.CharField()
    metrics = serializers.DictField()
    active = serializers.BooleanField()
    created_at = serializers.DateTimeField()


class AttentionSerializer(serializers.Serializer):
    """Serialises a selectors.CaptionAttention: per word, where the model looked, as a small grid."""

    image = serializers.IntegerField(source="caption.image_id")
    caption = CaptionSerializer()
    words = serializers.ListField(child=serializers.CharField())
    grid = serializers.SerializerMethodField(help_text="{height, width} of each word's map")
    maps = serializers.SerializerMethodField(
        help_text="One map per word: height*width integers 0-255, row by row, scaled to that word's peak."
    )
    peaks = serializers.SerializerMethodField(help_text="Each word's largest attention weight (0-1).")

    def get_grid(self, attention) -> dict[str, int]:
        _, height, width = attention.maps.shape
        return {"height": int(height), "width": int(width)}

    def get_maps(self, attention) -> list[list[int]]:
        maps = attention.maps.reshape(attention.maps.shape[0], -1)
        peaks = maps.max(axis=1, initial=0.0)
        scaled = np.rint(maps / np.where(peaks > 0, peaks, 1.0)[:, None] * 255.0)
        return scaled.astype(np.uint8).tolist()

    def get_peaks(self, attention) -> list[float]:
        flat = attention.maps.reshape(attention.maps.shape[0], -1)
        return [round(float(p), 4) for p in flat.max(axis=1, initial=0.0)]


class WebhookSerializer(serializers.ModelSerializer):
    """A webhook, without its secret (shown only when it is made or rotated)."""

    events = serializers.ListField(child=serializers.ChoiceField(choices=Webhook.Event.choices))
    deactivated_reason = serializers.CharField(
        help_text="Why the platform turned it off (its receiver answered 410 Gone); empty otherwise."
    )
    urls = serializers.SerializerMethodField()

    class Meta:
        model = Webhook
        fields = ["id", "url", "events", "active", "deactivated_reason", "created_at", "urls"]
        read_only_fields = fields

    def get_urls(self, webhook: Webhook) -> dict[str, str]:
        request = self.context.get("request")
        return {
            "self": absolute(request, reverse("api:webhook-detail", args=[webhook.pk])),
            "deliveries": absolute(request, reverse("api:webhook-deliveries", args=[webhook.pk])),
        }


class WebhookWithSecretSerializer(WebhookSerializer):
    secret = serializers.CharField(
        help_text="The signing secret (whsec_…): shown only in this answer; verify deliveries with it."
    )

    class Meta(WebhookSerializer.Meta):
        fields = [*WebhookSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class WebhookDeliverySerializer(serializers.ModelSerializer):
    """One event sent (or being sent) to a webhook, and how that went."""

    image = serializers.IntegerField(source="image_id", allow_null=True, help_text="null for webhook.test")
    response_status = serializers.IntegerField(
        allow_null=True, help_text="The receiver's last HTTP status; null when it could not be reached."
    )
    last_error = serializers.CharField(
        help_text="The receiver's non-2xx answer, or why it could not be reached; empty once delivered."
    )
    payload = serializers.DictField(help_text="The body sent: {type, timestamp, data}.")

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "event",
            "image",
            "status",
            "attempts",
            "response_status",
            "last_error",
            "next_attempt_at",
            "created_at",
            "delivered_at",
            "payload",
        ]
        read_only_fields = fields


# --- albums ---------------------------------------------------------------------------------------

MAX_ALBUM_IDS = 500


def _image_ids_field(help_text: str) -> serializers.ListField:
    return serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=2**63 - 1),
        required=False,
        max_length=MAX_ALBUM_IDS,
        help_text=help_text,
    )


class AlbumCreateSerializer(serializers.Serializer):
    # Lengths are checked by captions.services.albums, with its own codes and messages.
    name = serializers.CharField(max_length=10_000, allow_blank=True, help_text="Unique among your albums.")
    description = serializers.CharField(required=False, allow_blank=True, max_length=100_000, default="")


class AlbumPatchSerializer(serializers.Serializer):
    name = serializers.CharField(required=False, allow_blank=True, max_length=10_000)
    description = serializers.CharField(required=False, allow_blank=True, max_length=100_000)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs:
            raise serializers.ValidationError('send "name" and/or "description"')
        return attrs


class AlbumImagesSerializer(serializers.Serializer):
    add = _image_ids_field(f"Ids of your images to put in the album (at most {MAX_ALBUM_IDS}).")
    remove = _image_ids_field(f"Ids of images to take out of it (at most {MAX_ALBUM_IDS}).")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs.get("add") and not attrs.get("remove"):
            raise serializers.ValidationError('send image ids in "add" and/or "remove"')
        return attrs


def shared_album_url(request, album) -> str | None:
    if album.share_token is None:
        return None
    return absolute(request, reverse("captions:shared-album", args=[album.share_token]))


class AlbumSerializer(serializers.Serializer):
    """An album of yours (as selectors.list_albums annotates it)."""

    id = serializers.IntegerField()
    name = serializers.CharField()
    description = serializers.CharField()
    images = serializers.IntegerField(source="n_images", help_text="How many images it holds.")
    cover = serializers.SerializerMethodField(help_text="A thumbnail of the image added last, or null.")
    shared = serializers.SerializerMethodField(help_text="Whether a public read-only link is on.")
    share_url = serializers.SerializerMethodField(
        help_text="The public read-only page anyone with this link may see; null when not shared."
    )
    shared_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    urls = serializers.SerializerMethodField()

    def get_cover(self, album) -> str | None:
        if album.cover_id is None:
            return None
        return absolute(self.context.get("request"), reverse("thumbnail", args=[album.cover_id]))

    def get_shared(self, album) -> bool:
        return album.share_token is not None

    def get_share_url(self, album) -> str | None:
        return shared_album_url(self.context.get("request"), album)

    def get_urls(self, album) -> dict[str, str]:
        request = self.context.get("request")
        return {
            "self": absolute(request, reverse("api:album-detail", args=[album.pk])),
            "page": absolute(request, reverse("captions:album", args=[album.pk])),
            "images": absolute(request, f"{reverse('api:image-list')}?album={album.pk}"),
            "share": absolute(request, reverse("api:album-share", args=[album.pk])),
        }


class AlbumImagesResultSerializer(serializers.Serializer):
    added = serializers.IntegerField(help_text="Images put in (those already in it are not counted).")
    removed = serializers.IntegerField(help_text="Images taken out.")
    album = AlbumSerializer()


class SharedAlbumSerializer(serializers.Serializer):
    """An album seen through its share link: what its owner chose to show, read-only."""

    name = serializers.CharField()
    description = serializers.CharField()
    owner = serializers.CharField(source="owner.get_username")
    images = serializers.IntegerField(source="n_images")
    urls = serializers.SerializerMethodField()

    def get_urls(self, album) -> dict[str, str]:
        request = self.context.get("request")
        token = album.share_token
        return {
            "self": absolute(request, reverse("api:shared-album", args=[token])),
            "page": absolute(request, reverse("captions:shared-album", args=[token])),
            "images": absolute(request, reverse("api:shared-album-images", args=[token])),
        }


class SharedImageSerializer(serializers.Serializer):
    """An image of a shared album: its shown caption and its files under the share link. Context:
    request, token, active (ModelVersion)."""

    id = serializers.IntegerField()
    caption = serializers.SerializerMethodField(help_text="The caption the site shows for it.")
    width = serializers.IntegerField()
    height = serializers.IntegerField()
    taken_at = CameraClockField(source="taken_on_camera", allow_null=True)
    urls = serializers.SerializerMethodField()

    def get_caption(self, image: Image) -> str | None:
        best = choose_captions(image, self.context.get("active")).best
        return best.text if best is not None else None

    def get_urls(self, image: Image) -> dict[str, str]:
        request, token = self.context.get("request"), self.context["token"]
        return {
            "file": absolute(request, reverse("shared-file", args=[token, image.pk])),
            "thumb": absolute(request, reverse("shared-thumbnail", args=[token, image.pk])),
        }
