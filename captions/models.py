"""Images, their captions, the batches they came in, their albums, and the model versions that captioned them.

Writes go through captions.services, reads through captions.selectors.
"""

from __future__ import annotations

import datetime

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from pgvector.django import BitField, HalfVectorField, HnswIndex, VectorField

from captions.metadata import on_camera_clock

# all-MiniLM-L6-v2 (ml/text_embedding.py): captions, queries and the image projection share its space.
TEXT_EMBEDDING_DIM = 384
# EfficientNet-Lite's pooled feature grid (the default encoders); other encoders store no features.
IMAGE_FEATURE_DIM = 1280
PERCEPTUAL_HASH_BITS = 64


class ModelVersion(models.Model):
    """One exported captioning model (`Captioner.version`); at most one is active."""

    name = models.CharField(max_length=200, unique=True)
    encoder = models.CharField(max_length=100, blank=True, default="")
    metrics = models.JSONField(default=dict, blank=True)
    active = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["active"], condition=Q(active=True), name="one_active_model_version"
            )
        ]

    def __str__(self) -> str:
        return self.name + (" (active)" if self.active else "")


class Batch(models.Model):
    """Images submitted together. `images` lists every item, including already-known images it returned."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="batches")
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    # What its owner calls it ("Lisbon, day 2"); empty: shown as "Batch N".
    name = models.CharField(max_length=200, blank=True, default="")
    images = models.ManyToManyField("Image", through="BatchItem", related_name="batches", blank=True)
    # Items refused ({"name", "code", "message"}), so a retried request answers the same.
    rejected = models.JSONField(default=list, blank=True)
    # URLs a worker still has to fetch ({"url", "position", "visibility"}); each leaves the list as it
    # becomes an item or an entry of `rejected` (captions/services/url_fetches.py).
    urls_waiting = models.JSONField(default=list, blank=True)
    # The fetch task working on them (its Celery task id) and since when; empty while none is.
    urls_claimed_by = models.CharField(max_length=64, blank=True, default="")
    urls_claimed_at = models.DateTimeField(null=True, blank=True)
    urls_sent_at = models.DateTimeField(null=True, blank=True)  # when a fetch task was last sent
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "idempotency_key"], name="batch_idempotency_key_per_owner"
            )
        ]
        # The reaper looks for batches whose fetch was lost: few rows ever have URLs waiting.
        indexes = [
            models.Index(fields=["urls_sent_at"], name="batch_urls_waiting", condition=~Q(urls_waiting=[]))
        ]

    def __str__(self) -> str:
        return f"batch {self.pk}"

    @property
    def title(self) -> str:
        """What pages call it: its name, else "Batch N"."""
        return self.name or f"Batch #{self.pk}"


def _hnsw(name: str, field: str, opclass: str) -> HnswIndex:
    """An HNSW index (pgvector) with its default build parameters, spelt out so they show in migrations."""
    return HnswIndex(name=name, fields=[field], opclasses=[opclass], m=16, ef_construction=64)


# Several kilobytes an image that only search and "similar images" read: not loaded unless asked for.
VECTOR_FIELDS = ("caption_embedding", "features", "visual_embedding")


class ImageManager(models.Manager):
    def get_queryset(self) -> models.QuerySet:
        return super().get_queryset().defer(*VECTOR_FIELDS)


class Image(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        PROCESSING = "processing"
        DONE = "done"
        FAILED = "failed"

    class Visibility(models.TextChoices):
        PRIVATE = "private"
        PUBLIC = "public"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="images")
    # Stored under its content hash (images/ab/abcdef….jpg); owners uploading the same bytes share the file.
    file = models.FileField(max_length=255)
    sha256 = models.CharField(max_length=64)
    original_name = models.CharField(max_length=255, blank=True, default="")
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    format = models.CharField(max_length=20)
    size = models.PositiveBigIntegerField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    error = models.TextField(blank=True, default="")
    visibility = models.CharField(max_length=10, choices=Visibility.choices, default=Visibility.PRIVATE)
    # Off: the file served to anyone but the owner has its EXIF GPS position removed (captions/location.py).
    share_location = models.BooleanField(default=False)
    # The batch that first brought this image (Batch.images also lists it in later batches).
    batch = models.ForeignKey(
        Batch, null=True, blank=True, on_delete=models.SET_NULL, related_name="origin_images"
    )
    attempts = models.PositiveIntegerField(default=0)
    # When the image last became pending because someone asked (upload, re-caption, retry); the
    # reaper's re-sends do not move it, so the health check's oldest_pending_s keeps growing.
    queued_at = models.DateTimeField(default=timezone.now)
    processing_started_at = models.DateTimeField(null=True, blank=True)
    # Refreshed every few seconds by the worker captioning the image (worker/micro_batches.py): a
    # claim whose heartbeat stopped (the worker was killed) is handed back by the reaper.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    captioned_at = models.DateTimeField(null=True, blank=True)

    # --- read from the file's metadata at intake (captions/metadata.py) ---
    # EXIF DateTimeOriginal (with OffsetTimeOriginal when the camera wrote one, else read as UTC).
    taken_at = models.DateTimeField(null=True, blank=True)
    # The camera clock's offset from UTC in minutes (EXIF OffsetTimeOriginal); null when it wrote none.
    # The date taken is shown on that clock, as the photographer saw it, not in the server's zone.
    taken_offset = models.SmallIntegerField(null=True, blank=True)
    camera = models.CharField(max_length=200, blank=True, default="")  # EXIF Make + Model, "Apple iPhone 13"

    # --- search by meaning (captions/vectors.py) ---
    # The shown caption (the newest human one, else the active model's best) as a sentence embedding,
    # and which caption that was: when the shown caption changes, the vector follows it.
    caption_embedding = VectorField(dimensions=TEXT_EMBEDDING_DIM, null=True, blank=True)
    embedded_caption = models.ForeignKey(
        "Caption", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # From the worker's forward pass: the encoder's pooled features (similar images) and their
    # projection into the sentence-embedding space (queries meet the photo, not only its caption).
    features = HalfVectorField(dimensions=IMAGE_FEATURE_DIM, null=True, blank=True)
    visual_embedding = VectorField(dimensions=TEXT_EMBEDDING_DIM, null=True, blank=True)
    features_model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # A perceptual hash of the picture (captions/duplicates.py), made at intake, and the owner's image
    # it was found to be a near copy of (resized, re-encoded, rotated) when it came in.
    perceptual_hash = BitField(length=PERCEPTUAL_HASH_BITS, null=True, blank=True)
    near_duplicate_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="near_duplicates"
    )

    objects = ImageManager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["owner", "sha256"], name="image_sha256_per_owner")]
        indexes = [
            models.Index(fields=["status", "created_at"], name="image_status_created"),
            # Claiming in turns across owners (captions/queue.py: _in_turn) reads only this.
            models.Index(
                fields=["owner", "created_at", "id"],
                name="image_pending_owner",
                condition=models.Q(status="pending"),
            ),
            models.Index(fields=["owner", "-created_at"], name="image_owner_created"),
            models.Index(fields=["owner", "-taken_at"], name="image_owner_taken"),
            models.Index(fields=["visibility", "-created_at"], name="image_visibility_created"),
            models.Index(fields=["sha256"], name="image_sha256"),
            _hnsw("image_caption_embedding_hnsw", "caption_embedding", "vector_cosine_ops"),
            _hnsw("image_visual_embedding_hnsw", "visual_embedding", "vector_cosine_ops"),
            _hnsw("image_features_hnsw", "features", "halfvec_cosine_ops"),
            _hnsw("image_perceptual_hash_hnsw", "perceptual_hash", "bit_hamming_ops"),
        ]

    def __str__(self) -> str:
        return f"image {self.pk} ({self.original_name or self.sha256[:12]})"

    @property
    def taken_on_camera(self) -> datetime.datetime | None:
        """The date taken with the camera clock's offset (UTC when it wrote none): the same instant
        as `taken_at`, at the hour the photographer saw."""
        return on_camera_clock(self.taken_at, self.taken_offset)

    @property
    def taken_wall_clock(self) -> datetime.datetime | None:
        """`taken_on_camera` without its zone, for pages: templates would convert an aware time to the
        server's zone, and a photo taken at 14:00 in Paris was taken at 14:00 wherever it is viewed."""
        taken = self.taken_on_camera
        return None if taken is None else taken.replace(tzinfo=None)

    @property
    def taken_offset_label(self) -> str:
        """ "UTC+02:00" for the camera's offset; "" when the camera wrote none."""
        if self.taken_offset is None:
            return ""
        sign = "-" if self.taken_offset < 0 else "+"
        hours, minutes = divmod(abs(self.taken_offset), 60)
        return f"UTC{sign}{hours:02d}:{minutes:02d}"


