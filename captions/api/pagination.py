"""Page-number pagination for every list: `?page=N&page_size=M` (at most 200 per page; search: 20 by
default, at most 100)."""

from __future__ import annotations

from typing import Any

from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response


class PagePagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 200


class SearchPagination(PagePagination):
    """20 hits a page (at most 100), `capped`: true when more captions match than a search ranks
    (captions/search/lexical.py), so that `count` is a lower bound ("1000+"), and `corrected`: the query
    searched for when q had typos."""

    page_size = 20
    max_page_size = 100

    def get_paginated_response(self, data: list[Any]) -> Response:
        response = super().get_paginated_response(data)
        results = self.page.paginator.object_list
        response.data["capped"] = bool(getattr(results, "capped", False))
        response.data["corrected"] = getattr(results, "corrected", None)
        return response

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        paginated = super().get_paginated_response_schema(schema)
        paginated["properties"]["capped"] = {
            "type": "boolean",
            "description": "More captions match than were ranked (the newest are); count is a lower bound.",
        }
        paginated["properties"]["corrected"] = {
            "type": "string",
            "nullable": True,
            "description": "What was searched for when words of q that no caption uses were corrected "
            '("dgo" -> "dog"), else null.',
        }
        return paginated
