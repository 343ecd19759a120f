"""The HTML pages of the web UI (without a browser) and the API reads they use: attention, token, guide."""

from __future__ import annotations

import re

import numpy as np
import pytest

from captions import queue
from captions.attention import decode_attention
from captions.models import Caption
from captions.services.images import add_human_caption
from captions.services.intake import IncomingFile, create_batch

pytestmark = pytest.mark.django_db


# --- attention -------------------------------------------------------------------------------------


def test_attention_of_the_best_model_caption_as_small_json(
    api, user, make_image, model_version, save_captions
):
    image = make_image(user)
    save_captions(image, model_version, ["a dog runs on grass", "a dog is running"])
    best = Caption.objects.get(image=image, rank=0)
    body = api.get(f"/api/v1/images/{image.pk}/attention/").json()
    assert body["image"] == image.pk and body["caption"]["id"] == best.pk
    assert body["caption"]["text"] == "a dog runs on grass" and body["caption"]["model"] == model_version.name
    assert body["words"] == ["a", "dog", "runs", "on", "grass"]
    assert body["grid"] == {"height": 4, "width": 4}
    stored = decode_attention(best.attention)
    assert len(body["maps"]) == 5 and all(len(m) == 16 and max(m) == 255 for m in body["maps"])
    for word_map, peak, expected in zip(body["maps"], body["peaks"], stored, strict=True):
        assert peak == pytest.approx(expected.max(), abs=1e-4)
        np.testing.assert_allclose(np.array(word_map) / 255 * peak, expected.ravel(), atol=peak / 200)

    other = Caption.objects.get(image=image, rank=1)
    chosen = api.get(f"/api/v1/images/{image.pk}/attention/", {"caption": other.pk}).json()
    assert chosen["caption"]["id"] == other.pk and chosen["words"] == ["a", "dog", "is", "running"]


def test_attention_errors_are_clear(api, other_api, user, make_image, model_version, save_captions):
    pending = make_image(user)
    response = api.get(f"/api/v1/images/{pending.pk}/attention/")
    assert response.status_code == 404 and response.json()["error"]["code"] == "no_attention"

    image = make_image(user)
    save_captions(image, model_version, ["a cat"])
    human = add_human_caption(image=image, text="Tom the cat")
    assert api.get(f"/api/v1/images/{image.pk}/attention/", {"caption": "x"}).status_code == 400
    response = api.get(f"/api/v1/images/{image.pk}/attention/", {"caption": human.pk})
    assert response.status_code == 404 and "no model caption" in response.json()["error"]["message"]
    # The best caption is now the human one; the attention shown is still the model's.
    assert api.get(f"/api/v1/images/{image.pk}/attention/").json()["words"] == ["a", "cat"]
    assert other_api.get(f"/api/v1/images/{image.pk}/attention/").status_code == 404


# --- gallery ---------------------------------------------------------------------------------------


def test_gallery_cards_show_thumbnails_with_the_caption_as_alt_text(
    alice, user, other_user, make_image, model_version, save_captions
):
    image = make_image(user)
    save_captions(image, model_version, ["a surfer rides a big wave"])
    page = alice.get("/").content.decode()
    assert f'src="/thumbs/{image.pk}/"' in page and f"/thumbs/{image.pk}/?size=640 2x" in page
    assert 'alt="A surfer rides a big wave."' in page  # shown as a sentence; stored as written
    assert "/static/captions/app.css" in page and "/static/captions/gallery.js" in page


def test_gallery_filters_mine_public_status_and_batch(alice, user, other_user, make_image, photo):
    mine = make_image(user)
    theirs = make_image(other_user, "public")
    batch = create_batch(owner=user, files=[IncomingFile("b.jpg", photo())]).batch
    in_batch = batch.items.get().image

    def shown(**params) -> set[int]:
        page = alice.get("/", params).content.decode()
        return {pk for pk in (mine.pk, theirs.pk, in_batch.pk) if f'data-image="{pk}"' in page}

    assert shown() == {mine.pk, theirs.pk, in_batch.pk}
    assert shown(show="mine") == {mine.pk, in_batch.pk}
    assert shown(show="public") == {theirs.pk}
    assert shown(batch=batch.pk) == {in_batch.pk}
    assert shown(status="done") == set()
    assert shown(status="bogus", show="nonsense") == {mine.pk, theirs.pk, in_batch.pk}  # bad values: ignored
    assert "No image matches these filters" in alice.get("/", {"status": "done"}).content.decode()
    assert f'<option value="{batch.pk}"' in alice.get("/").content.decode()


