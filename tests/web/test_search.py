"""Caption search by words: stemming, ranking, highlighted snippets, visibility.

Search by meaning is switched off here so that each test sees the words path alone;
test_search_meaning.py covers meaning, photos, tags, typos and the fused ranking.
"""

from __future__ import annotations

import pytest
from django.db import connection

from bench.synthetic_captions import SYNTHETIC_VERSION, generate_captions
from captions import selectors
from captions.api.serializers import ImageUrls, image_urls
from captions.models import Caption, Image
from captions.search import lexical
from captions.services.images import add_human_caption, delete_image

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def words_only(settings):
    settings.IMGCAP_SEMANTIC_SEARCH = False


SEARCH = "/api/v1/search/"


@pytest.fixture
def captioned(user, other_user, make_image, model_version, save_captions):
    """Four images with model captions: alice's private + public, bob's public + private."""

    def make(owner, visibility, texts):
        image = make_image(owner, visibility)
        save_captions(image, model_version, texts)
        return image

    return {
        "running_dog": make(user, "private", ["a dog runs across the grass", "a brown dog on grass"]),
        "many_dogs": make(user, "public", ["a dog chases another dog near a dog house"]),
        "bob_dog": make(other_user, "public", ["a man sits on a long bench next to a small sleeping dog"]),
        "bob_secret": make(other_user, "private", ["a dog runs on the beach"]),
        "cat": make(user, "public", ["a cat sleeps on a red sofa"]),
    }


def ids(results) -> list[int]:
    return [hit.image.pk for hit in results[: len(results)]]


def test_stemming_finds_other_word_forms(user, captioned):
    found = ids(selectors.search(user, "dogs running"))
    assert found == [captioned["running_dog"].pk]


def test_all_words_must_match_and_stop_words_are_ignored(user, captioned):
    assert ids(selectors.search(user, "the cat")) == [captioned["cat"].pk]
    assert ids(selectors.search(user, "cat dog")) == []
    assert ids(selectors.search(user, "the")) == []
    assert ids(selectors.search(user, "zebra")) == []


def test_ranking_puts_the_best_match_first(user, captioned):
    found = ids(selectors.search(user, "dog"))
    assert set(found) == {captioned["running_dog"].pk, captioned["many_dogs"].pk, captioned["bob_dog"].pk}
    assert found[0] == captioned["many_dogs"].pk  # "dog" three times
    assert found[-1] == captioned["bob_dog"].pk  # once, in a long caption
    scores = [hit.score for hit in selectors.search(user, "dog")[0:3]]
    assert scores == sorted(scores, reverse=True)


def test_each_image_appears_once_with_its_best_caption(user, captioned):
    results = selectors.search(user, "grass")
    assert results.count() == 1
    (hit,) = results[0:10]
    assert hit.image.pk == captioned["running_dog"].pk
    assert "grass" in hit.caption.text


def test_snippets_highlight_the_matches(user, captioned):
    (hit,) = selectors.search(user, "running dogs")[0:1]
    assert "<mark>" in hit.snippet
    marked = [part.split("</mark>")[0].lower() for part in hit.snippet.split("<mark>")[1:]]
    assert set(marked) == {"dog", "runs"}


def test_snippets_escape_caption_html(user, make_image):
    image = make_image(user)
    add_human_caption(image=image, text="<script>alert(1)</script> a parrot & a dog", author=user)
    (hit,) = selectors.search(user, "parrot")[0:1]
    # ts_headline drops tag-like tokens; whatever it keeps is escaped: never live HTML.
    assert "<script>" not in hit.snippet
    assert "alert(1)" in hit.snippet and "&amp; a dog" in hit.snippet
    assert "<mark>parrot</mark>" in hit.snippet


def test_human_captions_are_searched(user, make_image, model_version, save_captions):
    image = make_image(user)
    save_captions(image, model_version, ["a dog on grass"])
    add_human_caption(image=image, text="Rex fetching a frisbee", author=user)
    assert ids(selectors.search(user, "frisbees")) == [image.pk]
    # The owner replaced the model's caption: its words alone no longer find the image.
    assert all("words" not in hit.matched_by for hit in selectors.search(user, "dog")[:10])


def test_only_visible_images_are_found(user, other_user, captioned):
    assert captioned["bob_secret"].pk not in ids(selectors.search(user, "dog beach"))
    assert ids(selectors.search(other_user, "dog beach")) == [captioned["bob_secret"].pk]
    assert set(ids(selectors.search(None, "dog"))) == {captioned["many_dogs"].pk, captioned["bob_dog"].pk}


def test_search_follows_caption_changes(user, make_image, model_version, save_captions):
    image = make_image(user)
    save_captions(image, model_version, ["a horse in a field"])
    assert ids(selectors.search(user, "horse")) == [image.pk]
    save_captions(image, model_version, ["a pony in a field"])  # replaces the captions
    assert ids(selectors.search(user, "horse")) == []
    assert ids(selectors.search(user, "pony")) == [image.pk]
    delete_image(image=image)
    assert ids(selectors.search(user, "pony")) == []


