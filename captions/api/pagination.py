"""Page-number pagination for every list: `?page=N&page_size=M` (at most 200 per page)."""

from rest_framework.pagination import PageNumberPagination


class PagePagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 200