def test_low_confidence_captions_are_marked_and_filtered_as_needing_review(
    alice, user, make_image, model_version, save_captions
):
    unsure, sure, corrected = (make_image(user) for _ in range(3))
    for image, confidence in ((unsure, 0.1), (sure, 0.8), (corrected, 0.1)):
        save_captions(image, model_version, [f"a dog number {image.pk}"])
        Caption.objects.filter(image=image).update(confidence=confidence)
    add_human_caption(image=corrected, text="Rex")

    page = alice.get("/").content.decode()
    assert page.count(">needs review</span>") == 1
    assert f'data-image="{unsure.pk}" data-status="done" data-review' in page
    assert 'name="review"' in page and 'value="1"' in page
    review = alice.get("/", {"review": "1"}).content.decode()
    assert f'data-image="{unsure.pk}"' in review
    assert f'data-image="{sure.pk}"' not in review and f'data-image="{corrected.pk}"' not in review
    assert "checked" in re.search(r'<input[^>]*name="review"[^>]*>', review).group(0)

    assert 'id="needs-review"' in alice.get(f"/images/{unsure.pk}/").content.decode()
    assert 'id="needs-review"' not in alice.get(f"/images/{sure.pk}/").content.decode()
    assert 'id="needs-review"' not in alice.get(f"/images/{corrected.pk}/").content.decode()


def test_gallery_filters_fold_and_apply_without_a_button_when_scripts_run(alice):
    page = alice.get("/").content.decode()
    assert '<details class="filter-box" id="filter-box" open>' in page and "<summary>Filters" in page
    assert '<noscript><button type="submit">Filter</button></noscript>' in page  # for pages without JS
    assert "<summary>Filters (on)</summary>" in alice.get("/", {"status": "done"}).content.decode()


def test_upload_page_asks_who_can_see_them_before_the_drop_zone(alice):
    page = alice.get("/upload/").content.decode()
    assert page.index('id="visibility-field"') < page.index('id="dropzone"')
    assert 'id="choose-photos"' in page and "Drop photos here" in page  # CSS picks one by screen


def test_anonymous_gallery_offers_no_personal_filters(client, user, make_image):
    make_image(user, "public")
    page = client.get("/").content.decode()
    assert 'name="status"' in page and 'name="show"' not in page and 'name="batch"' not in page


# --- image page ------------------------------------------------------------------------------------


def test_image_page_shows_the_human_caption_and_keeps_the_models(
    alice, user, make_image, model_version, save_captions
):
    image = make_image(user)
    save_captions(image, model_version, ["a dog runs", "a dog is running"])
    page = alice.get(f"/images/{image.pk}/").content.decode()
    assert f'data-url="/api/v1/images/{image.pk}/attention/"' in page and 'id="play"' in page
    assert "Make public" in page and 'value="a dog runs"' in page  # the edit field starts from the caption

    alice.post(f"/images/{image.pk}/caption/", {"caption": "Rex chasing a ball"})
    page = alice.get(f"/images/{image.pk}/").content.decode()
    assert "<h1>Rex chasing a ball.</h1>" in page and 'source-human">human' in page
    assert 'id="model-caption"' in page and "A dog runs." in page  # the model's caption stays in view

    alice.post(f"/images/{image.pk}/visibility/", {"visibility": "public"})
    assert "Make private" in alice.get(f"/images/{image.pk}/").content.decode()


def test_model_versions_have_friendly_names():
    from datetime import UTC, datetime

    from captions.models import ModelVersion
    from captions.templatetags.captions_ui import model_label

    december = datetime(2026, 12, 2, tzinfo=UTC)

    def version(name: str) -> ModelVersion:
        return ModelVersion(name=name, encoder="efficientnet_lite0", created_at=december)

    broad = version("imgcap-broad-lite0-c07eb37d35")
    assert model_label(broad) == "Broad model (EfficientNet-Lite0), Dec 2026"
    assert model_label(version("imgcap-flickr8k-lite0-a30d61a5db")).startswith("Flickr8k model (EfficientNet")
    odd = ModelVersion(name="my-captioner", encoder="", created_at=None)
    assert model_label(odd) == "My captioner model" and model_label(None) == "the model"


