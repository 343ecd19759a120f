"""The API's OpenAPI schema and a docs page that renders it server-side (works offline: no JS, no CDN)."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from rest_framework.schemas import get_schema_view
from rest_framework.schemas.openapi import SchemaGenerator

from captions.api.error_views import method_not_allowed

TITLE = "imgcap API"
VERSION = "1"
DESCRIPTION = (
    "Upload images, get captions. Authenticate with a token (`Authorization: Token <key>`, from "
    "`python manage.py drf_create_token USER`) or a browser session. Errors are "
    '`{"error": {"code": ..., "message": ...}}`.'
)

schema_view = get_schema_view(title=TITLE, version=VERSION, description=DESCRIPTION, public=True)

_METHODS = ("get", "post", "put", "patch", "delete")


@csrf_exempt  # read-only; other methods get the API's 405 below, not the CSRF check's HTML page
def docs_view(request: HttpRequest) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        return method_not_allowed(request, ["GET", "HEAD"])
    schema = SchemaGenerator(title=TITLE, version=VERSION, description=DESCRIPTION).get_schema(
        request=request, public=True
    )
    operations = []
    for path, item in (schema or {}).get("paths", {}).items():
        for method in _METHODS:
            if method in item:
                operations.append(_operation(path, method, item[method]))
    context = {"title": TITLE, "description": DESCRIPTION, "operations": operations}
    return render(request, "captions/api_docs.html", context)


def _operation(path: str, method: str, op: dict[str, Any]) -> dict[str, Any]:
    body = op.get("requestBody", {}).get("content", {})
    responses = {
        code: json.dumps(_first_schema(resp.get("content", {})), indent=2)
        for code, resp in op.get("responses", {}).items()
    }
    return {
        "path": path,
        "method": method.upper(),
        "id": op.get("operationId", ""),
        "description": op.get("description", ""),
        "parameters": op.get("parameters", []),
        "body_types": list(body),
        "body": json.dumps(_first_schema(body), indent=2) if body else "",
        "responses": responses,
    }


def _first_schema(content: dict[str, Any]) -> Any:
    for media in content.values():
        return media.get("schema", {})
    return {}
