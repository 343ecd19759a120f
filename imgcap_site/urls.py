"""Top-level routes: the REST API under /api/v1/, the HTML site, auth views and the admin."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from captions.api.views import MediaView

urlpatterns = [
    path("api/v1/", include("captions.api.urls")),
    # Uploaded images, only through this visibility check (never a bare static route).
    path("media/<path:name>", MediaView.as_view(), name="media"),
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("captions.urls")),
]
