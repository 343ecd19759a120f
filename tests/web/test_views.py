"""The plain HTML site, the media view, and the API schema + docs pages."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from captions.models import Batch, Caption, Image

pytestmark = pytest.mark.django_db


def test_gallery_shows_own_and_public_images(
    client, user, other_user, make_image, model_version, save_captions
):
    mine = make_image(user)
    public = make_image(other_user, "public")
    hidden = make_image(other_user)
    save_captions(public, model_version, ["a surfer rides a wave"])

    anonymous = client.get("/").content.decode()
    assert f"/images/{public.pk}/" in anonymous and "A surfer rides a wave." in anonymous
    assert f"/images/{mine.pk}/" not in anonymous

    client.force_login(user)
    page = client.get("/").content.decode()
    assert f"/images/{mine.pk}/" in page and f"/images/{public.pk}/" in page
    assert f"/images/{hidden.pk}/" not in page
    only_done = client.get("/", {"status": "done"}).content.decode()
    assert f"/images/{public.pk}/" in only_done and f"/images/{mine.pk}/" not in only_done
    assert client.get("/", {"status": "bogus"}).status_code == 200


def test_gallery_pages(client, user, make_image):
    for _ in range(26):
        make_image(user, "public")
    first = client.get("/").content.decode()
    assert "page 1 of 2" in first
    assert client.get("/", {"page": 2}).content.decode().count('class="card"') == 2


def test_upload_form_takes_many_files(alice, photo, queued_ids, django_capture_on_commit_callbacks):
    form = alice.get("/upload/").content.decode()
    assert 'type="file" name="images"' in form and "multiple" in form
    files = [SimpleUploadedFile(f"{i}.jpg", photo(), "image/jpeg") for i in range(3)]
    files.append(SimpleUploadedFile("bad.jpg", b"", "image/jpeg"))
    with django_capture_on_commit_callbacks(execute=True):
        response = alice.post("/upload/", {"images": files, "visibility": "public"})
    batch = Batch.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/batches/{batch.pk}/"
    assert Image.objects.filter(visibility="public").count() == 3
    assert len(queued_ids()) == 3
    page = alice.get(response["Location"]).content.decode()
    assert '<strong data-count="pending">3</strong>' in page and "bad.jpg" in page


def test_upload_form_errors_store_nothing(alice):
    response = alice.post("/upload/", {"images": [SimpleUploadedFile("x.jpg", b"text " * 40)]})
    assert response.status_code >= 400
    assert "x.jpg" in response.content.decode()
    assert alice.post("/upload/", {}).status_code == 400
    assert Image.objects.count() == 0


def test_upload_needs_login(client):
    response = client.get("/upload/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_image_page_and_its_forms(alice, user, make_image, model_version, save_captions, media_root):
    image = make_image(user)
    save_captions(image, model_version, ["a dog runs", "a dog is running"])
    page = alice.get(f"/images/{image.pk}/").content.decode()
    assert "A dog runs." in page and "A dog is running." in page
    assert f"/media/{image.file.name}" in page
    assert "Save caption" in page and "Delete this image" in page

    alice.post(f"/images/{image.pk}/caption/", {"caption": "Rex on the run"})
    assert Caption.objects.filter(image=image, source="human").get().text == "Rex on the run"
    assert "<h1>Rex on the run.</h1>" in alice.get(f"/images/{image.pk}/").content.decode()

    alice.post(f"/images/{image.pk}/visibility/", {"visibility": "public"})
    assert Image.objects.get(pk=image.pk).visibility == "public"

    alice.post(f"/images/{image.pk}/recaption/")
    assert Image.objects.get(pk=image.pk).status == "pending"

    assert alice.get(f"/images/{image.pk}/delete/").status_code == 200
    response = alice.post(f"/images/{image.pk}/delete/")
    assert response.status_code == 302
    assert not Image.objects.filter(pk=image.pk).exists()


def test_private_images_and_files_are_404_for_others(client, user, other_user, make_image, media_root):
    image = make_image(user)
    for who in (None, other_user):
        if who is not None:
            client.force_login(who)
        assert client.get(f"/images/{image.pk}/").status_code == 404
        assert client.get(f"/media/{image.file.name}").status_code == 404
        assert client.post(f"/images/{image.pk}/caption/", {"caption": "x"}).status_code in (302, 404)
    assert client.post(f"/images/{image.pk}/delete/").status_code == 404
    assert Image.objects.filter(pk=image.pk).exists() and not Caption.objects.exists()
    client.force_login(user)
    assert client.get(f"/media/{image.file.name}").status_code == 200
    assert client.get("/media/images/00/nothing.jpg").status_code == 404
    assert client.get("/media/../settings.py").status_code == 404


def test_others_cannot_change_a_public_image(client, user, other_user, make_image):
    image = make_image(user, "public")
    client.force_login(other_user)
    page = client.get(f"/images/{image.pk}/").content.decode()
    assert "Save caption" not in page
    assert client.post(f"/images/{image.pk}/caption/", {"caption": "mine"}).status_code == 403
    assert client.post(f"/images/{image.pk}/delete/").status_code == 403


def test_batch_pages_are_private(client, user, other_user, photo, media_root):
    from captions.services.intake import IncomingFile, create_batch

    batch = create_batch(owner=user, files=[IncomingFile("a.jpg", photo())]).batch
    client.force_login(other_user)
    assert client.get(f"/batches/{batch.pk}/").status_code == 404
    client.force_login(user)
    assert f"/batches/{batch.pk}/" in client.get("/batches/").content.decode()


def test_login_and_logout(client, user):
    assert client.get("/accounts/login/").status_code == 200
    response = client.post("/accounts/login/", {"username": "alice", "password": "alice-password"})
    assert response.status_code == 302
    assert "alice" in client.get("/").content.decode()
    client.post("/accounts/logout/")
    assert "Sign in" in client.get("/").content.decode()


def test_openapi_schema_and_offline_docs(client):
    schema = client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for path in (
        "/api/v1/images/",
        "/api/v1/images/{id}/",
        "/api/v1/images/{id}/recaption/",
        "/api/v1/images/{id}/caption/",
        "/api/v1/batches/",
        "/api/v1/batches/{id}/",
        "/api/v1/search/",
        "/api/v1/export.csv",
        "/api/v1/export.jsonl",
    ):
        assert path in paths, path
    assert "post" in paths["/api/v1/images/"] and "patch" in paths["/api/v1/images/{id}/"]
    assert list(paths["/api/v1/images/{id}/caption/"]) == ["delete"]
    listed = {p["name"] for p in paths["/api/v1/images/"]["get"]["parameters"]}
    assert {"needs_review", "album", "sort"} <= listed
    # The photo library's endpoints, with their methods.
    assert set(paths["/api/v1/albums/"]) == {"get", "post"}
    assert set(paths["/api/v1/albums/{id}/"]) == {"get", "patch", "delete"}
    assert set(paths["/api/v1/albums/{id}/images/"]) == {"post"}
    assert set(paths["/api/v1/albums/{id}/share/"]) == {"post", "delete"}
    assert "get" in paths["/api/v1/shared/{token}/images/"]
    assert set(paths["/api/v1/images/bulk/"]) == {"post"}
    assert "application/zip" in paths["/api/v1/images/download.zip"]["get"]["responses"]["200"]["content"]
    assert {"get", "patch", "delete"} <= set(paths["/api/v1/batches/{id}/"])

    batch = paths["/api/v1/batches/"]["post"]
    assert {"name": "Idempotency-Key", "in": "header"}.items() <= batch["parameters"][0].items()

    # Swagger UI and Redoc render that schema from files this server has (drf-spectacular-sidecar):
    # no CDN, so the docs work offline.
    docs = client.get("/api/v1/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in html
    assert "cdn" not in html.lower() and "https://" not in html
    # Its start-up script is a file of its own (the site's Content-Security-Policy allows no inline one).
    script = client.get("/api/v1/docs/?script=").content.decode()
    assert "/api/v1/schema/" in script and "https://" not in script
