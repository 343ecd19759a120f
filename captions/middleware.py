"""Request middleware of the captions app."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from captions.api.error_views import (
    RETRY_AFTER_S,
    SERVICE_UNAVAILABLE,
    error_response,
    is_api_path,
    service_unavailable,
)
from captions.ingest.errors import human_sizes

# Multipart headers and form fields around an upload's file.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
# The route that takes one image; every other route takes at most IMGCAP_MAX_REQUEST_BYTES.
ONE_IMAGE_PATHS = ("/api/v1/images/",)


class DatabaseUnavailableMiddleware:
    """A view that meets a database (or the shared cache) it cannot reach answers 503 with Retry-After,
    not 500 (with DEBUG on too; handler500 does the same for errors outside views). Any other 503 (the
    health check while a dependency is down) gets the same Retry-After: a 503 always says when to
    come back."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code == 503 and not response.has_header("Retry-After"):
            response["Retry-After"] = str(RETRY_AFTER_S)
        return response

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        return service_unavailable(request, exc) if isinstance(exc, SERVICE_UNAVAILABLE) else None


class RequestSizeMiddleware:
    """A request whose Content-Length is over what its route can accept is refused (413) before a
    byte of its body is read or spooled: one image (IMGCAP_MAX_UPLOAD_BYTES plus the multipart
    around it) to the upload endpoint, IMGCAP_MAX_REQUEST_BYTES to any other (a batch of files, a
    zip). The file checks still measure every file itself, since a length can lie."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0  # Django's own parsing answers a malformed length
        limit = (
            settings.IMGCAP_MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD_BYTES
            if request.path_info in ONE_IMAGE_PATHS
            else settings.IMGCAP_MAX_REQUEST_BYTES
        )
        if length <= limit:
            return self.get_response(request)
        size, allowed = human_sizes(length, limit)
        message = f"the request is {size}, over the limit of {allowed} for {request.path_info}"
        if is_api_path(request):
            return error_response(413, "request_too_large", message)
        return HttpResponse(f"{message}\n", status=413, content_type="text/plain; charset=utf-8")
