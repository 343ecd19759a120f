"""/api/v1/export.csv and .jsonl: streamed, filterable, absolute image URLs, only visible images."""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.http import StreamingHttpResponse
from django.utils import timezone

from captions.models import ModelVersion
from captions.services.images import add_human_caption
from captions.services.intake import IncomingFile, create_batch
from captions.services.model_versions import ensure_model_version

pytestmark = pytest.mark.django_db


@pytest.fixture
def library(user, other_user, make_image, photo, model_version, save_captions):
    """alice: a batch of two captioned images (one with a human caption too); bob: public + private."""
    batch = create_batch(
        owner=user,
        files=[IncomingFile("beach.jpg", photo()), IncomingFile("park.jpg", photo())],
    ).batch
    beach, park = (item.image for item in batch.items.order_by("position"))
    save_captions(beach, model_version, ["a dog runs on the beach", "a dog on sand"], [-0.25, -0.5])
    save_captions(park, model_version, ["children play in a park"], [-0.4])
    add_human_caption(image=park, text="kids at the park, with a red ball", author=user)
    older = ensure_model_version(name="imgcap-older", encoder="inception_v3", metrics={})
    save_captions(park, older, ["people on grass"], [-0.9])
    bob_public = make_image(other_user, "public")
    save_captions(bob_public, model_version, ["a cat on a sofa"], [-0.3])
    bob_private = make_image(other_user, "private")
    save_captions(bob_private, model_version, ["a secret cat"], [-0.3])
    return {"batch": batch, "beach": beach, "park": park, "bob_public": bob_public, "version": model_version}


def csv_rows(response) -> list[dict]:
    assert isinstance(response, StreamingHttpResponse)
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


def jsonl_rows(response) -> list[dict]:
    assert isinstance(response, StreamingHttpResponse)
    lines = b"".join(response.streaming_content).decode().splitlines()
    return [json.loads(line) for line in lines]


