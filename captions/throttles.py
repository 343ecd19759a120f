"""Request rates: how often one user (an anonymous client: one address) may upload, send a batch,
re-caption, search or change webhooks, for the API and the HTML pages alike.

DRF's scoped throttle, counting in the shared cache (settings.CACHES: Redis beside the broker, or a
folder for the embedded platform), so every web process sees the same counts. The rates are read from
settings.IMGCAP_THROTTLE_RATES at each request, so an environment variable or a test can change them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rest_framework.throttling import SimpleRateThrottle

logger = logging.getLogger(__name__)

# The scopes a view throttles, by HTTP method (views without one are not throttled).
UPLOAD, BATCH, RECAPTION, SEARCH, WEBHOOK = "upload", "batch", "recaption", "search", "webhook"

View = Callable[..., HttpResponse]


class ScopedThrottle(SimpleRateThrottle):
    """A view's `throttle_scopes` ({method: scope}) names the rate its request counts against; the
    count is per user, or per client address for anonymous requests."""

    def __init__(self) -> None:  # the rate depends on the view: resolved in allow_request
        pass

    def allow_request(self, request: Any, view: Any) -> bool:
        self.scope = getattr(view, "throttle_scopes", {}).get(request.method)
        self.rate = settings.IMGCAP_THROTTLE_RATES.get(self.scope) if self.scope else None
        if not self.rate:
            return True
        self.num_requests, self.duration = self.parse_rate(self.rate)
        try:
            return super().allow_request(request, view)
        except (RedisConnectionError, RedisTimeoutError):
            # The counts are away (Redis restarting): let the request through uncounted rather than
            # refuse everyone for a cache, as a broker outage lets uploads in (the reaper sends them).
            logger.warning("request rates not counted: the cache does not answer", exc_info=True)
            return True

    def get_cache_key(self, request: Any, view: Any) -> str:
        user = getattr(request, "user", None)
        ident = f"user-{user.pk}" if user is not None and user.is_authenticated else client_address(request)
        return f"throttle_{self.scope}_{ident}"


def client_address(request: HttpRequest) -> str:
    """The client's address: REMOTE_ADDR, or behind IMGCAP_TRUSTED_PROXIES proxies the X-Forwarded-For
    entry the outermost of them added (entries further left are the client's to forge). Sign-in
    lockouts count by it (settings.AXES_CLIENT_IP_CALLABLE), as the throttles do. (DRF's own get_ident
    believes any X-Forwarded-For unless NUM_PROXIES is set.)"""
    proxies = settings.TRUSTED_PROXIES
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if proxies and forwarded:
        entries = [e.strip() for e in forwarded.split(",") if e.strip()]
        if entries:
            return entries[-min(proxies, len(entries))]
    return request.META.get("REMOTE_ADDR", "")


class _Scoped:
    """What ScopedThrottle needs of a view, for the HTML views (plain Django functions)."""

    def __init__(self, method: str, scope: str) -> None:
        self.throttle_scopes = {method: scope}


def wait_seconds(request: HttpRequest, scope: str) -> int | None:
    """None if this request of an HTML view may go on; else the seconds to wait (it was not counted)."""
    throttle = ScopedThrottle()
    if throttle.allow_request(request, _Scoped(request.method or "GET", scope)):
        return None
    return max(1, round(throttle.wait() or 1))


def throttle_page(scope: str, *, methods: tuple[str, ...] = ("POST",)) -> Callable[[View], View]:
    """An HTML view's requests of these methods count against `scope`; over the rate, a 429 page
    with Retry-After (nothing done)."""

    def decorate(view: View) -> View:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            wait = wait_seconds(request, scope) if request.method in methods else None
            if wait is None:
                return view(request, *args, **kwargs)
            page = render_to_string("429.html", {"retry_after": wait}, request=request)
            return HttpResponse(page, status=429, headers={"Retry-After": str(wait)})

        return wrapped

    return decorate