class Caption(models.Model):
    class Source(models.TextChoices):
        MODEL = "model"
        HUMAN = "human"
        # A description the photo already carried (EXIF ImageDescription, XMP dc:description, IPTC
        # Caption-Abstract), read at intake: a person's words, but nobody on this site wrote them.
        METADATA = "metadata"

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="captions")
    text = models.TextField()
    score = models.FloatField(null=True, blank=True)  # the model's length-normalised score; None for people
    # The model's calibrated probability that the caption is right (ml/confidence.py); None for people.
    confidence = models.FloatField(null=True, blank=True)
    rank = models.PositiveSmallIntegerField(default=0)  # 0 = best of its N-best list
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="captions"
    )
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.MODEL)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    words = models.JSONField(default=list, blank=True)
    attention = models.BinaryField(null=True, blank=True)  # captions.attention encoding
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["image_id", "rank", "-created_at"]
        indexes = [
            models.Index(fields=["image", "source", "-created_at"], name="caption_image_source"),
            models.Index(fields=["image", "model_version", "rank"], name="caption_image_model_rank"),
        ]

    def __str__(self) -> str:
        return self.text


class ImageTag(models.Model):
    """One of the ImageNet concepts the encoder saw in an image, as a model version labelled it."""

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="tags")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="+")
    label = models.CharField(max_length=100)  # the short human label ("cat", not "tabby, tabby cat")
    score = models.FloatField()  # the encoder's probability
    rank = models.PositiveSmallIntegerField(default=0)  # 0 = most probable

    class Meta:
        ordering = ["image_id", "rank"]
        constraints = [
            models.UniqueConstraint(fields=["image", "model_version", "label"], name="image_tag_unique")
        ]
        indexes = [
            models.Index(fields=["label", "image"], name="image_tag_label"),
            # Search by tag: the most probable images of a label first, without reading all of them.
            models.Index(fields=["label", "-score"], name="image_tag_label_score"),
        ]

    def __str__(self) -> str:
        return f"{self.label} ({self.score:.2f})"


