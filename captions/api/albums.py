"""REST API v1 for albums: yours (CRUD, their images, their share link) and shared ones (read-only, by
link, no sign-in). Thin views over captions.selectors and captions.services.albums."""

from __future__ import annotations

from django.conf import settings
from django.http import FileResponse, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.urls import reverse
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from captions import downloads, selectors
from captions.api import serializers as s
from captions.api.views import _FirstRenderer, original_file, thumbnail_file, thumbnail_size
from captions.exports import export_filename
from captions.ingest import RejectedInput
from captions.services import albums
from captions.services.bulk import check_images

# Share links can be revoked: browsers keep what they fetched through one only briefly.
SHARED_MAX_AGE_S = 300


def _album_answer(request: Request, pk: int, code: int = status.HTTP_200_OK) -> Response:
    album = selectors.get_album(request.user, pk)  # read again, with its counts and cover
    data = s.AlbumSerializer(album, context={"request": request}).data
    return Response(data, status=code)


class AlbumListView(generics.GenericAPIView):
    """Your albums by name (GET; `name` finds one by its exact name), or make one (POST, 201; 409
    album_name_taken when you have one of that name)."""

    serializer_class = s.AlbumSerializer
    permission_classes = [IsAuthenticated]
    parser_classes = [JSONParser, FormParser, MultiPartParser]

    def get_serializer_class(self):
        if self.request is not None and self.request.method == "POST":
            return s.AlbumCreateSerializer
        return s.AlbumSerializer

    @extend_schema(
        parameters=[OpenApiParameter("name", str, description="only the album of this exact name")],
        responses=s.AlbumSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        name = request.query_params.get("name")
        page = self.paginate_queryset(selectors.list_albums(request.user, name=name or None))
        return self.get_paginated_response(
            s.AlbumSerializer(page, many=True, context={"request": request}).data
        )

    @extend_schema(request=s.AlbumCreateSerializer, responses={201: s.AlbumSerializer})
    def post(self, request: Request) -> Response:
        form = s.AlbumCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        album = albums.create_album(owner=request.user, **form.validated_data)
        response = _album_answer(request, album.pk, status.HTTP_201_CREATED)
        response["Location"] = response.data["urls"]["self"]
        return response


class AlbumDetailView(generics.GenericAPIView):
    """One of your albums (404 for anyone else's: theirs are reached by share links); PATCH renames it
    or changes its description; DELETE removes the album, not its images."""

    serializer_class = s.AlbumSerializer
    permission_classes = [IsAuthenticated]
    parser_classes = [JSONParser, FormParser, MultiPartParser]

    def get_serializer_class(self):
        if self.request is not None and self.request.method == "PATCH":
            return s.AlbumPatchSerializer
        return s.AlbumSerializer

    def get(self, request: Request, pk: int) -> Response:
        return _album_answer(request, pk)

    @extend_schema(request=s.AlbumPatchSerializer, responses=s.AlbumSerializer)
    def patch(self, request: Request, pk: int) -> Response:
        album = selectors.get_album(request.user, pk)
        form = s.AlbumPatchSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        albums.update_album(album=album, **form.validated_data)
        return _album_answer(request, pk)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        albums.delete_album(album=selectors.get_album(request.user, pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


class AlbumImagesView(generics.GenericAPIView):
    """Put images in the album (`add`) and/or take them out (`remove`): ids of your own images, at most
    500 each; images already in it are skipped. 400 unknown_images (nothing changed) when an id is not
    one of your images. The album's images are listed by `GET /api/v1/images/?album=ID`."""

    serializer_class = s.AlbumImagesResultSerializer
    permission_classes = [IsAuthenticated]
    parser_classes = [JSONParser]

    @extend_schema(request=s.AlbumImagesSerializer, responses=s.AlbumImagesResultSerializer)
    def post(self, request: Request, pk: int) -> Response:
        album = selectors.get_album(request.user, pk)
        form = s.AlbumImagesSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        add, remove = form.validated_data.get("add", []), form.validated_data.get("remove", [])
        if add:
            check_images(request.user, add)  # 400 unknown_images before anything changes
        added, removed = albums.change_images(album=album, add=add, remove=remove)
        album = selectors.get_album(request.user, pk)
        data = {"added": added, "removed": removed, "album": album}
        return Response(s.AlbumImagesResultSerializer(data, context={"request": request}).data)


class AlbumShareView(generics.GenericAPIView):
    """POST: turn on the album's public read-only link (`share_url`; an album already shared keeps its
    link). DELETE: revoke it; the old link stops working at once."""

    serializer_class = s.AlbumSerializer
    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses=s.AlbumSerializer)
    def post(self, request: Request, pk: int) -> Response:
        albums.share_album(album=selectors.get_album(request.user, pk))
        return _album_answer(request, pk)

    @extend_schema(responses=s.AlbumSerializer)
    def delete(self, request: Request, pk: int) -> Response:
        albums.revoke_share(album=selectors.get_album(request.user, pk))
        return _album_answer(request, pk)


class _SharedView(generics.GenericAPIView):
    """Anyone with the link; a session or token changes nothing (and a stale token is no 401)."""

    permission_classes = [AllowAny]
    authentication_classes: list = []

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        response["X-Robots-Tag"] = "noindex"
        response["Referrer-Policy"] = "no-referrer"  # the token is in the URL
        return response


class SharedAlbumView(_SharedView):
    """An album shared by its owner, seen through its link: name, description, owner, how many images.
    404 once the link is revoked."""

    serializer_class = s.SharedAlbumSerializer

    def get(self, request: Request, token: str) -> Response:
        album = selectors.get_shared_album(token)
        album.n_images = album.items.count()
        return Response(s.SharedAlbumSerializer(album, context={"request": request}).data)


class SharedAlbumImagesView(_SharedView):
    """The images of a shared album, most recently added first, each with its shown caption and its
    files under the link (paginated)."""

    serializer_class = s.SharedImageSerializer

    @extend_schema(responses=s.SharedImageSerializer(many=True))
    def get(self, request: Request, token: str) -> Response:
        album = selectors.get_shared_album(token)
        page = self.paginate_queryset(selectors.album_images(album))
        context = {"request": request, "token": token, "active": selectors.active_model_version()}
        return self.get_paginated_response(s.SharedImageSerializer(page, many=True, context=context).data)


@extend_schema(exclude=True)
class SharedFileView(APIView):
    """An image of a shared album, through its link: whatever the image's visibility, without where it
    was taken unless the owner shares that."""

    permission_classes = [AllowAny]
    authentication_classes: list = []
    renderer_classes = [JSONRenderer]
    content_negotiation_class = _FirstRenderer

    def get(self, request: Request, token: str, pk: int) -> HttpResponse:
        image = selectors.get_shared_image(token, pk)
        response = original_file(image, None, max_age=SHARED_MAX_AGE_S)
        response["Referrer-Policy"] = "no-referrer"
        return response


@extend_schema(exclude=True)
class SharedZipView(SharedFileView):
    """Every photo of a shared album in one zip, captions written in, without GPS positions unless the
    owner shares them (as anyone but the owner gets them)."""

    def get(self, request: Request, token: str) -> StreamingHttpResponse:
        album = selectors.get_shared_album(token)
        images = selectors.album_images(album)
        if images.count() > settings.IMGCAP_MAX_ZIP_IMAGES:
            raise RejectedInput("too_many_images", "this album is too big to download in one zip")
        response = StreamingHttpResponse(
            downloads.zip_downloads(images.iterator(chunk_size=100), None), content_type="application/zip"
        )
        name = export_filename("zip", album=album.name, today=timezone.localdate())
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        response["Referrer-Policy"] = "no-referrer"
        return response


@extend_schema(exclude=True)
class SharedThumbnailView(SharedFileView):
    """A thumbnail of an image of a shared album (`?size=` as /thumbs/)."""

    def get(self, request: Request, token: str, pk: int) -> FileResponse | HttpResponseRedirect:
        size = thumbnail_size(request)
        image = selectors.get_shared_image(token, pk)
        original = reverse("shared-file", args=[token, image.pk])
        return thumbnail_file(image, size, original, max_age=SHARED_MAX_AGE_S)
