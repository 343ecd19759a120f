"""The HTML site (namespace "captions")."""

from django.urls import path

from captions import views

app_name = "captions"

urlpatterns = [
    path("", views.gallery, name="gallery"),
    path("upload/", views.upload, name="upload"),
    path("images/<int:pk>/", views.image_page, name="image"),
    path("images/<int:pk>/caption/", views.image_caption, name="image-caption"),
    path("images/<int:pk>/caption/remove/", views.image_caption_remove, name="image-caption-remove"),
    path("images/<int:pk>/recaption/", views.image_recaption, name="image-recaption"),
    path("images/<int:pk>/visibility/", views.image_visibility, name="image-visibility"),
    path("images/<int:pk>/location/", views.image_location, name="image-location"),
    path("images/<int:pk>/delete/", views.image_delete, name="image-delete"),
    path("search/", views.search, name="search"),
    path("batches/", views.batch_list, name="batches"),
    path("batches/<int:pk>/", views.batch_page, name="batch"),
    path("account/token/", views.api_token, name="token"),
    path("api-guide/", views.api_guide, name="api-guide"),
]
