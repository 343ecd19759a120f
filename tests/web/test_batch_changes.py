"""A batch after it came in: named, renamed, deleted with or without its images (API and pages)."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from captions.models import Batch, Image
from captions.services import albums

pytestmark = pytest.mark.django_db


def new_batch(api, photo, count: int = 2) -> dict:
    files = [SimpleUploadedFile(f"{i}.jpg", photo()) for i in range(count)]
    response = api.post("/api/v1/batches/", {"images": files})
    assert response.status_code == 202
    return response.json()


def test_a_batch_is_named_and_deleted_keeping_its_images_or_not(api, other_api, user, photo):
    batch = new_batch(api, photo)
    assert batch["name"] == ""
    named = api.patch(batch["urls"]["self"], {"name": "  Lisbon,   day 2 "}, format="json")
    assert named.status_code == 200 and named.json()["name"] == "Lisbon, day 2"
    assert api.get("/api/v1/batches/").json()["results"][0]["name"] == "Lisbon, day 2"
    too_long = api.patch(batch["urls"]["self"], {"name": "x" * 201}, format="json")
    assert too_long.status_code == 400 and too_long.json()["error"]["code"] == "batch_name_too_long"
    assert other_api.patch(batch["urls"]["self"], {"name": "mine"}, format="json").status_code == 404
    assert other_api.delete(batch["urls"]["self"]).status_code == 404
    assert api.delete(batch["urls"]["self"] + "?with_images=maybe").status_code == 400

    kept = [item["id"] for item in batch["items"]]
    assert api.delete(batch["urls"]["self"]).status_code == 204
    assert not Batch.objects.filter(pk=batch["id"]).exists()
    assert Image.objects.filter(pk__in=kept).count() == 2

    second = new_batch(api, photo)
    album = albums.create_album(owner=user, name="A")
    albums.change_images(album=album, add=[item["id"] for item in second["items"]])
    assert api.delete(second["urls"]["self"] + "?with_images=true").status_code == 204
    assert not Image.objects.filter(pk__in=[item["id"] for item in second["items"]]).exists()
    assert Image.objects.filter(pk__in=kept).count() == 2  # the first batch's images are not touched
    assert album.items.count() == 0


def test_a_batch_fetching_urls_cannot_be_deleted_yet(api, user, photo):
    batch = Batch.objects.create(
        owner=user, urls_waiting=[{"url": "https://example.org/a.jpg", "position": 0}]
    )
    refused = api.delete(f"/api/v1/batches/{batch.pk}/")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "batch_fetching"
    assert Batch.objects.filter(pk=batch.pk).exists()


def test_the_batch_pages_rename_and_delete(alice, user, api, photo):
    batch = new_batch(api, photo)
    page = alice.get(f"/batches/{batch['id']}/").content.decode()
    assert f"Batch #{batch['id']}" in page and "Rename" in page
    alice.post(f"/batches/{batch['id']}/rename/", {"name": "Garden party"})
    assert "Garden party" in alice.get("/batches/").content.decode()
    confirm = alice.get(f"/batches/{batch['id']}/delete/").content.decode()
    assert "Delete the batch, keep its photos" in confirm and "its 2 photos" in confirm
    done = alice.post(f"/batches/{batch['id']}/delete/", {"with_images": "1"}, follow=True).content.decode()
    assert "Garden party and its 2 photos deleted" in done
    assert not Image.objects.filter(owner=user).exists()
