"""REST API v1: thin views over captions.selectors (reads) and captions.services (writes)."""

from __future__ import annotations

import mimetypes

from django.conf import settings
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.urls import reverse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from captions import downloads, health, long_poll, selectors, thumbnails
from captions.api import serializers as s
from captions.api.filters import ExportFilterSerializer, ImageFilterSerializer, read_filters
from captions.api.pagination import SearchPagination
from captions.exports import CONTENT_TYPES, export_filename, export_rows, render_rows
from captions.ingest import RejectedInput
from captions.location import without_location
from captions.models import Image
from captions.services import batches, webhooks
from captions.services.images import (
    add_human_caption,
    delete_image,
    recaption_image,
    remove_human_captions,
    retry_image,
    set_share_location,
    set_visibility,
)
from captions.services.intake import create_batch, upload_file
from captions.throttles import BATCH, RECAPTION, SEARCH, UPLOAD, WEBHOOK


def _query(name: str, description: str, required: bool = False) -> OpenApiParameter:
    return OpenApiParameter(name, str, OpenApiParameter.QUERY, required=required, description=description)


def _int_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise RejectedInput("bad_filter", f"{name} must be a number; got {raw!r}") from None


class _FirstRenderer(BaseContentNegotiation):
    """Files and exports answer with their own content type whatever the Accept header says;
    errors are JSON."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None


class ImageListView(generics.GenericAPIView):
    """List the images you can see (yours and public ones), or upload one image to caption (202)."""

    serializer_class = s.ImageSerializer
    parser_classes = [MultiPartParser, FormParser]
    throttle_scopes = {"POST": UPLOAD}

    def get_serializer_class(self):
        if self.request is not None and self.request.method == "POST":
            return s.ImageUploadSerializer
        return s.ImageSerializer

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "active": selectors.active_model_version()}

    @extend_schema(parameters=[ImageFilterSerializer], responses=s.ImageSerializer(many=True))
    def get(self, request: Request) -> Response:
        filters = read_filters(ImageFilterSerializer, request)
        images = selectors.list_images(request.user, **filters.selector_kwargs())
        page = self.paginate_queryset(images)
        data = s.ImageSerializer(page, many=True, context=self.get_serializer_context()).data
        return self.get_paginated_response(data)

    @extend_schema(request=s.ImageUploadSerializer, responses={202: s.ImageSerializer})
    def post(self, request: Request) -> Response:
        form = s.ImageUploadSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        batch = album = None
        if "batch" in form.validated_data:
            batch = selectors.find_own_batch(request.user, form.validated_data["batch"])
        if "album" in form.validated_data:
            album = selectors.find_own_album(request.user, form.validated_data["album"])
        result = upload_file(
            owner=request.user,
            uploaded=form.validated_data["image"],
            visibility=form.validated_data["visibility"],
            batch=batch,
            album=album,
        )
        # A new image has no captions yet (but the description its file carried, if any): no active
        # model version to look up for choosing one.
        image = selectors.load_captions(result.image, new=result.created and not result.described)
        context = {"request": request, "active": None} if result.created else self.get_serializer_context()
        data = s.ImageSerializer(image, context=context).data
        data["duplicate"] = not result.created
        return Response(data, status=status.HTTP_202_ACCEPTED, headers={"Location": data["urls"]["self"]})


class ImageDetailView(generics.GenericAPIView):
    """One image with its best caption and N-best candidates; PATCH adds a human caption or changes
    visibility; DELETE removes it (owner only)."""

    serializer_class = s.ImageSerializer
    parser_classes = [JSONParser, FormParser, MultiPartParser]

    def get_serializer_class(self):
        if self.request is not None and self.request.method == "PATCH":
            return s.ImagePatchSerializer
        return s.ImageSerializer

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "active": selectors.active_model_version()}

    def _show(self, request: Request, pk: int, image: Image | None = None) -> Response:
        image = image or selectors.get_image(request.user, pk)
        return Response(s.ImageSerializer(image, context=self.get_serializer_context()).data)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "wait",
                float,
                OpenApiParameter.QUERY,
                description="Long poll: while the image is pending or processing, answer once it is done "
                f"or failed, or after this many seconds (above 0, at most {long_poll.MAX_WAIT_S}).",
            ),
            OpenApiParameter(
                long_poll.WAITED_HEADER,
                str,
                OpenApiParameter.HEADER,
                response=[200],
                description="With `wait`: the seconds the answer waited (0.0 when the image had settled "
                "already, or when this server had too many waiting requests to wait).",
            ),
        ],
        responses=s.ImageSerializer,
    )
    def get(self, request: Request, pk: int) -> Response:
        seconds = long_poll.parse_wait(request.query_params.get("wait"))
        if seconds is None:
            return self._show(request, pk)
        image = selectors.get_image(request.user, pk)  # a 404 does not wait
        waited = long_poll.wait_until_settled(image, seconds)
        response = self._show(request, pk, None if waited else image)  # read again: it may have changed
        response[long_poll.WAITED_HEADER] = f"{waited:.1f}"
        return response

    @extend_schema(request=s.ImagePatchSerializer, responses=s.ImageSerializer)
    def patch(self, request: Request, pk: int) -> Response:
        image = selectors.get_own_image(request.user, pk)
        form = s.ImagePatchSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        if "visibility" in form.validated_data:
            set_visibility(image=image, visibility=form.validated_data["visibility"])
        if "share_location" in form.validated_data:
            set_share_location(image=image, share=form.validated_data["share_location"])
        if "caption" in form.validated_data:
            add_human_caption(image=image, text=form.validated_data["caption"], author=request.user)
        return self._show(request, pk)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        delete_image(image=selectors.get_own_image(request.user, pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


class ImageCaptionView(generics.GenericAPIView):
    """DELETE removes the captions people wrote for the image (or only `caption`, one of them), so that
    the model's best caption is shown again (owner only; 204; 404 when it has none)."""

    serializer_class = s.ImageSerializer
    permission_classes = [IsAuthenticated]

    @extend_schema(
        parameters=[_query("caption", "the id of one human caption to remove (default: all of them)")],
        responses={204: None},
    )
    def delete(self, request: Request, pk: int) -> Response:
        image = selectors.get_own_image(request.user, pk)
        remove_human_captions(image=image, caption_id=_int_param(request, "caption"))
        return Response(status=status.HTTP_204_NO_CONTENT)


