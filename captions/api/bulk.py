"""REST API v1: one action on many of your images (`POST /api/v1/images/bulk/`), as the gallery's
selection does. A thin view over captions.services.bulk."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers
from rest_framework.parsers import JSONParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from captions import selectors
from captions.services import bulk
from captions.throttles import BATCH


class BulkActionSerializer(serializers.Serializer):
    ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=2**63 - 1),
        allow_empty=False,
        max_length=bulk.MAX_IMAGES,
        help_text=f"Ids of your images (at most {bulk.MAX_IMAGES}).",
    )
    action = serializers.ChoiceField(choices=list(bulk.ACTIONS))
    album = serializers.IntegerField(
        required=False, help_text="One of your albums (id): for add_to_album and remove_from_album."
    )


class SkippedSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    code = serializers.CharField(help_text="already_queued, unchanged")
    message = serializers.CharField()


class BulkResultSerializer(serializers.Serializer):
    action = serializers.CharField()
    changed = serializers.ListField(child=serializers.IntegerField(), help_text="The images it changed.")
    skipped = SkippedSerializer(many=True, help_text="Those it left as they were, and why.")
    summary = serializers.CharField(
        help_text='e.g. "3 images made public; 1 left as it was (already public)"'
    )


class ImageBulkView(generics.GenericAPIView):
    """Do one thing to many of your images: `delete`, `make_public`, `make_private`, `recaption`,
    `add_to_album` or `remove_from_album` (with `album`). All or nothing: 400 unknown_images (nothing
    changed) when an id is not one of your images. Images the action leaves as they were (already
    public, already queued, already in the album) are listed in `skipped`."""

    serializer_class = BulkResultSerializer
    permission_classes = [IsAuthenticated]
    parser_classes = [JSONParser]
    throttle_scopes = {"POST": BATCH}

    @extend_schema(request=BulkActionSerializer, responses=BulkResultSerializer)
    def post(self, request: Request) -> Response:
        form = BulkActionSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        album = selectors.find_own_album(request.user, data["album"]) if "album" in data else None
        result = bulk.apply_to_images(
            owner=request.user, image_ids=data["ids"], action=data["action"], album=album
        )
        answer = {**vars(result), "summary": result.summary()}
        return Response(BulkResultSerializer(answer).data)