@pytest.mark.parametrize(
    ("confidence", "words"),
    [(0.93, "likely right"), (0.6, "likely right"), (0.45, "unsure"), (0.1, "probably wrong")],
)
def test_image_page_says_the_confidence_in_words_not_scores(
    alice, user, make_image, model_version, save_captions, confidence, words
):
    image = make_image(user)
    save_captions(image, model_version, ["a dog runs", "a dog is running"], [-0.866, -1.093])
    Caption.objects.filter(image=image, rank=0).update(confidence=confidence)
    page = alice.get(f"/images/{image.pk}/").content.decode()
    assert 'class="confidence confidence-' in page and f"</span>{words}</span>" in page
    assert f"width: {round(confidence * 100)}%" in page
    assert "Test model 0001 (EfficientNet-Lite0)" in page and model_version.name not in page
    for technical in ("log-probability", "-0.866", "-1.093", "score"):
        assert technical not in page.replace("tag.score", ""), technical

    # Once a person wrote one, the model's caption beside it keeps its confidence in words.
    add_human_caption(image=image, text="Rex in the park")
    page = alice.get(f"/images/{image.pk}/").content.decode()
    assert f"</span>{words}</span>" in page.split('id="model-caption"')[1].split("</p>")[0]


def test_no_page_shows_log_probabilities_relevance_or_version_ids(
    alice, user, make_image, photo, model_version, save_captions
):
    image = make_image(user)
    save_captions(image, model_version, ["a dog runs", "a dog sits"], [-0.866, -1.093])
    Caption.objects.filter(image=image, rank=0).update(confidence=0.2)
    batch = create_batch(owner=user, files=[IncomingFile("b.jpg", photo())]).batch
    save_captions(batch.items.get().image, model_version, ["a cat"], [-0.866])
    pages = ("/", f"/images/{image.pk}/", "/search/?q=dog", "/upload/", "/batches/", f"/batches/{batch.pk}/")
    for path in pages:
        page = alice.get(path).content.decode()
        for technical in ("log-probability", "-0.866", "-1.093", "relevance", model_version.name):
            assert technical not in page, (path, technical)


def test_the_thresholds_are_settings(settings, alice, user, make_image, model_version, save_captions):
    settings.IMGCAP_CONFIDENCE_HIGH, settings.IMGCAP_NEEDS_REVIEW_BELOW = 0.9, 0.5
    image = make_image(user)
    save_captions(image, model_version, ["a dog runs"])
    Caption.objects.filter(image=image).update(confidence=0.45)
    page = alice.get(f"/images/{image.pk}/").content.decode()
    assert "</span>probably wrong</span>" in page
    upload = alice.get("/upload/").content.decode()
    assert 'data-confidence-high="0.9" data-needs-review-below="0.5"' in upload


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("a dog runs on the grass", "A dog runs on the grass."),
        ("Is it a dog?", "Is it a dog?"),
        ("a dog called “Rex.”", "A dog called “Rex.”"),
        ("  ", ""),
    ],
)
def test_captions_are_shown_as_sentences(stored, shown):
    from captions.templatetags.captions_ui import sentence

    assert sentence(stored) == shown


def test_the_api_keeps_the_caption_as_stored(api, alice, user, make_image, model_version, save_captions):
    image = make_image(user)
    save_captions(image, model_version, ["a dog runs on the grass"])
    assert api.get(f"/api/v1/images/{image.pk}/").json()["caption"]["text"] == "a dog runs on the grass"
    assert "<h1>A dog runs on the grass.</h1>" in alice.get(f"/images/{image.pk}/").content.decode()
    assert 'value="a dog runs on the grass"' in alice.get(f"/images/{image.pk}/").content.decode()