def test_the_api_answers_ranked_pages_with_snippets(api, anon_api, captioned):
    body = api.get(SEARCH, {"q": "dogs", "page_size": 2}).json()
    assert body["count"] == 3
    assert [r["image"]["id"] for r in body["results"]] == [
        captioned["many_dogs"].pk,
        captioned["running_dog"].pk,
    ]
    first = body["results"][0]
    assert "<mark>" in first["snippet"]
    assert first["matched"]["source"] == "model"
    assert first["matched"]["text"] == "a dog chases another dog near a dog house"
    assert body["next"]
    rest = api.get(body["next"]).json()
    assert [r["image"]["id"] for r in rest["results"]] == [captioned["bob_dog"].pk]

    anon = anon_api.get(SEARCH, {"q": "dog"}).json()
    assert {r["image"]["id"] for r in anon["results"]} == {captioned["many_dogs"].pk, captioned["bob_dog"].pk}

    response = api.get(SEARCH)
    assert response.status_code == 400 and response.json()["error"]["code"] == "missing_query"


def test_search_page_shows_highlights(client, user, captioned):
    client.force_login(user)
    response = client.get("/search/", {"q": "dogs running"})
    assert response.status_code == 200
    assert b"<mark>" in response.content
    assert f"/images/{captioned['running_dog'].pk}/".encode() in response.content


@pytest.fixture
def zebras(user, other_user, make_image, model_version, save_captions):
    """12 images, oldest first, each with a matching and a non-matching caption: alice's private, bob's
    private (never visible to alice) and bob's public, in turn; the newest are bob's private ones."""
    images = []
    for i in range(12):
        owner, visibility = [(user, "private"), (other_user, "public"), (other_user, "private")][i % 3]
        image = make_image(owner, visibility)
        save_captions(image, model_version, [f"zebra number {i} on the grass", "an empty field"])
        images.append(image)
    return images


@pytest.mark.parametrize(
    "walk",
    [
        {},  # the real settings: everything fits in the first window
        {"FIRST_WINDOW": 3, "GIN_ROW_COST": 10**9},  # Postgres: windows scanned by id only
        {"FIRST_WINDOW": 3, "GIN_ROW_COST": 0},  # Postgres: the GIN index after the first window
    ],
    ids=["default", "scan", "gin"],
)
def test_only_the_newest_visible_matches_are_ranked(user, other_user, zebras, settings, monkeypatch, walk):
    for name, value in walk.items():
        monkeypatch.setattr(lexical.LexicalSearch, name, value)
    visible_to_alice = [im.pk for im in zebras if im.visibility == "public" or im.owner_id == user.pk]
    assert len(visible_to_alice) == 8

    settings.IMGCAP_SEARCH_CANDIDATES = 5
    results = selectors.search(user, "zebras")
    assert set(ids(results)) == set(visible_to_alice[-5:])  # one matching caption per image
    assert results.count() == 5 and results.capped

    settings.IMGCAP_SEARCH_CANDIDATES = 8  # exactly every visible match: nothing left out
    results = selectors.search(user, "zebras")
    assert set(ids(results)) == set(visible_to_alice) and not results.capped
    assert set(ids(selectors.search(other_user, "zebra"))) == {im.pk for im in zebras[1::3] + zebras[2::3]}
    assert set(ids(selectors.search(None, "zebra"))) == {im.pk for im in zebras[1::3]}
    assert ids(selectors.search(user, "zebra unicorn")) == []


def test_a_capped_search_says_so(api, client, user, zebras, settings):
    settings.IMGCAP_SEARCH_CANDIDATES = 3
    body = api.get(SEARCH, {"q": "zebra"}).json()
    assert body["count"] == 3 and body["capped"] is True and len(body["results"]) == 3
    client.force_login(user)
    assert "At least 3 images match" in client.get("/search/", {"q": "zebra"}).content.decode()

    settings.IMGCAP_SEARCH_CANDIDATES = 1000
    body = api.get(SEARCH, {"q": "zebra"}).json()
    assert body["count"] == 8 and body["capped"] is False
    assert "8 images match" in client.get("/search/", {"q": "zebra"}).content.decode()


def test_a_hit_is_slim(api, user, captioned):
    (hit,) = api.get(SEARCH, {"q": "sleeping cat"}).json()["results"]
    image = captioned["cat"]
    caption = image.captions.get()
    assert hit == {
        "image": {
            "id": image.pk,
            "urls": {
                "self": f"http://testserver/api/v1/images/{image.pk}/",
                "file": f"http://testserver/media/{image.file.name}",
                "page": f"http://testserver/images/{image.pk}/",
                "thumb": f"http://testserver/thumbs/{image.pk}/",
                "similar": f"http://testserver/api/v1/images/{image.pk}/similar/",
            },
            "best_caption": None,  # the matched caption is the image's best
        },
        "matched": {"id": caption.pk, "text": "a cat sleeps on a red sofa", "source": "model"},
        "snippet": hit["snippet"],
        "score": hit["score"],
        "matched_by": ["words"],
        "tags": [],
    }
    assert "<mark>cat</mark>" in hit["snippet"] and "<mark>sleeps</mark>" in hit["snippet"]
    assert isinstance(hit["score"], float) and hit["score"] > 0
    assert api.get(hit["image"]["urls"]["file"]).status_code == 200
    assert api.get(hit["image"]["urls"]["thumb"]).status_code == 200


