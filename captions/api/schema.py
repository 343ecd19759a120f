"""OpenAPI generation: DRF's AutoSchema plus the query parameters each view declares."""

from __future__ import annotations

from typing import Any

from rest_framework.schemas.openapi import AutoSchema


class ApiSchema(AutoSchema):
    """Views list their GET query parameters as `query_parameters = [(name, description, required), ...]`
    and the request headers of their POST as `post_headers = [(name, description), ...]`."""

    def get_filter_parameters(self, path: str, method: str) -> list[dict[str, Any]]:
        if method == "POST":
            return [
                {
                    "name": name,
                    "in": "header",
                    "required": False,
                    "description": text,
                    "schema": {"type": "string"},
                }
                for name, text in getattr(self.view, "post_headers", ())
            ]
        if method != "GET":
            return []
        return [
            {
                "name": name,
                "in": "query",
                "required": required,
                "description": text,
                "schema": {"type": "string"},
            }
            for name, text, required in getattr(self.view, "query_parameters", ())
        ]
