"""Top-level routes: the REST API under /api/v1/, the HTML site, auth views and the admin.

Error pages answer the API's JSON error body under /api/ and Django's pages elsewhere.
"""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path

from captions.api.albums import SharedFileView, SharedThumbnailView, SharedZipView
from captions.api.error_views import api_not_found
from captions.api.views import MediaView, ThumbnailView
from captions.monitoring import metrics_view

urlpatterns = [
    path("api/v1/", include("captions.api.urls")),
    # Any other path under /api/: the API's JSON 404, also with DEBUG on (which skips handler404).
    re_path(r"^api(?:/|$)", api_not_found),
    # Uploaded images, only through this visibility check (never a bare static route).
    path("media/<path:name>", MediaView.as_view(), name="media"),
    # Small WebP copies for the gallery, made on first request, behind the same check.
    path("thumbs/<int:pk>/", ThumbnailView.as_view(), name="thumbnail"),
    # The images of an album shared by a link, for anyone holding it.
    path("shared/<str:token>/images/<int:pk>/file", SharedFileView.as_view(), name="shared-file"),
    path("shared/<str:token>/images/<int:pk>/thumb", SharedThumbnailView.as_view(), name="shared-thumbnail"),
    path("shared/<str:token>/download.zip", SharedZipView.as_view(), name="shared-zip"),
    # Prometheus scrapes this (docs/operations.md); the worker processes serve their own figures.
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("captions.urls")),
]

handler400 = "captions.api.error_views.handler400"
handler403 = "captions.api.error_views.handler403"
handler404 = "captions.api.error_views.handler404"
handler500 = "captions.api.error_views.handler500"