def test_the_owner_can_go_back_to_the_models_caption(
    alice, user, other_user, make_image, model_version, save_captions
):
    from django.test import Client

    image = make_image(user, "public")
    save_captions(image, model_version, ["a dog runs"])
    assert 'id="remove-human-caption"' not in alice.get(f"/images/{image.pk}/").content.decode()
    add_human_caption(image=image, text="Rex in the park")
    page = alice.get(f"/images/{image.pk}/").content.decode()
    assert "Go back to the model's caption" in page.replace("&#x27;", "'")
    assert f'action="/images/{image.pk}/caption/remove/"' in page

    other = Client()
    other.force_login(other_user)
    assert 'id="remove-human-caption"' not in other.get(f"/images/{image.pk}/").content.decode()
    assert other.post(f"/images/{image.pk}/caption/remove/").status_code == 403

    response = alice.post(f"/images/{image.pk}/caption/remove/")
    assert response.status_code == 302 and response["Location"] == f"/images/{image.pk}/"
    page = alice.get(f"/images/{image.pk}/").content.decode()
    page = page.replace("&#x27;", "'")
    assert "<h1>A dog runs.</h1>" in page and "the model's caption is shown again" in page
    assert not Caption.objects.filter(image=image, source="human").exists()
    alice.post(f"/images/{image.pk}/caption/remove/")  # nothing left to remove: said, not a 500
    assert "has no caption written by a person" in alice.get(f"/images/{image.pk}/").content.decode()


def test_image_page_without_attention_has_no_viewer(alice, user, make_image):
    image = make_image(user)
    page = alice.get(f"/images/{image.pk}/").content.decode()
    assert 'id="attention"' not in page and "No caption yet" in page and "this page updates" in page


# --- search ----------------------------------------------------------------------------------------


def test_search_page_states_empty_no_match_and_hits(alice, user, make_image, model_version, save_captions):
    image = make_image(user)
    save_captions(image, model_version, ["a brown horse jumps a fence"])
    empty = alice.get("/search/").content.decode()
    assert "Find photos by what is in them" in empty and 'data-suggest="horse"' in empty

    none = alice.get("/search/", {"q": "spaceship"}).content.decode()  # nothing near it, in words or meaning
    assert "No photo matches “spaceship”" in none and "Try other words" in none

    hits = alice.get("/search/", {"q": "horses"}).content.decode()
    assert "1 image matches “horses”" in hits and "<mark>horse</mark>" in hits
    assert f'src="/thumbs/{image.pk}/"' in hits


def test_search_snippets_escape_what_people_wrote(alice, api, user, make_image):
    image = make_image(user)
    add_human_caption(image=image, text='<img src=x onerror="alert(1)"> a horse <b>rides</b>')
    page = alice.get("/search/", {"q": "horse"}).content.decode()
    assert "<img src=x" not in page and "<b>rides" not in page
    assert "&lt;img src=x onerror=" in page and "<mark>horse</mark>" in page
    snippet = api.get("/api/v1/search/", {"q": "horse"}).json()["results"][0]["snippet"]
    # Postgres' ts_headline drops tags from the text; anything left would be escaped (captions.search).
    assert "<img" not in snippet and "<b>" not in snippet and "<mark>horse</mark>" in snippet


# --- upload and batches ----------------------------------------------------------------------------


def test_upload_page_has_drop_zone_urls_and_archive_and_refuses_bad_urls(alice):
    page = alice.get("/upload/").content.decode()
    assert 'id="dropzone"' in page and 'name="urls"' in page and 'name="archive"' in page
    assert 'data-image-api="/api/v1/images/"' in page and "/static/captions/upload.js" in page
    response = alice.post("/upload/", {"urls": "ftp://example.org/a.jpg\n"})
    assert response.status_code == 400 and "ftp://example.org/a.jpg" in response.content.decode()


def test_words_in_the_url_box_are_one_refusal_not_one_a_word(alice, api):
    from captions.ingest import split_urls

    response = alice.post("/upload/", {"urls": "not a url"})
    page = response.content.decode()
    assert response.status_code == 400 and page.count("not a URL (a web address has no spaces") == 1
    assert split_urls("not a url\n") == ["not a url"]
    # Several URLs on one line, by commas or spaces, are still several URLs.
    two = "https://example.org/a.jpg, https://example.org/b.jpg\r\n\nhttp://example.org/c.jpg  "
    assert split_urls(two) == [f"https://example.org/{n}.jpg" for n in "ab"] + ["http://example.org/c.jpg"]
    refused = api.post("/api/v1/batches/", {"urls": ["not a url"]}, format="json")
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "url_invalid"


