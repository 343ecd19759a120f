"""What drf-spectacular cannot see in the views, added to the OpenAPI schema after it is generated
(SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"]): the error answers every operation can give, in the
one error shape, and the real content types of the exports and downloads.
"""

from __future__ import annotations

from typing import Any

from captions import downloads
from captions.exports import CONTENT_TYPES

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "example": "not_found"},
                "message": {"type": "string"},
                "fields": {"type": "object", "description": "per-field messages of a 400 `invalid`"},
                "rejected": {
                    "type": "array",
                    "description": "a batch's refused items, one per item",
                    "items": {"type": "object"},
                },
            },
        }
    },
}

# Any operation: bad parameters, not signed in, not allowed, unknown id, no JSON wanted, rate or
# queue limits, the database away. Writes add what their bodies can break.
_ALWAYS = {
    "400": "bad parameters or body",
    "401": "no or bad token",
    "403": "not allowed (someone else's image), or a quota",
    "404": "no such thing, or not yours to see",
    "406": "an Accept header this API cannot answer",
    "429": "over a request rate or the queue quota (Retry-After)",
    "503": "the database is away (Retry-After); nothing was stored",
}
_WRITES = {
    "409": "not in a state that allows it",
    "413": "too large (file, batch or request)",
    "415": "not a format we read",
    "422": "a file we could not use",
}


def document_errors(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    components = result.setdefault("components", {}).setdefault("schemas", {})
    components["Error"] = ERROR_SCHEMA
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            codes = {**_ALWAYS, **(_WRITES if method in ("post", "patch", "put", "delete") else {})}
            for code, description in codes.items():
                responses.setdefault(code, {"description": description, "content": error})
            for fmt, content_type in CONTENT_TYPES.items():
                if path.endswith(f"/export.{fmt}") and "200" in responses:
                    # Streamed rows, not JSON: one content type per export.
                    text = {"type": "string"}
                    responses["200"]["content"] = {content_type.split(";")[0]: {"schema": text}}
            if path.endswith("/download.zip") and "200" in responses:
                responses["200"]["content"] = {
                    "application/zip": {"schema": {"type": "string", "format": "binary"}}
                }
            if path.endswith("/download/") and "200" in responses:
                # The image's own type (or an XMP sidecar's), not JSON.
                binary = {"schema": {"type": "string", "format": "binary"}}
                responses["200"]["content"] = dict.fromkeys(downloads.CONTENT_TYPES, binary)
                responses["200"]["headers"] = {
                    "X-Caption-Sidecar": {
                        "description": "where the caption is as an .xmp sidecar, when the format cannot "
                        "hold it (HEIC, GIF, BMP)",
                        "schema": {"type": "string", "format": "uri"},
                    }
                }
    return result