def test_csv_has_every_visible_caption_with_absolute_urls(api, library):
    response = api.get("/api/v1/export.csv", {"captions": "all"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert f'filename="imgcap-{timezone.localdate().isoformat()}.csv"' in response["Content-Disposition"]
    rows = csv_rows(response)
    assert list(rows[0])[:5] == ["image_url", "caption", "score", "model_version", "source"]
    captions = {r["caption"] for r in rows}
    assert captions == {
        "a dog runs on the beach",
        "a dog on sand",
        "children play in a park",
        "kids at the park, with a red ball",
        "people on grass",
        "a cat on a sofa",
    }
    beach = next(r for r in rows if r["caption"] == "a dog runs on the beach")
    assert float(beach["score"]) == pytest.approx(-0.25)
    assert beach["model_version"] == library["version"].name
    assert beach["source"] == "model" and beach["rank"] == "0"
    assert beach["image_url"] == f"http://testserver/media/{library['beach'].file.name}"
    human = next(r for r in rows if r["source"] == "human")
    assert human["score"] == "" and human["model_version"] == ""
    # The URL is the real, visibility-checked media URL.
    assert api.get(beach["image_url"]).status_code == 200


def test_jsonl_has_the_same_rows(api, library):
    response = api.get("/api/v1/export.jsonl", {"captions": "all"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/x-ndjson")
    rows = jsonl_rows(response)
    assert len(rows) == 6
    human = next(r for r in rows if r["source"] == "human")
    assert human["score"] is None and human["model_version"] is None
    assert {r["image_id"] for r in rows} == {
        library["beach"].pk,
        library["park"].pk,
        library["bob_public"].pk,
    }


def test_filters(api, anon_api, library):
    def captions(**params) -> set[str]:
        params = {"captions": "all", **params}
        return {r["caption"] for r in jsonl_rows(api.get("/api/v1/export.jsonl", params))}

    assert captions(source="human") == {"kids at the park, with a red ball"}
    assert captions(model="imgcap-older") == {"people on grass"}
    assert captions(batch=library["batch"].pk, source="model", model=library["version"].name) == {
        "a dog runs on the beach",
        "a dog on sand",
        "children play in a park",
    }
    assert captions(q="dogs running") == {"a dog runs on the beach"}
    assert captions(owner="me", q="cat") == set()
    assert captions(q="cat") == {"a cat on a sofa"}
    assert captions(status="pending") == set()
    anon = {r["caption"] for r in csv_rows(anon_api.get("/api/v1/export.csv", {"captions": "all"}))}
    assert anon == {"a cat on a sofa"}


def test_by_default_one_row_per_image_the_caption_the_site_shows(
    api, user, library, make_image, save_captions
):
    response = api.get("/api/v1/export.csv", {"batch": library["batch"].pk})
    batch = library["batch"].pk
    day = timezone.localdate().isoformat()
    assert f'filename="imgcap-batch-{batch}-{day}.csv"' in response["Content-Disposition"]
    rows = csv_rows(response)
    # The human caption beats the model's; rank 0 of the model's list otherwise.
    assert [(r["original_name"], r["caption"]) for r in rows] == [
        ("beach.jpg", "a dog runs on the beach"),
        ("park.jpg", "kids at the park, with a red ball"),
    ]
    assert rows[0]["rank"] == "0" and rows[0]["source"] == "model"
    # What the export shows is what the API shows, for every visible image.
    shown = {r["image_id"]: r["caption"] for r in jsonl_rows(api.get("/api/v1/export.jsonl"))}
    for image_id, caption in shown.items():
        assert api.get(f"/api/v1/images/{image_id}/").json()["caption"]["text"] == caption
    assert len(shown) == 3  # alice's two and bob's public one
    assert 'filename="imgcap-mine-' in api.get("/api/v1/export.csv", {"owner": "me"})["Content-Disposition"]


def test_the_shown_caption_is_the_active_models_else_the_newest_runs(api, user, make_image, save_captions):
    image = make_image(user)
    first = ensure_model_version(name="imgcap-first", encoder="efficientnet_lite0", metrics={})
    second = ensure_model_version(name="imgcap-second", encoder="efficientnet_lite0", metrics={})
    save_captions(image, first, ["a dog on grass", "a dog"], [-0.2, -0.6])
    save_captions(image, second, ["a brown dog runs", "a dog runs"], [-0.3, -0.5])

    def shown() -> list[str]:
        return [r["caption"] for r in jsonl_rows(api.get("/api/v1/export.jsonl", {"owner": "me"}))]

    def api_shows() -> list[str]:
        return [api.get(f"/api/v1/images/{image.pk}/").json()["caption"]["text"]]

    assert first.active and shown() == ["a dog on grass"] == api_shows()  # the active version's rank 0
    ModelVersion.objects.update(active=False)
    assert shown() == ["a brown dog runs"] == api_shows()  # no active version: the newest run's
    assert len(jsonl_rows(api.get("/api/v1/export.jsonl", {"owner": "me", "captions": "all"}))) == 4


def test_bad_filters_are_400_before_streaming(api, library):
    for params in ({"source": "robot"}, {"status": "sleepy"}, {"batch": "abc"}):
        response = api.get("/api/v1/export.csv", params, HTTP_ACCEPT="text/csv")
        assert response.status_code == 400, params
        assert response.json()["error"]["code"] == "bad_filter"


def test_export_is_streamed_from_a_database_iterator(user, library):
    from captions.exports import export_rows

    rows = export_rows(user, every_caption=True, chunk_size=2)
    first = next(rows)
    assert first.caption
    assert len([first, *rows]) == 6


def test_csv_cells_that_would_run_as_formulas_stay_text(api, user, make_image, model_version, save_captions):
    # OWASP's CSV injection: what people typed (a caption, a file name) must not run in a spreadsheet.
    image = make_image(user, name="=HYPERLINK(evil).jpg")
    save_captions(image, model_version, ["-2+3 dogs"])
    add_human_caption(image=image, text="@SUM(A1:A9) on a beach", author=user)
    rows = csv_rows(api.get("/api/v1/export.csv", {"owner": "me", "captions": "all"}))
    assert {r["caption"] for r in rows} == {"'-2+3 dogs", "'@SUM(A1:A9) on a beach"}
    assert {r["original_name"] for r in rows} == {"'=HYPERLINK(evil).jpg"}
    assert all(not r["score"].startswith("'") for r in rows)  # numbers are written as they are
    every = {"owner": "me", "captions": "all"}
    jsonl = {r["caption"] for r in jsonl_rows(api.get("/api/v1/export.jsonl", every))}
    assert jsonl == {"-2+3 dogs", "@SUM(A1:A9) on a beach"}  # JSON is data, not a sheet: unchanged


def test_an_albums_export_holds_its_images_and_is_named_after_it(api, other_api, user, library):
    from captions.services import albums

    album = albums.create_album(owner=user, name="Crète 2026!")
    albums.add_images(album=album, images=[library["beach"]])
    response = api.get("/api/v1/export.csv", {"album": album.pk})
    day = timezone.localdate().isoformat()
    assert f'filename="imgcap-album-crete-2026-{day}.csv"' in response["Content-Disposition"]
    assert [r["caption"] for r in csv_rows(response)] == ["a dog runs on the beach"]
    refused = other_api.get("/api/v1/export.csv", {"album": album.pk})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "unknown_album"


def test_the_date_taken_on_the_cameras_clock_and_the_camera_are_exported(api, library, settings):
    import datetime

    from captions.models import Image

    settings.TIME_ZONE = "America/New_York"  # not the camera's: the export keeps the camera's clock
    taken = datetime.datetime(2023, 5, 1, 8, 11, 12, tzinfo=datetime.UTC)  # 10:11:12 in Paris (+02:00)
    Image.objects.filter(pk=library["beach"].pk).update(
        taken_at=taken, taken_offset=120, camera="Apple iPhone 13"
    )
    Image.objects.filter(pk=library["park"].pk).update(taken_at=taken, taken_offset=None)  # no offset written
    rows = {r["image_id"]: r for r in csv_rows(api.get("/api/v1/export.csv"))}
    beach, park = rows[str(library["beach"].pk)], rows[str(library["park"].pk)]
    assert beach["taken_at"] == "2023-05-01T10:11:12+02:00" and beach["camera"] == "Apple iPhone 13"
    assert park["taken_at"] == "2023-05-01T08:11:12Z" and park["camera"] == ""
    assert rows[str(library["bob_public"].pk)]["taken_at"] == ""
    lines = {r["image_id"]: r for r in jsonl_rows(api.get("/api/v1/export.jsonl"))}
    assert lines[library["beach"].pk]["taken_at"] == "2023-05-01T10:11:12+02:00"
    assert lines[library["bob_public"].pk]["taken_at"] is None
