"""One error shape for every 4xx of the API: {"error": {"code": ..., "message": ...}} (plus details).

Input refused by captions.ingest / captions.services (RejectedInput) keeps its own code and status.
What no DRF view answers (unknown paths under /api/, 500s) gets the same shape from error_views.py.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import (
    PermissionDenied,
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from captions.ingest import RejectedInput


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, RejectedInput):
        body: dict[str, Any] = {"code": exc.code, "message": exc.message}
        rejected = getattr(exc, "rejected", None)
        if rejected:
            body["rejected"] = [r.as_dict() for r in rejected]
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return Response({"error": body}, status=exc.status, headers=headers)

    if isinstance(exc, SuspiciousOperation):
        # Django's own request limits (DATA_UPLOAD_MAX_*), raised while DRF parses the body.
        return Response({"error": _request_limit(exc)}, status=_request_limit_status(exc))

    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()

    response = exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    detail = exc.detail
    body = {"code": _code(exc, detail), "message": _message(detail)}
    if isinstance(exc, exceptions.ValidationError) and isinstance(detail, dict | list):
        body["fields"] = detail
    response.data = {"error": body}
    return response


def _code(exc: exceptions.APIException, detail: Any) -> str:
    if isinstance(exc, exceptions.ValidationError):
        return "invalid"
    if isinstance(exc, exceptions.NotFound):
        return "not_found"
    if exc.status_code == status.HTTP_401_UNAUTHORIZED:
        return "not_authenticated"
    return getattr(detail, "code", None) or exc.default_code


def _message(detail: Any) -> str:
    """The first human sentence in DRF's detail (a string, a list, or a dict of field errors)."""
    if isinstance(detail, dict):
        for field, value in detail.items():
            inner = _message(value)
            return inner if field in ("non_field_errors", "detail") else f"{field}: {inner}"
        return "invalid request"
    if isinstance(detail, list):
        return _message(detail[0]) if detail else "invalid request"
    return str(detail)


def _request_limit(exc: SuspiciousOperation) -> dict[str, str]:
    if isinstance(exc, TooManyFilesSent):
        return {"code": "too_many_files", "message": "the request holds more files than a batch may"}
    if isinstance(exc, TooManyFieldsSent):
        return {"code": "too_many_fields", "message": "the request holds too many form fields"}
    if isinstance(exc, RequestDataTooBig):
        return {"code": "request_too_large", "message": "the request body is too large"}
    return {"code": "bad_request", "message": "the request could not be read"}


def _request_limit_status(exc: SuspiciousOperation) -> int:
    if isinstance(exc, TooManyFilesSent | RequestDataTooBig):
        return status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    return status.HTTP_400_BAD_REQUEST
