"""/api/v1/… routes (namespace "api")."""

from django.urls import path

from captions.api import albums, bulk, views
from captions.api.docs import DocsView, SchemaView

app_name = "api"

urlpatterns = [
    path("images/", views.ImageListView.as_view(), name="image-list"),
    path("images/bulk/", bulk.ImageBulkView.as_view(), name="image-bulk"),
    path("images/download.zip", views.ImagesZipView.as_view(), name="image-zip"),
    path("images/<int:pk>/", views.ImageDetailView.as_view(), name="image-detail"),
    path("images/<int:pk>/caption/", views.ImageCaptionView.as_view(), name="image-caption"),
    path("images/<int:pk>/recaption/", views.ImageRecaptionView.as_view(), name="image-recaption"),
    path("images/<int:pk>/retry/", views.ImageRetryView.as_view(), name="image-retry"),
    path("images/<int:pk>/attention/", views.ImageAttentionView.as_view(), name="image-attention"),
    path("images/<int:pk>/similar/", views.ImageSimilarView.as_view(), name="image-similar"),
    path("images/<int:pk>/download/", views.ImageDownloadView.as_view(), name="image-download"),
    path("batches/", views.BatchListView.as_view(), name="batch-list"),
    path("batches/<int:pk>/", views.BatchDetailView.as_view(), name="batch-detail"),
    path("albums/", albums.AlbumListView.as_view(), name="album-list"),
    path("albums/<int:pk>/", albums.AlbumDetailView.as_view(), name="album-detail"),
    path("albums/<int:pk>/images/", albums.AlbumImagesView.as_view(), name="album-images"),
    path("albums/<int:pk>/share/", albums.AlbumShareView.as_view(), name="album-share"),
    path("shared/<str:token>/", albums.SharedAlbumView.as_view(), name="shared-album"),
    path("shared/<str:token>/images/", albums.SharedAlbumImagesView.as_view(), name="shared-album-images"),
    path("search/", views.SearchView.as_view(), name="search"),
    path("export.csv", views.ExportView.as_view(fmt="csv"), name="export-csv"),
    path("export.jsonl", views.ExportView.as_view(fmt="jsonl"), name="export-jsonl"),
    path("webhooks/", views.WebhookListView.as_view(), name="webhook-list"),
    path("webhooks/<int:pk>/", views.WebhookDetailView.as_view(), name="webhook-detail"),
    path(
        "webhooks/<int:pk>/rotate-secret/",
        views.WebhookRotateSecretView.as_view(),
        name="webhook-rotate-secret",
    ),
    path("webhooks/<int:pk>/test/", views.WebhookTestView.as_view(), name="webhook-test"),
    path("webhooks/<int:pk>/deliveries/", views.WebhookDeliveryListView.as_view(), name="webhook-deliveries"),
    path("models/", views.ModelVersionListView.as_view(), name="model-list"),
    path("health/", views.HealthView.as_view(), name="health"),
    path("schema/", SchemaView.as_view(), name="schema"),
    path("docs/", DocsView.as_view(url_name="api:schema"), name="docs"),
]
