"""The HTML site (namespace "captions")."""

from django.urls import path

from captions import album_views, views

app_name = "captions"

urlpatterns = [
    path("", views.gallery, name="gallery"),
    path("upload/", views.upload, name="upload"),
    path("images/bulk/", views.image_bulk, name="image-bulk"),
    path("images/<int:pk>/", views.image_page, name="image"),
    path("images/<int:pk>/caption/", views.image_caption, name="image-caption"),
    path("images/<int:pk>/caption/remove/", views.image_caption_remove, name="image-caption-remove"),
    path("images/<int:pk>/recaption/", views.image_recaption, name="image-recaption"),
    path("images/<int:pk>/visibility/", views.image_visibility, name="image-visibility"),
    path("images/<int:pk>/location/", views.image_location, name="image-location"),
    path("images/<int:pk>/delete/", views.image_delete, name="image-delete"),
    path("images/<int:pk>/albums/", album_views.image_albums, name="image-albums"),
    path("albums/", album_views.album_list, name="albums"),
    path("albums/<int:pk>/", album_views.album_page, name="album"),
    path("albums/<int:pk>/edit/", album_views.album_edit, name="album-edit"),
    path("albums/<int:pk>/share/", album_views.album_share, name="album-share"),
    path("albums/<int:pk>/delete/", album_views.album_delete, name="album-delete"),
    path(
        "albums/<int:pk>/images/<int:image_pk>/remove/",
        album_views.album_remove_image,
        name="album-remove-image",
    ),
    path("shared/<str:token>/", album_views.shared_album, name="shared-album"),
    path("search/", views.search, name="search"),
    path("batches/", views.batch_list, name="batches"),
    path("batches/<int:pk>/", views.batch_page, name="batch"),
    path("batches/<int:pk>/rename/", views.batch_rename, name="batch-rename"),
    path("batches/<int:pk>/delete/", views.batch_delete, name="batch-delete"),
    path("account/token/", views.api_token, name="token"),
    path("api-guide/", views.api_guide, name="api-guide"),
]