class Album(models.Model):
    """A named set of its owner's images (many-to-many: an image can be in several albums), shared
    read-only with anyone who has its link while `share_token` is set."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="albums")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    images = models.ManyToManyField("Image", through="AlbumItem", related_name="albums", blank=True)
    # The secret of its public link (/shared/<token>/); None: not shared. Revoking clears it, so an old
    # link stops working; sharing again makes a new one.
    share_token = models.CharField(max_length=64, null=True, blank=True, unique=True)
    shared_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        # Names are how people (and `imgcap_client upload --album NAME`) pick an album.
        constraints = [models.UniqueConstraint(fields=["owner", "name"], name="album_name_per_owner")]

    def __str__(self) -> str:
        return f"album {self.pk} ({self.name})"


class AlbumItem(models.Model):
    album = models.ForeignKey(Album, on_delete=models.CASCADE, related_name="items")
    image = models.ForeignKey("Image", on_delete=models.CASCADE, related_name="album_items")
    added_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["album_id", "added_at", "id"]
        constraints = [models.UniqueConstraint(fields=["album", "image"], name="album_item_unique")]

    def __str__(self) -> str:
        return f"album {self.album_id} item {self.image_id}"


class BatchItem(models.Model):
    """An image of a batch, in submission order. `duplicate`: the owner already had it (not queued again)."""

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="items")
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="batch_items")
    position = models.PositiveIntegerField(default=0)
    name = models.CharField(max_length=255, blank=True, default="")
    duplicate = models.BooleanField(default=False)

    class Meta:
        ordering = ["batch_id", "position", "id"]
        constraints = [models.UniqueConstraint(fields=["batch", "image"], name="batch_item_unique")]

    def __str__(self) -> str:
        return f"batch {self.batch_id} item {self.image_id}"


class Webhook(models.Model):
    """Where a user wants to hear about their images' captions (captions/services/webhooks.py): each
    event they subscribe to becomes a WebhookDelivery, POSTed to `url` signed with `secret` (Standard
    Webhooks: HMAC-SHA256)."""

    class Event(models.TextChoices):
        CAPTION_DONE = "caption.done"
        CAPTION_FAILED = "caption.failed"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhooks")
    url = models.CharField(max_length=2048)
    # "whsec_" + base64 of 32 random bytes; kept as it is, since every delivery is signed with it.
    secret = models.CharField(max_length=100)
    events = models.JSONField(default=list)  # a subset of Event.values
    active = models.BooleanField(default=True)
    # Why the platform turned it off (the receiver answered 410 Gone); empty otherwise.
    deactivated_reason = models.CharField(max_length=300, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["owner", "url"], name="webhook_url_per_owner")]

    def __str__(self) -> str:
        return f"webhook {self.pk} ({self.url})"


class WebhookDelivery(models.Model):
    """One event for one webhook: its body, and how sending it went. Pending until the receiver
    answers 2xx (delivered) or the retries run out (failed)."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=50)
    # Kept when the image is deleted: the delivery still says what was sent.
    image = models.ForeignKey(
        Image, null=True, blank=True, on_delete=models.SET_NULL, related_name="webhook_deliveries"
    )
    payload = models.JSONField(default=dict)  # the whole body sent: {"type", "timestamp", "data"}
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")  # the receiver's answer, or the network error
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)  # the last HTTP status
    # When the next attempt is due (while pending); an attempt in flight holds it a little ahead.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # When a task for it was last sent (or, for a retry sent with a delay, when it is due to arrive):
    # the reaper sends again those due whose message seems lost.
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["webhook", "-created_at", "-id"], name="webhook_delivery_newest"),
            # The reaper looks for due deliveries: only pending rows are in this index.
            models.Index(
                fields=["next_attempt_at"], name="webhook_delivery_due", condition=Q(status="pending")
            ),
        ]

    def __str__(self) -> str:
        return f"delivery {self.pk} ({self.event}, {self.status})"
