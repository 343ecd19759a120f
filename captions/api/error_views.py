"""Error pages that keep the API's error body ({"error": {"code": ..., "message": ...}}) for every path
under /api/, and Django's own pages everywhere else.

handler400/403/404/500 are wired in imgcap_site/urls.py (Django uses them when DEBUG is off);
`api_not_found` is the last route under /api/, so an unknown API path is JSON with DEBUG on too.
"""

from __future__ import annotations

import logging
import sys

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect, JsonResponse
from django.template.loader import render_to_string
from django.urls import is_valid_path, reverse
from django.utils.http import escape_leading_slashes
from django.views import defaults
from django.views.decorators.common import no_append_slash
from django.views.decorators.csrf import csrf_exempt
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

# The database cannot be reached, dropped the connection or has no connection left ("too many
# clients"): psycopg2 raises these. A bad query (ProgrammingError, DataError) stays a 500.
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError)
# The shared cache (Redis, where the request rates are counted before a view runs) cannot be reached,
# e.g. while Redis restarts: redis-py raises these. Not the client's fault either, and nothing was done.
CACHE_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError)
SERVICE_UNAVAILABLE = DATABASE_UNAVAILABLE + CACHE_UNAVAILABLE
RETRY_AFTER_S = 5


def is_api_path(request: HttpRequest) -> bool:
    path = request.path_info
    return path == "/api" or path.startswith("/api/")


def error_response(status: int, code: str, message: str, **headers: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status, headers=headers)


def method_not_allowed(request: HttpRequest, allowed: list[str]) -> JsonResponse:
    return error_response(
        405,
        "method_not_allowed",
        f'Method "{request.method}" not allowed.',
        Allow=", ".join(allowed),
    )


def _not_found(request: HttpRequest) -> JsonResponse:
    return error_response(
        404, "not_found", f"{request.path} is not an API endpoint; see {reverse('api:docs')}"
    )


@csrf_exempt  # it changes nothing; without this a POST would meet the CSRF check's HTML page first
@no_append_slash  # marks the catch-all, so the slash check below tells it from real routes
def api_not_found(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
    """The catch-all after every API route: a JSON 404 (even with DEBUG on, which skips handler404).

    A catch-all matches every path, so CommonMiddleware's APPEND_SLASH redirect never happens for
    API paths; done here instead: GET/HEAD of `/api/v1/images` go to `/api/v1/images/` as before,
    other methods get a 404 naming the right path (a redirect would lose the request body).
    """
    path = request.path_info
    if settings.APPEND_SLASH and not path.endswith("/"):
        match = is_valid_path(f"{path}/", getattr(request, "urlconf", None))
        if match and getattr(match.func, "should_append_slash", True):
            slashed = escape_leading_slashes(request.get_full_path(force_append_slash=True))
            if request.method in ("GET", "HEAD"):
                return HttpResponsePermanentRedirect(slashed)
            return error_response(
                404,
                "not_found",
                f"{request.path} is not an API endpoint; {request.path}/ is (mind the slash)",
            )
    return _not_found(request)


def handler400(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api_path(request):
        return error_response(400, "bad_request", "the request could not be read")
    return defaults.bad_request(request, exception)


def handler403(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api_path(request):
        return error_response(403, "permission_denied", "You do not have permission to perform this action.")
    return defaults.permission_denied(request, exception)


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api_path(request):
        return _not_found(request)
    return defaults.page_not_found(request, exception)


def service_unavailable(request: HttpRequest, exc: BaseException) -> HttpResponse:
    """503 with Retry-After for a database or cache that does not answer (SERVICE_UNAVAILABLE)."""
    if isinstance(exc, CACHE_UNAVAILABLE):
        return cache_unavailable(request, exc)
    return database_unavailable(request, exc)


def database_unavailable(request: HttpRequest, exc: BaseException) -> HttpResponse:
    """503 with Retry-After: not the client's fault and not permanent, and nothing was stored, so a
    retry is safe. JSON in the API's error shape under /api/, a short page elsewhere."""
    logger.warning("database unavailable for %s %s: %s", request.method, request.path, exc)
    retry = {"Retry-After": str(RETRY_AFTER_S)}
    if is_api_path(request):
        message = "the database is not answering; nothing was stored, try again in a few seconds"
        return error_response(503, "database_unavailable", message, **retry)
    page = render_to_string("503.html", {"retry_after": RETRY_AFTER_S})
    return HttpResponse(page, status=503, headers=retry)


def cache_unavailable(request: HttpRequest, exc: BaseException) -> HttpResponse:
    """As database_unavailable, for the shared cache: request rates are checked there before anything is
    done, so nothing was stored and the same request can be sent again."""
    logger.warning("cache unavailable for %s %s: %s", request.method, request.path, exc)
    retry = {"Retry-After": str(RETRY_AFTER_S)}
    message = (
        "a service of the site (its cache) is not answering; nothing was stored, try again in a few seconds"
    )
    if is_api_path(request):
        return error_response(503, "service_unavailable", message, **retry)
    return HttpResponse(f"{message}\n", status=503, headers=retry, content_type="text/plain; charset=utf-8")


def handler500(request: HttpRequest) -> HttpResponse:
    # Django calls this while handling the exception: one from a middleware (a session saved while
    # the database is down) reaches here rather than DatabaseUnavailableMiddleware.
    exc = sys.exc_info()[1]
    if isinstance(exc, SERVICE_UNAVAILABLE):
        return service_unavailable(request, exc)
    if is_api_path(request):
        # The traceback goes to the log (django.request), never to the client.
        return error_response(500, "server_error", "the server failed to answer this request")
    return defaults.server_error(request)
