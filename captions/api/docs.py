"""The API's OpenAPI schema and its Swagger UI page: drf-spectacular's views, with the Swagger UI
files from drf-spectacular-sidecar (served by this server: the docs work offline). A wrong method
gets the API's JSON 405, not the docs page's HTML."""

from __future__ import annotations

from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from captions.api.error_views import method_not_allowed


class SchemaView(SpectacularAPIView):
    def http_method_not_allowed(self, request, *args, **kwargs):
        return method_not_allowed(request, self.allowed_methods)


class DocsView(SpectacularSwaggerSplitView):
    # The split view serves Swagger UI's start-up script as a file: no inline script (the site's CSP).
    def http_method_not_allowed(self, request, *args, **kwargs):
        return method_not_allowed(request, self.allowed_methods)
