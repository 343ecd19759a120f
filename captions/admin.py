"""Django admin: browse everything; change state only through captions.services."""

from django.contrib import admin, messages
from django.template.defaultfilters import pluralize

from captions.models import Batch, BatchItem, Caption, Image, ModelVersion, Webhook, WebhookDelivery
from captions.services.images import requeue_images
from captions.services.model_versions import set_active_model


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "encoder", "active", "created_at"]
    readonly_fields = ["active", "created_at"]
    actions = ["make_active"]

    @admin.action(description="Make the selected version active (its captions are shown as best)")
    def make_active(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Choose exactly one version.", messages.ERROR)
            return
        set_active_model(model_version=queryset.get())


class CaptionInline(admin.TabularInline):
    model = Caption
    extra = 0
    fields = ["text", "score", "rank", "source", "model_version", "created_at"]
    readonly_fields = ["score", "rank", "source", "model_version", "created_at"]


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ["id", "original_name", "owner", "status", "visibility", "attempts", "created_at"]
    list_filter = ["status", "visibility", "format"]
    search_fields = ["original_name", "sha256", "owner__username"]
    readonly_fields = [
        "file",
        "sha256",
        "width",
        "height",
        "format",
        "size",
        "status",
        "error",
        "attempts",
        "processing_started_at",
        "created_at",
        "updated_at",
        "captioned_at",
        "batch",
    ]
    inlines = [CaptionInline]
    actions = ["retry_failed"]

    @admin.action(description="Retry the selected failed images")
    def retry_failed(self, request, queryset):
        ids = requeue_images(images=queryset.filter(status=Image.Status.FAILED))
        self.message_user(request, f"Queued {len(ids)} image{pluralize(len(ids))} again.")


@admin.register(Caption)
class CaptionAdmin(admin.ModelAdmin):
    list_display = ["id", "image", "text", "source", "score", "rank", "model_version", "created_at"]
    list_filter = ["source", "model_version"]
    search_fields = ["text"]
    raw_id_fields = ["image", "author"]
    readonly_fields = ["attention", "words"]


class BatchItemInline(admin.TabularInline):
    model = BatchItem
    extra = 0
    raw_id_fields = ["image"]


@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):
    list_display = ["id", "owner", "idempotency_key", "created_at"]
    inlines = [BatchItemInline]


@admin.register(Webhook)
class WebhookAdmin(admin.ModelAdmin):
    list_display = ["id", "owner", "url", "events", "active", "created_at"]
    list_filter = ["active"]
    search_fields = ["url", "owner__username"]
    exclude = ["secret"]  # its owner saw it once; nobody else needs it
    readonly_fields = ["owner", "deactivated_reason", "created_at"]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ["id", "webhook", "event", "image", "status", "attempts", "response_status", "created_at"]
    list_filter = ["status", "event"]
    raw_id_fields = ["webhook", "image"]
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields if f.name not in ("webhook", "image")]
