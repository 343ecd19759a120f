"""Request middleware of the captions app."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from captions.api.error_views import DATABASE_UNAVAILABLE, database_unavailable


class DatabaseUnavailableMiddleware:
    """A view that meets a database it cannot reach answers 503 with Retry-After, not 500 (with
    DEBUG on too; handler500 does the same for errors outside views)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        return database_unavailable(request, exc) if isinstance(exc, DATABASE_UNAVAILABLE) else None
