"""The API's OpenAPI schema and a docs page that renders it server-side (works offline: no JS, no CDN)."""

from __future__ import annotations

import json
from typing import Any

from django.shortcuts import render
from rest_framework.schemas import get_schema_view
from rest_framework.schemas.openapi import SchemaGenerator

TITLE = "imgcap API"
VERSION = "1"
DESCRIPTION = (
    "Upload images, get captions. Authenticate with a token (`Authorization: Token <key>`, from "
    "`python manage.py drf_create_token USER`) or a browser session. Errors are "
    '`{"error": {"code": ..., "message": ...}}`.'
)

schema_view = get_schema_view(title=TITLE, version=VERSION, description=DESCRIPTION, public=True)

_METHODS = ("get", "post", "put", "patch", "delete")


def docs_view(request):
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
