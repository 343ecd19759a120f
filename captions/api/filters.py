"""The API's query-string filters, checked in one place (the Styleguide's filter serializers): a bad
value is a 400 `bad_filter` that names the parameter, before any query runs. The same classes
describe the parameters in the OpenAPI schema."""

from __future__ import annotations

import re
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request

from captions.ingest import RejectedInput
from captions.models import Caption, Image
from captions.selectors import IMAGE_SORTS

MAX_IDS = 200
MAX_ID = 2**63 - 1  # ids are Postgres bigints: a larger number names nothing


def _id_field(help_text: str) -> serializers.IntegerField:
    return serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID, help_text=help_text)


@extend_schema_field({"type": "string", "pattern": "^[0-9]+(,[0-9]+)*$", "example": "3,1,2"})
class IdListField(serializers.CharField):
    """`3,1,2`: at most MAX_IDS image ids, so that a page can follow many uploads in one request."""

    def to_internal_value(self, data: Any) -> list[int]:
        raw = super().to_internal_value(data)
        try:
            ids = [int(part) for part in raw.split(",") if part.strip()]
        except ValueError:
            raise serializers.ValidationError(f"must be comma-separated numbers; got {raw[:100]!r}") from None
        if len(ids) > MAX_IDS:
            raise serializers.ValidationError(f"takes at most {MAX_IDS} ids; got {len(ids)}")
        return ids


SHA256 = re.compile(r"[0-9a-f]{64}")


@extend_schema_field({"type": "string", "pattern": "^[0-9a-fA-F]{64}(,[0-9a-fA-F]{64})*$"})
class Sha256ListField(serializers.CharField):
    """Comma-separated SHA-256 hex digests, at most MAX_IDS: a client asks which of its files the server
    already has (the command-line uploader resumes that way) without sending them."""

    def to_internal_value(self, data: Any) -> list[str]:
        raw = super().to_internal_value(data)
        digests = [part.strip().lower() for part in raw.split(",") if part.strip()]
        bad = next((d for d in digests if not SHA256.fullmatch(d)), None)
        if bad is not None:
            raise serializers.ValidationError(
                f"must be comma-separated SHA-256 hex digests (64 hex digits each); got {bad[:100]!r}"
            )
        if len(digests) > MAX_IDS:
            raise serializers.ValidationError(f"takes at most {MAX_IDS} digests; got {len(digests)}")
        return digests


class ImageFilterSerializer(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=Image.Status.values, required=False, help_text="only images in this state"
    )
    batch = _id_field("only images of this batch (id)")
    album = _id_field("only images of this album of yours (id)")
    sort = serializers.ChoiceField(
        choices=list(IMAGE_SORTS),
        required=False,
        help_text="the order: " + "; ".join(f"{key}: {text}" for key, text in IMAGE_SORTS.items()),
    )
    owner = serializers.ChoiceField(choices=["me"], required=False, help_text='"me": only your own images')
    mine = serializers.BooleanField(required=False, help_text="true: only your own images (as owner=me)")
    visibility = serializers.ChoiceField(choices=Image.Visibility.values, required=False)
    ids = IdListField(required=False, help_text=f"only these images: comma-separated ids, at most {MAX_IDS}")
    tag = serializers.CharField(
        required=False, max_length=100, help_text='only images with this concept tag, e.g. "cat"'
    )
    needs_review = serializers.BooleanField(
        required=False,
        help_text="true: only images whose shown caption is the model's and probably wrong (its "
        "confidence below IMGCAP_NEEDS_REVIEW_BELOW; no person's caption yet)",
    )
    sha256 = Sha256ListField(
        required=False,
        help_text=f"only your own images with these contents: comma-separated SHA-256 hex digests, "
        f"at most {MAX_IDS}",
    )

    def selector_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for selectors.list_images."""
        data = self.validated_data
        return {
            "status": data.get("status"),
            "batch": data.get("batch"),
            "mine": data.get("owner") == "me" or data.get("mine", False),
            "visibility": data.get("visibility"),
            "ids": data.get("ids"),
            "tag": data.get("tag"),
            "sha256": data.get("sha256"),
            "album": data.get("album"),
            "sort": data.get("sort") or "-added",
            "needs_review": data.get("needs_review", False),
        }


class ExportFilterSerializer(serializers.Serializer):
    batch = _id_field("only images of this batch (id)")
    album = _id_field("only images of this album of yours (id); the file is named after it")
    status = serializers.ChoiceField(
        choices=Image.Status.values, required=False, help_text="only images in this state"
    )
    source = serializers.ChoiceField(choices=Caption.Source.values, required=False)
    model = serializers.CharField(required=False, help_text="only captions of this model version (its name)")
    q = serializers.CharField(required=False, help_text="only captions matching this full-text search")
    owner = serializers.ChoiceField(choices=["me"], required=False, help_text='"me": only your own images')
    captions = serializers.ChoiceField(
        choices=["shown", "all"],
        required=False,
        help_text='"shown" (the default): one row per image, the caption the site shows; "all": every '
        "caption (each model run's N-best list and the human ones)",
    )

    def selector_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for exports.export_rows."""
        data = self.validated_data
        return {
            "batch": data.get("batch"),
            "album": data.get("album"),
            "status": data.get("status"),
            "source": data.get("source"),
            "model": data.get("model"),
            "q": data.get("q"),
            "mine": data.get("owner") == "me",
            "every_caption": data.get("captions") == "all",
        }


def read_filters(serializer_class: type[serializers.Serializer], request: Request) -> serializers.Serializer:
    """The request's filters, checked; empty parameters count as absent. RejectedInput (400) otherwise."""
    given = {k: v for k, v in request.query_params.items() if v != "" and k in serializer_class().fields}
    filters = serializer_class(data=given)
    if not filters.is_valid():
        name, errors = next(iter(filters.errors.items()))
        raise RejectedInput("bad_filter", f"{name}: {errors[0]} (got {given.get(name)!r})")
    return filters