class ImageRecaptionView(generics.GenericAPIView):
    """Queue the image again for the current model (202); earlier captions are kept. 409 while queued."""

    serializer_class = s.ImageSerializer
    permission_classes = [IsAuthenticated]
    throttle_scopes = {"POST": RECAPTION}

    @extend_schema(request=None, responses={202: s.ImageSerializer})
    def post(self, request: Request, pk: int) -> Response:
        recaption_image(image=selectors.get_own_image(request.user, pk))
        image = selectors.get_image(request.user, pk)
        context = {"request": request, "active": selectors.active_model_version()}
        return Response(s.ImageSerializer(image, context=context).data, status=status.HTTP_202_ACCEPTED)


class ImageRetryView(ImageRecaptionView):
    """Queue a failed image again (202). 409 unless it failed."""

    @extend_schema(request=None, responses={202: s.ImageSerializer})
    def post(self, request: Request, pk: int) -> Response:
        retry_image(image=selectors.get_own_image(request.user, pk))
        image = selectors.get_image(request.user, pk)
        context = {"request": request, "active": selectors.active_model_version()}
        return Response(s.ImageSerializer(image, context=context).data, status=status.HTTP_202_ACCEPTED)


class ImageAttentionView(generics.GenericAPIView):
    """Where the model looked for each word of its best caption (or of `caption`, one of the image's model
    captions): the words, and per word a grid of 0-255 values to lay over the whole image. 404 with code
    no_attention while the image has no model caption."""

    serializer_class = s.AttentionSerializer

    @extend_schema(parameters=[_query("caption", "a model caption's id (default: the best model caption)")])
    def get(self, request: Request, pk: int) -> Response:
        image = selectors.get_image(request.user, pk)
        attention = selectors.caption_attention(image, request.query_params.get("caption"))
        response = Response(s.AttentionSerializer(attention).data)
        response["Cache-Control"] = "private, max-age=60"
        return response


