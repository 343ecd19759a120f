"""/api/v1/… routes (namespace "api")."""

from django.urls import path

from captions.api import views
from captions.api.docs import docs_view, schema_view
from captions.api.schema import ApiSchema

app_name = "api"

urlpatterns = [
    path("images/", views.ImageListView.as_view(), name="image-list"),
    path("images/<int:pk>/", views.ImageDetailView.as_view(), name="image-detail"),
    path(
        "images/<int:pk>/recaption/",
        views.ImageRecaptionView.as_view(
            schema=ApiSchema(operation_id_base="ImageRecaption", tags=["images"])
        ),
        name="image-recaption",
    ),
    path(
        "images/<int:pk>/retry/",
        views.ImageRetryView.as_view(schema=ApiSchema(operation_id_base="ImageRetry", tags=["images"])),
        name="image-retry",
    ),
    path(
        "images/<int:pk>/attention/",
        views.ImageAttentionView.as_view(
            schema=ApiSchema(operation_id_base="ImageAttention", tags=["images"])
        ),
        name="image-attention",
    ),
    path("batches/", views.BatchListView.as_view(), name="batch-list"),
    path("batches/<int:pk>/", views.BatchDetailView.as_view(), name="batch-detail"),
    path("search/", views.SearchView.as_view(), name="search"),
    path(
        "export.csv",
        views.ExportView.as_view(
            fmt="csv", schema=ApiSchema(operation_id_base="CaptionsCsv", tags=["export"])
        ),
        name="export-csv",
    ),
    path(
        "export.jsonl",
        views.ExportView.as_view(
            fmt="jsonl", schema=ApiSchema(operation_id_base="CaptionsJsonl", tags=["export"])
        ),
        name="export-jsonl",
    ),
    path("models/", views.ModelVersionListView.as_view(), name="model-list"),
    path(
        "health/",
        views.HealthView.as_view(schema=ApiSchema(operation_id_base="Health", tags=["health"])),
        name="health",
    ),
    path("schema/", schema_view, name="schema"),
    path("docs/", docs_view, name="docs"),
]