@pytest.mark.parametrize("name", ["ab/cd/0123abcd.jpg", "odd dir/ü #1?.png", "imgcap-file-name/98765.jpg"])
def test_hit_urls_are_the_urls_of_the_image_api(rf, name):
    request = rf.get("/api/v1/search/", HTTP_HOST="localhost:8000")
    image = Image(pk=42, file=name)
    assert ImageUrls(request)(image) == image_urls(request, image)
    assert ImageUrls(None)(image) == image_urls(None, image)


def test_a_hit_names_the_best_caption_when_another_one_matched(
    api, client, user, make_image, model_version, save_captions
):
    image = make_image(user)
    save_captions(image, model_version, ["a cat on a sofa", "a puppy on a sofa"])
    (hit,) = api.get(SEARCH, {"q": "puppy"}).json()["results"]
    assert hit["matched"]["text"] == "a puppy on a sofa"
    assert hit["image"]["best_caption"] == "a cat on a sofa"  # rank 0 of the model's N-best list

    client.force_login(user)
    page = client.get("/search/", {"q": "puppy"}).content.decode()
    assert "Best caption: A cat on a sofa." in page

    # Once the owner captions it, the model's captions are replaced: their words no longer find it.
    add_human_caption(image=image, text="Rex the puppy asleep", author=user)
    assert all("words" not in r["matched_by"] for r in api.get(SEARCH, {"q": "sofa"}).json()["results"])
    (hit,) = [r for r in api.get(SEARCH, {"q": "puppy"}).json()["results"] if "words" in r["matched_by"]]
    assert hit["matched"] == {
        "id": image.captions.get(source="human").pk,
        "text": "Rex the puppy asleep",
        "source": "human",
    }
    assert hit["image"]["best_caption"] is None


def test_search_pages_hold_20_hits_and_at_most_100(api, user):
    generate_captions(owner=user, count=110, per_image=1)
    Caption.objects.filter(model_version__name=SYNTHETIC_VERSION).update(text="a quokka smiles")
    body = api.get(SEARCH, {"q": "quokkas"}).json()
    assert body["count"] == 110 and body["capped"] is False and len(body["results"]) == 20
    body = api.get(SEARCH, {"q": "quokkas", "page_size": 30, "page": 4}).json()
    assert len(body["results"]) == 20 and body["next"] is None
    body = api.get(SEARCH, {"q": "quokkas", "page_size": 1000}).json()
    assert len(body["results"]) == 100 and body["next"]


def test_a_results_page_takes_a_fixed_number_of_queries(
    api, user, captioned, make_image, model_version, save_captions, django_assert_max_num_queries
):
    new = set()
    for _ in range(20):
        image = make_image(user, "public")
        save_captions(image, model_version, ["a dog", "a dog and a ball", "grass"])
        new.add(image.pk)
    with django_assert_max_num_queries(10) as queries:  # 7 on Postgres; not one per hit or per caption
        body = api.get(SEARCH, {"q": "dog", "page_size": 50}).json()
    assert body["count"] == 23 and len(body["results"]) == 23
    shown = {r["image"]["id"]: r for r in body["results"]}
    assert new <= shown.keys()
    for pk in new:  # the shorter caption matches best, and it is the image's best (rank 0)
        assert shown[pk]["matched"]["text"] == "a dog" and shown[pk]["image"]["best_caption"] is None
    # Slim: neither the words and attention of captions nor the images' metadata are loaded.
    loaded = " ".join(q["sql"] for q in queries.captured_queries)
    assert "attention" not in loaded and "sha256" not in loaded and "original_name" not in loaded


def test_the_schema_describes_slim_hits(client):
    schema = client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()

    def resolved(node: dict) -> dict:  # a component the schema refers to, in place of the reference
        ref = node.get("$ref")
        return schema["components"]["schemas"][ref.rsplit("/", 1)[-1]] if ref else node

    page = schema["paths"]["/api/v1/search/"]["get"]["responses"]["200"]["content"]["application/json"]
    assert set(resolved(page["schema"])["properties"]) >= {"count", "next", "previous", "results", "capped"}
    hit = schema["components"]["schemas"]["SearchHit"]["properties"]
    assert set(hit) == {"image", "matched", "snippet", "score", "matched_by", "tags"}
    image = resolved(hit["image"])["properties"]
    assert set(image) == {"id", "urls", "best_caption"}
    assert image["best_caption"]["nullable"] is True
    assert set(resolved(hit["matched"])["properties"]) == {"id", "text", "source"}


def test_the_search_structures_exist():
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'captions_caption_search_gin'")
        (definition,) = cursor.fetchone()
        assert "USING gin (search_vector)" in definition
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(
            "EXPLAIN SELECT id FROM captions_caption "
            "WHERE search_vector @@ websearch_to_tsquery('english', 'dogs')"
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
        assert "captions_caption_search_gin" in plan