class ImageSimilarView(generics.GenericAPIView):
    """The images you can see that look most like this one (the encoder's features, nearest first), at
    most `limit` (default 12, up to 50); near copies (resized, re-encoded, rotated) say so. Empty until
    the image is captioned."""

    serializer_class = s.SimilarImageSerializer

    @extend_schema(
        parameters=[_query("limit", "how many (1-50, default 12)")],
        responses=s.SimilarImageSerializer(many=True),
    )
    def get(self, request: Request, pk: int) -> Response:
        limit = _int_param(request, "limit")
        limit = 12 if limit is None else limit
        if not 1 <= limit <= 50:
            raise RejectedInput("bad_filter", f"limit must be between 1 and 50; got {limit}")
        image = selectors.get_image(request.user, pk)
        found = selectors.similar_images(request.user, image, limit)
        return Response(s.SimilarImageSerializer(found, many=True, context={"request": request}).data)


class ImageDownloadView(APIView):
    """The image's file named as it was uploaded, with the caption the site shows written into it (XMP
    dc:description and EXIF ImageDescription). A format that cannot hold it (HEIC, GIF, BMP) comes as
    it is, with `X-Caption-Sidecar` naming `?sidecar=1`: the caption as an .xmp sidecar. Anyone but the
    owner gets it without its GPS position unless the owner shares it; another user's private image: 404."""

    permission_classes = [AllowAny]
    renderer_classes = [JSONRenderer]
    content_negotiation_class = _FirstRenderer

    @extend_schema(
        parameters=[_query("sidecar", "1: the caption as an .xmp sidecar (XMP packet) instead of the image")],
        # Its content types and X-Caption-Sidecar are added by captions/api/openapi.py.
        responses={
            200: OpenApiResponse(OpenApiTypes.BINARY, description="the image file, or its .xmp sidecar")
        },
    )
    def get(self, request: Request, pk: int) -> HttpResponse:
        want_sidecar = _flag_param(request, "sidecar")
        image = selectors.get_image(request.user, pk)
        if want_sidecar:
            download = downloads.sidecar_for(image)
            if download is None:
                raise RejectedInput("no_caption", f"image {image.pk} has no caption yet", status=404)
        else:
            try:
                download = downloads.download_for(image, request.user)
            except FileNotFoundError:
                raise Http404("file missing") from None
        response = HttpResponse(download.data, content_type=download.content_type)
        response["Content-Disposition"] = downloads.content_disposition(download.name)
        if download.sidecar is not None:
            sidecar_url = request.build_absolute_uri(reverse("api:image-download", args=[image.pk]))
            response["X-Caption-Sidecar"] = f"{sidecar_url}?sidecar=1"
        # The caption written into it can change: not kept by the browser.
        response["Cache-Control"] = "private, no-cache"
        response["X-Content-Type-Options"] = "nosniff"
        return response


class ImagesZipView(APIView):
    """A zip of the images you can see that match the filters (as `GET /api/v1/images/`: `ids`,
    `album`, `batch`, `owner=me`, `status`, `tag`, …), each named as uploaded with the caption the site
    shows written into it (an .xmp sidecar beside those whose format cannot hold it), streamed. At most
    IMGCAP_MAX_ZIP_IMAGES photos (400 too_many_images: narrow it down); 404 when none matches. Named
    after what it holds and the day, e.g. imgcap-album-crete-2026-12-03.zip."""

    renderer_classes = [JSONRenderer]
    content_negotiation_class = _FirstRenderer

    @extend_schema(
        parameters=[ImageFilterSerializer],
        responses={200: OpenApiResponse(OpenApiTypes.BINARY, description="a zip archive, streamed")},
    )
    def get(self, request: Request) -> StreamingHttpResponse:
        filters = read_filters(ImageFilterSerializer, request)
        kwargs = filters.selector_kwargs()
        album = (
            selectors.find_own_album(request.user, kwargs["album"]) if kwargs["album"] is not None else None
        )
        images = selectors.list_images(request.user, **kwargs)
        limit = settings.IMGCAP_MAX_ZIP_IMAGES
        count = images.count()
        if count > limit:
            raise RejectedInput(
                "too_many_images", f"{count} photos match; a zip holds at most {limit}: narrow it down"
            )
        if not count:
            raise RejectedInput("no_images", "no photo matches these filters", status=404)
        response = StreamingHttpResponse(
            downloads.zip_downloads(images.iterator(chunk_size=100), request.user),
            content_type="application/zip",
        )
        name = export_filename(
            "zip",
            batch=kwargs["batch"],
            album=album.name if album is not None else None,
            mine=kwargs["mine"],
            today=timezone.localdate(),
        )
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        response["Cache-Control"] = "private, no-cache"
        return response