def test_batch_page_shows_progress_reasons_and_exports(alice, user, photo, model_version, save_captions):
    files = [IncomingFile(f"{i}.jpg", photo()) for i in range(3)]
    batch = create_batch(owner=user, files=[*files, IncomingFile("notes.txt", b"hi")]).batch
    first, second, _ = [item.image for item in batch.items.order_by("position")]
    save_captions(first, model_version, ["two children play in the sand"])
    queue.mark_failed(image=second, error="the model could not read this image")
    page = alice.get(f"/batches/{batch.pk}/").content.decode()
    assert '<strong id="batch-finished">2</strong> of <strong>3</strong>' in page
    assert 'aria-valuenow="2"' in page and "width: 67%" in page
    assert "Two children play in the sand." in page and "the model could not read this image" in page
    assert "notes.txt" in page and "Not accepted" in page
    assert f'href="/api/v1/export.csv?batch={batch.pk}"' in page
    assert f'href="/api/v1/export.jsonl?batch={batch.pk}"' in page
    assert alice.get(f"/api/v1/export.csv?batch={batch.pk}").status_code == 200
    assert "Updating by itself" in page


def test_batch_api_items_say_why_they_failed(api, user, photo):
    batch = create_batch(owner=user, files=[IncomingFile("a.jpg", photo())]).batch
    queue.mark_failed(image=batch.items.get().image, error="decoder crashed")
    item = api.get(f"/api/v1/batches/{batch.pk}/").json()["items"][0]
    assert item["error"] == "decoder crashed" and item["urls"]["thumb"].endswith(f"/thumbs/{item['id']}/")


# --- token and API guide ---------------------------------------------------------------------------


def test_token_page_makes_and_replaces_the_api_token(client, alice, user, media_root):
    from rest_framework.test import APIClient

    assert client.get("/account/token/").status_code == 200
    assert "You have no token yet" in alice.get("/account/token/").content.decode()
    alice.post("/account/token/")
    page = alice.get("/account/token/").content.decode()
    key = user.auth_token.key
    assert key in page and "Make a new token" in page

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert api.get("/api/v1/images/").status_code == 200
    alice.post("/account/token/")
    user.refresh_from_db()
    assert user.auth_token.key != key
    assert api.get("/api/v1/images/").status_code == 401  # the old token stopped working


def test_token_page_needs_sign_in(client):
    response = client.get("/account/token/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert client.post("/account/token/").status_code == 302


def test_api_guide_links_the_reference_and_the_schema(client):
    page = client.get("/api-guide/").content.decode()
    assert 'href="/api/v1/docs/"' in page and 'href="/api/v1/schema/"' in page
    assert "http://testserver/api/v1/images/" in page.replace("$IMGCAP", "http://testserver")


def test_pages_load_nothing_from_other_hosts(alice, user, make_image, model_version, save_captions):
    image = make_image(user)
    save_captions(image, model_version, ["a dog"])
    for path in ("/", "/upload/", f"/images/{image.pk}/", "/search/?q=dog", "/account/token/", "/api-guide/"):
        page = alice.get(path).content.decode()
        for marker in ('src="http', "src='http", 'href="http://', "href='http", "//cdn", "@import"):
            assert marker not in page.replace('href="http://testserver', ""), (path, marker)


def test_error_pages_are_the_sites_own_and_api_errors_stay_json(alice, other_user, make_image):
    theirs = make_image(other_user)  # private: another user's image is "not found", never "forbidden"
    page = alice.get(f"/images/{theirs.pk}/")
    assert page.status_code == 404
    html = page.content.decode()
    assert "Nothing here" in html and f"/images/{theirs.pk}/" in html and 'href="/search/"' in html
    assert alice.get("/no/such/page/").status_code == 404

    api = alice.get(f"/api/v1/images/{theirs.pk}/")
    assert api.status_code == 404 and api.json()["error"]["code"] == "not_found"

    from django.template.loader import render_to_string

    # Rendered with no request and no context, as Django does after a crash.
    assert "Something went wrong" in render_to_string("500.html")