def _flag_param(request: Request, name: str) -> bool:
    raw = (request.query_params.get(name) or "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise RejectedInput("bad_filter", f"{name} must be 1 or 0; got {raw!r}")


class BatchListView(generics.GenericAPIView):
    """Your batches (GET), or submit one (POST, 202): multipart `images` (many files) and/or a zip in
    `archive`, or JSON {"urls": [...]}. Bad items are listed in `rejected` while the good ones are
    accepted; 4xx if none is acceptable. URLs are downloaded by a worker after the answer: they are
    listed in `fetching` (status `fetching`) until each becomes an item or a rejection. Send an
    `Idempotency-Key` header to make retries safe."""

    serializer_class = s.BatchSerializer
    parser_classes = [MultiPartParser, FormParser, JSONParser]
    throttle_scopes = {"POST": BATCH}

    def get_serializer_class(self):
        if self.request is not None and self.request.method == "POST":
            return s.BatchCreateSerializer
        return s.BatchSummarySerializer

    @extend_schema(responses=s.BatchSummarySerializer(many=True))
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(selectors.list_batches(request.user))
        data = s.BatchSummarySerializer(page, many=True, context={"request": request}).data
        return self.get_paginated_response(data)

    @extend_schema(
        request=s.BatchCreateSerializer,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                str,
                OpenApiParameter.HEADER,
                description="a retried request with the same key returns the same batch",
            )
        ],
        responses={202: s.BatchSerializer},
    )
    def post(self, request: Request) -> Response:
        form = s.BatchCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        album = None
        if "album" in form.validated_data:
            album = selectors.find_own_album(request.user, form.validated_data["album"])
        result = create_batch(
            owner=request.user,
            album=album,
            files=form.validated_data.get("images", []),
            archives=[form.validated_data["archive"]] if form.validated_data.get("archive") else [],
            urls=form.validated_data.get("urls", []),
            visibility=form.validated_data["visibility"],
            idempotency_key=request.headers.get("Idempotency-Key"),
        )
        data = s.BatchSerializer(selectors.batch_status(result.batch), context={"request": request}).data
        headers = {"Location": data["urls"]["self"]}
        if result.replayed:
            headers["Idempotent-Replayed"] = "true"
        return Response(data, status=status.HTTP_202_ACCEPTED, headers=headers)


class BatchDetailView(generics.GenericAPIView):
    """A batch's status, counts {pending, processing, done, failed}, items and the URLs still being
    fetched (your own batches only). PATCH names it; DELETE removes the batch, its images staying in
    your library, or, with `with_images=true`, deleting them too (409 while its URLs are fetched)."""

    serializer_class = s.BatchSerializer
    permission_classes = [IsAuthenticated]
    parser_classes = [JSONParser, FormParser, MultiPartParser]

    def get_serializer_class(self):
        if self.request is not None and self.request.method == "PATCH":
            return s.BatchPatchSerializer
        return s.BatchSerializer

    def get(self, request: Request, pk: int) -> Response:
        state = selectors.batch_status(selectors.get_batch(request.user, pk))
        return Response(s.BatchSerializer(state, context={"request": request}).data)

    @extend_schema(request=s.BatchPatchSerializer, responses=s.BatchSerializer)
    def patch(self, request: Request, pk: int) -> Response:
        batch = selectors.get_batch(request.user, pk)
        form = s.BatchPatchSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        batches.rename_batch(batch=batch, name=form.validated_data["name"])
        return self.get(request, pk)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "with_images",
                bool,
                OpenApiParameter.QUERY,
                description="true: delete the batch's images too (from every album and batch)",
            )
        ],
        responses={204: None},
    )
    def delete(self, request: Request, pk: int) -> Response:
        with_images = _flag_param(request, "with_images")
        batches.delete_batch(batch=selectors.get_batch(request.user, pk), with_images=with_images)
        return Response(status=status.HTTP_204_NO_CONTENT)


class SearchView(generics.GenericAPIView):
    """Search images by the words of their captions and by meaning: `q` (stemmed: "dogs running" finds
    "a dog runs"; "puppy" also finds "a brown dog on the grass"; typos are corrected against the captions'
    words and `corrected` says so), ranked best first; only images you can see. Each hit says how it
    matched (`matched_by`: words, meaning, picture, tag) with a snippet, matched words highlighted. Words
    match what an image shows (its human captions, else the model's best caption; the model's other
    candidates rank lower); a model caption the owner replaced no longer matches. Paginated: 20 hits a
    page, `page_size` up to 100. A hit is slim (image id, URLs and best caption; the matched caption,
    snippet and score): GET the image's `urls.self` for its N-best list. The newest 200 captions that
    match by words (IMGCAP_SEARCH_CANDIDATES) are ranked: `capped` true means that more match."""

    serializer_class = s.SearchHitSerializer
    pagination_class = SearchPagination
    throttle_scopes = {"GET": SEARCH}

    @extend_schema(
        parameters=[
            _query("q", 'what to look for, e.g. "dogs running" or "kids at the beach"', required=True)
        ],
        responses=s.SearchHitSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        query = request.query_params.get("q", "").strip()
        if not query:
            raise RejectedInput("missing_query", "give a search query in the q parameter")
        if "\x00" in query:
            raise RejectedInput("bad_query", "the search query contains a NUL character")
        page = self.paginate_queryset(selectors.search(request.user, query))
        data = s.SearchHitSerializer(page, many=True, context={"request": request}).data
        return self.get_paginated_response(data)


class ExportView(APIView):
    """Stream the captions of the images you can see as CSV or JSON Lines: image_url, caption, score,
    model_version, source (+ rank, image_id, original_name, created_at, tags); one row per image (the
    caption shown), or every caption with captions=all. Filters: batch, album (yours: 400
    unknown_album otherwise), status, source (model/human), model (version name), q (full-text),
    owner=me. Named after what it holds and the day."""

    renderer_classes = [JSONRenderer]
    content_negotiation_class = _FirstRenderer
    fmt = "csv"

    @extend_schema(
        parameters=[ExportFilterSerializer],
        responses={200: OpenApiResponse(OpenApiTypes.STR, description="CSV or JSON Lines, streamed")},
    )
    def get(self, request: Request) -> StreamingHttpResponse:
        filters = read_filters(ExportFilterSerializer, request)
        album_id = filters.validated_data.get("album")
        album = selectors.find_own_album(request.user, album_id) if album_id is not None else None
        rows = export_rows(request.user, **filters.selector_kwargs())
        media_root = request.build_absolute_uri(reverse("media", args=["x"]))[: -len("x")]

        def url_for(row) -> str:
            return media_root + row.image_file

        response = StreamingHttpResponse(
            render_rows(rows, self.fmt, url_for), content_type=CONTENT_TYPES[self.fmt]
        )
        name = export_filename(
            self.fmt,
            batch=filters.validated_data.get("batch"),
            album=album.name if album is not None else None,
            mine=filters.selector_kwargs()["mine"],
            today=timezone.localdate(),
        )
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response


class WebhookListView(generics.GenericAPIView):
    """Your webhooks (GET), or register one (POST, 201): its URL is sent `caption.done` and/or
    `caption.failed` events for your images, signed per the Standard Webhooks spec with the secret in
    this answer, which is shown only here (and when rotated)."""

    serializer_class = s.WebhookSerializer
    permission_classes = [IsAuthenticated]
    parser_classes = [JSONParser, FormParser, MultiPartParser]
    throttle_scopes = {"POST": WEBHOOK}

    def get_serializer_class(self):
        if self.request is not None and self.request.method == "POST":
            return s.WebhookCreateSerializer
        return s.WebhookSerializer

    @extend_schema(responses=s.WebhookSerializer(many=True))
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(selectors.list_webhooks(request.user))
        return self.get_paginated_response(
            s.WebhookSerializer(page, many=True, context={"request": request}).data
        )

    @extend_schema(request=s.WebhookCreateSerializer, responses={201: s.WebhookWithSecretSerializer})
    def post(self, request: Request) -> Response:
        form = s.WebhookCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        webhook = webhooks.create_webhook(owner=request.user, **form.validated_data)
        data = s.WebhookWithSecretSerializer(webhook, context={"request": request}).data
        return Response(data, status=status.HTTP_201_CREATED, headers={"Location": data["urls"]["self"]})


class WebhookDetailView(generics.GenericAPIView):
    """One of your webhooks (404 for anyone else's); PATCH changes its URL, events or `active`; DELETE
    removes it and its deliveries."""

    serializer_class = s.WebhookSerializer
    permission_classes = [IsAuthenticated]
    parser_classes = [JSONParser, FormParser, MultiPartParser]

    def get_serializer_class(self):
        if self.request is not None and self.request.method == "PATCH":
            return s.WebhookPatchSerializer
        return s.WebhookSerializer

    def get(self, request: Request, pk: int) -> Response:
        webhook = selectors.get_webhook(request.user, pk)
        return Response(s.WebhookSerializer(webhook, context={"request": request}).data)

    @extend_schema(request=s.WebhookPatchSerializer, responses=s.WebhookSerializer)
    def patch(self, request: Request, pk: int) -> Response:
        webhook = selectors.get_webhook(request.user, pk)
        form = s.WebhookPatchSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        webhooks.update_webhook(webhook=webhook, **form.validated_data)
        return Response(s.WebhookSerializer(webhook, context={"request": request}).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        webhooks.delete_webhook(webhook=selectors.get_webhook(request.user, pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookRotateSecretView(generics.GenericAPIView):
    """A new signing secret for the webhook, in this answer only; the old one stops signing at once."""

    serializer_class = s.WebhookWithSecretSerializer
    permission_classes = [IsAuthenticated]
    throttle_scopes = {"POST": WEBHOOK}

    @extend_schema(request=None, responses=s.WebhookWithSecretSerializer)
    def post(self, request: Request, pk: int) -> Response:
        webhook = webhooks.rotate_secret(webhook=selectors.get_webhook(request.user, pk))
        return Response(s.WebhookWithSecretSerializer(webhook, context={"request": request}).data)


class WebhookTestView(generics.GenericAPIView):
    """Send a `webhook.test` event to the webhook now and answer with the delivery: `delivered`, or
    `failed` with the receiver's status or why it could not be reached (never retried)."""

    serializer_class = s.WebhookDeliverySerializer
    permission_classes = [IsAuthenticated]
    throttle_scopes = {"POST": WEBHOOK}

    @extend_schema(request=None, responses=s.WebhookDeliverySerializer)
    def post(self, request: Request, pk: int) -> Response:
        delivery = webhooks.send_test(webhook=selectors.get_webhook(request.user, pk))
        return Response(s.WebhookDeliverySerializer(delivery).data)


class WebhookDeliveryListView(generics.GenericAPIView):
    """The webhook's deliveries, newest first: each event, its status, attempts and last error."""

    serializer_class = s.WebhookDeliverySerializer
    permission_classes = [IsAuthenticated]

    @extend_schema(responses=s.WebhookDeliverySerializer(many=True))
    def get(self, request: Request, pk: int) -> Response:
        page = self.paginate_queryset(selectors.list_deliveries(selectors.get_webhook(request.user, pk)))
        return self.get_paginated_response(s.WebhookDeliverySerializer(page, many=True).data)


class ModelVersionListView(generics.GenericAPIView):
    """The captioning model versions known to the platform; `active` is the one whose captions are shown."""

    serializer_class = s.ModelVersionSerializer
    pagination_class = PageNumberPagination

    @extend_schema(responses=s.ModelVersionSerializer(many=True))
    def get(self, request: Request) -> Response:
        from captions.models import ModelVersion

        page = self.paginate_queryset(ModelVersion.objects.order_by("-created_at", "-id"))
        return self.get_paginated_response(s.ModelVersionSerializer(page, many=True).data)


class HealthView(APIView):
    """Whether this deployment can take and caption uploads: 200 when the database and the broker answer,
    503 (saying which does not) otherwise; also the captioning queue and the active model. No sign-in,
    for load balancers and container health checks."""

    permission_classes = [AllowAny]
    authentication_classes: list = []  # a stale token in a monitor's config must not turn this into a 401

    @extend_schema(
        responses={
            200: OpenApiResponse(OpenApiTypes.OBJECT, description="the database and the broker answer"),
            503: OpenApiResponse(
                OpenApiTypes.OBJECT, description="one of them does not (`checks` says which)"
            ),
        }
    )
    def get(self, request: Request) -> Response:
        found = health.check()
        body = {
            "status": "ok" if found.ok else "unavailable",
            "checks": found.checks,
            "queue": found.queue,
            "model": found.model,
        }
        response = Response(
            body, status=status.HTTP_200_OK if found.ok else status.HTTP_503_SERVICE_UNAVAILABLE
        )
        response["Cache-Control"] = "no-store"
        return response


@extend_schema(exclude=True)
class MediaView(APIView):
    """An image file, only for users who may see an image stored under it (404 otherwise).

    Token and session auth both work, so API clients can fetch the `file` URLs they are given.
    """

    permission_classes = [AllowAny]
    renderer_classes = [JSONRenderer]
    content_negotiation_class = _FirstRenderer

    def get(self, request: Request, name: str) -> HttpResponse:
        return original_file(selectors.get_image_by_file(request.user, name), request.user)


def original_file(image: Image, user, max_age: int = 86400) -> HttpResponse:
    """The image's stored file as `user` may have it: anyone but the owner gets it without where it was
    taken (captions/location.py) unless the owner shares that."""
    try:
        handle = default_storage.open(image.file.name, "rb")
    except FileNotFoundError:
        raise Http404("file missing") from None
    content_type = mimetypes.guess_type(image.file.name)[0] or "application/octet-stream"
    if image.owner_id != getattr(user, "pk", None) and not image.share_location:
        with handle:
            data = handle.read()
        response = HttpResponse(without_location(data) or data, content_type=content_type)
    else:
        response = FileResponse(handle, content_type=content_type)
    # Content-addressed, so it never changes; private because visibility can.
    response["Cache-Control"] = f"private, max-age={max_age}"
    response["X-Content-Type-Options"] = "nosniff"
    return response


@extend_schema(exclude=True)
class ThumbnailView(APIView):
    """A small WebP of an image (`?size=640` for high-density screens), made on first request and kept;
    the same visibility check as the full image (another user's private image: 404)."""

    permission_classes = [AllowAny]
    renderer_classes = [JSONRenderer]
    content_negotiation_class = _FirstRenderer

    def get(self, request: Request, pk: int) -> FileResponse | HttpResponseRedirect:
        size = thumbnail_size(request)
        image = selectors.get_image(request.user, pk)
        return thumbnail_file(image, size, reverse("media", args=[image.file.name]))


def thumbnail_size(request: Request) -> int:
    """The `size` asked for (default thumbnails.DEFAULT_SIZE); RejectedInput (400) for another."""
    size = _int_param(request, "size") or thumbnails.DEFAULT_SIZE
    if size not in thumbnails.SIZES:
        sizes = ", ".join(map(str, thumbnails.SIZES))
        raise RejectedInput("bad_size", f"size must be one of {sizes}; got {size}")
    return size


def thumbnail_file(
    image: Image, size: int, original_url: str, max_age: int = 86400
) -> FileResponse | HttpResponseRedirect:
    """The image's WebP thumbnail, or a redirect to `original_url` when it cannot be resized."""
    try:
        name = thumbnails.thumbnail_for(image, size)
    except thumbnails.ThumbnailError:
        # Readable enough to be accepted, not to be resized: the browser gets the original instead.
        return HttpResponseRedirect(original_url)
    response = FileResponse(default_storage.open(name, "rb"), content_type=thumbnails.CONTENT_TYPE)
    # An image's bytes never change; private because its visibility can.
    response["Cache-Control"] = f"private, max-age={max_age}"
    response["X-Content-Type-Options"] = "nosniff"
    return response
