"""Search by meaning, fused with search by words: the real sentence-embedding model, pgvector's HNSW
indexes in the embedded Postgres, concept tags, typo correction, and how each hit says why it matched."""

from __future__ import annotations

import numpy as np
import pytest
from django.core.management import call_command

from captions import selectors
from captions.models import Image
from captions.services.images import add_human_caption, set_visibility
from ml.text_embedding import shared_embedder

pytestmark = pytest.mark.django_db

SEARCH = "/api/v1/search/"


@pytest.fixture
def library(user, make_image, model_version, save_captions):
    """Five dog photos, three of boys, one bowl of noodles, as the worker would store them."""

    def make(text: str, visibility: str = "private", **analysis) -> Image:
        image = make_image(user, visibility)
        save_captions(image, model_version, [text], **analysis)
        return image

    return {
        "dogs": [
            make("a brown dog runs across the grass"),
            make("a black and white dog jumps over a fence"),
            make("two dogs play in the snow"),
            make("a dog swims in a lake with a stick"),
            make("a small white dog sits on a couch"),
        ],
        "boys": [
            make("a boy in a red shirt kicks a soccer ball"),
            make("two young boys jump into a swimming pool"),
            make("a little boy climbs on a playground"),
        ],
        "noodles": make("a bowl of noodles with vegetables on a wooden table"),
    }


def found(user, query: str, n: int = 20) -> list:
    return selectors.search(user, query)[:n]


def test_words_the_captions_never_use_find_photos_by_meaning(user, library):
    dogs = {im.pk for im in library["dogs"]}
    boys = {im.pk for im in library["boys"]}
    puppy = found(user, "puppy")
    assert {hit.image.pk for hit in puppy} == dogs  # none of the captions says "puppy"
    assert all(hit.matched_by == ("meaning",) for hit in puppy)
    assert {hit.image.pk for hit in found(user, "kids playing")} >= boys
    assert not {hit.image.pk for hit in found(user, "children")} - boys
    assert [hit.image.pk for hit in found(user, "food")] == [library["noodles"].pk]
    assert found(user, "zzqxv") == [] and found(user, "spaceship") == []  # near nothing: no hits


def test_exact_words_rank_first_and_say_so(user, library, make_image, model_version, save_captions):
    hits = found(user, "dog")
    assert {hit.image.pk for hit in hits} >= {im.pk for im in library["dogs"]}
    # Every caption with the word itself ranks above the photos found by meaning alone.
    by_words = [i for i, hit in enumerate(hits) if "words" in hit.matched_by]
    assert by_words == list(range(len(by_words))) and len(by_words) >= 4
    assert "<mark>dog</mark>" in str(hits[0].snippet)
    assert "meaning" in hits[0].matched_by  # found both ways
    assert library["noodles"].pk not in {hit.image.pk for hit in hits}


def test_a_whole_sentence_finds_the_photo_it_describes(user, library):
    # No caption has all these words: by words alone this found nothing.
    hits = found(user, "a puppy leaping over a wooden barrier", 3)
    assert hits[0].image.pk == library["dogs"][1].pk
    assert hits[0].matched_by == ("meaning",)
    assert "<mark>" not in str(hits[0].snippet)  # nothing is highlighted: no word matched


def test_typos_are_corrected_to_words_the_captions_use(api, user, library):
    body = api.get(SEARCH, {"q": "dgo"}).json()
    assert body["corrected"] == "dog"
    assert {r["image"]["id"] for r in body["results"]} >= {im.pk for im in library["dogs"]}
    assert api.get(SEARCH, {"q": "noodels"}).json()["corrected"] == "noodles"
    # Words that some caption uses are left alone, in any form; so are numbers and short words.
    for query in ("dogs", "swimming", "grass 42", "ox"):
        assert api.get(SEARCH, {"q": query}).json()["corrected"] is None


def test_a_word_only_older_captions_use_is_not_corrected(
    user, make_image, model_version, save_captions, settings
):
    from django.db import connection

    from captions.search import spelling

    settings.IMGCAP_SPELLING_SAMPLE = 1  # the vocabulary: the newest caption's words only
    save_captions(make_image(user), model_version, ["a horse runs on the sand"])
    save_captions(make_image(user), model_version, ["a house by the sea"])
    plans = []

    def explain(execute, sql, params, many, context):
        if "EXISTS" in sql and "plainto_tsquery" in sql:  # whether an older caption uses a word
            raw = context["cursor"].cursor  # psycopg2's own: no wrappers, and before the real statement
            raw.execute("EXPLAIN " + sql, params)
            plans.append("\n".join(row[0] for row in raw.fetchall()))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(explain):
        assert spelling.correct("horse").changed is False  # one edit from "house", but a caption says it
        assert spelling.correct("seaa").query == "sea"
    # Asked through the full-text index, never by reading every caption (a million, in bench_search).
    assert len(plans) == 2 and all("captions_caption_search_gin" in plan for plan in plans)


def test_an_owners_caption_replaces_what_the_photo_is_found_by(user, library):
    noodles = library["noodles"]
    add_human_caption(image=noodles, text="grandma's ramen on Sunday", author=user)
    noodles.refresh_from_db()
    assert noodles.embedded_caption.source == "human"
    hits = found(user, "soup")
    assert hits and hits[0].image.pk == noodles.pk
    # The model's caption, replaced by the owner's, no longer matches by its words.
    assert all("words" not in hit.matched_by for hit in found(user, "vegetables"))


def test_concept_tags_find_what_the_caption_missed(api, user, make_image, model_version, save_captions):
    market = make_image(user)
    save_captions(market, model_version, ["a man stands in front of a building"], tags=[("banana", 0.8)])
    other = make_image(user)
    save_captions(other, model_version, ["a man stands in front of a shop"], tags=[("banana", 0.05)])
    (hit,) = [r for r in api.get(SEARCH, {"q": "bananas"}).json()["results"] if "tag" in r["matched_by"]]
    assert hit["image"]["id"] == market.pk and hit["tags"] == ["banana"]  # a tag below 0.2 does not count


@pytest.mark.parametrize("read_by_id", [20_000, 0])  # new tags read by id, or every label by the index
def test_tag_search_reads_labels_as_they_come_and_shows_each_image_once(
    api, user, make_image, model_version, save_captions, monkeypatch, read_by_id
):
    from captions.search import semantic

    monkeypatch.setattr(semantic, "_LABELS_READ_BY_ID", read_by_id)
    player = make_image(user)
    save_captions(player, model_version, ["a man runs on the grass"], tags=[("baseball player", 0.7)])
    tagged = [r for r in api.get(SEARCH, {"q": "players"}).json()["results"] if "tag" in r["matched_by"]]
    assert [(r["image"]["id"], r["tags"]) for r in tagged] == [(player.pk, ["baseball player"])]
    # A label first seen after that search (the labels are read once per process, then only new tags).
    desk = make_image(user)
    save_captions(desk, model_version, ["a woman sits in a room"], tags=[("laptop", 0.9), ("desk", 0.4)])
    tagged = [r for r in api.get(SEARCH, {"q": "laptop desk"}).json()["results"] if "tag" in r["matched_by"]]
    assert [(r["image"]["id"], r["tags"]) for r in tagged] == [(desk.pk, ["laptop"])]  # its most probable


def test_the_photo_itself_is_found_when_its_caption_is_wrong(user, make_image, model_version, save_captions):
    # What the projection of a bus photo into the sentence space looks like: near "a red bus".
    bus_vector = shared_embedder().embed(["a red double-decker bus on a city street"])[0]
    bus = make_image(user)
    save_captions(bus, model_version, ["a man in a red shirt stands on a street"], image_embedding=bus_vector)
    hits = found(user, "bus")
    assert hits[0].image.pk == bus.pk and "picture" in hits[0].matched_by


def test_meaning_respects_who_may_see_what(user, other_user, library):
    dog = library["dogs"][0]
    assert dog.pk not in {hit.image.pk for hit in found(other_user, "puppy")}  # alice's private photos
    set_visibility(image=dog, visibility="public")
    assert [hit.image.pk for hit in found(other_user, "puppy")] == [dog.pk]
    assert [hit.image.pk for hit in found(None, "puppy")] == [dog.pk]


def test_the_vector_indexes_serve_the_nearest_neighbour_queries():
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'captions_image'")
        indexes = dict(cursor.fetchall())
        assert "USING hnsw (caption_embedding vector_cosine_ops)" in indexes["image_caption_embedding_hnsw"]
        assert "USING hnsw (visual_embedding vector_cosine_ops)" in indexes["image_visual_embedding_hnsw"]
        vector = "[" + ",".join(["0.05"] * 384) + "]"
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(
            "EXPLAIN SELECT id FROM captions_image ORDER BY caption_embedding <=> %s::vector LIMIT 10",
            [vector],
        )
        assert "image_caption_embedding_hnsw" in "\n".join(row[0] for row in cursor.fetchall())


def test_embed_captions_fills_in_missing_and_stale_vectors(user, library):
    stored = {im.pk: Image.objects.get(pk=im.pk).caption_embedding for im in library["dogs"]}
    Image.objects.filter(pk__in=stored).update(caption_embedding=None, embedded_caption=None)
    assert not set(stored) & {hit.image.pk for hit in found(user, "puppy")}
    call_command("embed_captions", verbosity=0)
    for pk, vector in stored.items():
        image = Image.objects.get(pk=pk)
        assert image.embedded_caption.text in {c.text for c in image.captions.all()}
        assert np.abs(np.asarray(image.caption_embedding) - np.asarray(vector)).max() < 1e-5
    assert {hit.image.pk for hit in found(user, "puppy")} >= set(stored)


def test_without_the_sentence_model_search_still_finds_words(user, library, settings, tmp_path, monkeypatch):
    import ml.text_embedding
    from captions.search import semantic

    monkeypatch.setenv("IMGCAP_TEXT_MODEL_DIR", str(tmp_path))  # an empty folder: no model there
    monkeypatch.setattr(ml.text_embedding, "_shared", None)
    semantic.embed_query.cache_clear()
    try:
        hits = found(user, "dog")
        assert {hit.image.pk for hit in hits} == {
            im.pk for im in library["dogs"] if "dog" in im.captions.get().text
        }
        assert all(hit.matched_by == ("words",) for hit in hits)
        assert found(user, "puppy") == []  # nothing by meaning, and no error
    finally:
        semantic.embed_query.cache_clear()


def test_a_keyword_reaches_photos_like_those_the_training_captions_use_it_for(
    user, make_image, model_version, save_captions, settings, tmp_path
):
    from captions.search import semantic
    from ml.word_vectors import fit_word_vectors

    # A model directory whose word vectors place "goalie" near one kind of photo.
    rng = np.random.default_rng(3)
    base = np.abs(rng.normal(size=1280)) + 1.0
    goal, street = rng.normal(size=1280), rng.normal(size=1280)
    training = np.stack([base + c + 0.2 * rng.normal(size=1280) for c in [goal] * 10 + [street] * 10])
    captions = [["a goalie dives for the ball"]] * 10 + [["a bus on a busy street"]] * 10
    fit_word_vectors(training, captions, dims=8).save(tmp_path)
    settings.IMGCAP_MODEL_DIR = str(tmp_path)
    semantic.forget_word_vectors()
    try:
        keeper, bus = make_image(user), make_image(user)
        # The keeper's own caption misses the word; its features are those of the goalie photos.
        save_captions(keeper, model_version, ["a man in green jumps"], features=base + goal)
        save_captions(bus, model_version, ["a man in green walks"], features=base + street)
        hits = found(user, "goalie")
        assert hits[0].image.pk == keeper.pk and hits[0].matched_by == ("picture",)
        assert keeper.pk not in {hit.image.pk for hit in found(user, "zebra")}  # a word it never learnt
    finally:
        semantic.forget_word_vectors()


def test_preload_reads_the_search_models_before_the_first_query(settings, tmp_path):
    from captions.search import semantic
    from ml import text_embedding
    from ml.word_vectors import fit_word_vectors

    rng = np.random.default_rng(5)
    fit_word_vectors(rng.normal(size=(4, 32)), [["a goalie dives"]] * 2 + [["a bus"]] * 2, dims=2).save(
        tmp_path
    )
    settings.IMGCAP_MODEL_DIR = str(tmp_path)
    semantic.forget_word_vectors()
    try:
        settings.IMGCAP_SEMANTIC_SEARCH = False
        semantic.preload()  # search by words only: nothing to read
        assert semantic._word_vectors.cache_info().currsize == 0
        settings.IMGCAP_SEMANTIC_SEARCH = True
        semantic.preload()
        assert semantic._word_vectors.cache_info().currsize == 1
        assert semantic._word_vectors() is not None and text_embedding._shared is not None
    finally:
        semantic.forget_word_vectors()


def test_a_short_query_meets_the_photos_with_the_training_captions_of_its_words(settings, tmp_path):
    from captions.search import semantic
    from ml.word_vectors import fit_word_vectors

    rng = np.random.default_rng(4)
    captions = [["a goalie dives for the ball in front of the net"]] * 5 + [
        ["a red bus on a busy street"]
    ] * 5
    embedded = [shared_embedder().embed(caps) for caps in captions]
    fit_word_vectors(rng.normal(size=(10, 32)), captions, dims=4, caption_embeddings=embedded).save(tmp_path)
    settings.IMGCAP_MODEL_DIR = str(tmp_path)
    semantic.forget_word_vectors()
    try:
        typed = tuple(float(x) for x in shared_embedder().embed(["goalie net"])[0])
        picture = np.asarray(semantic.picture_query("goalie net", typed))
        # Nearer the sentence the training captions say with those words than the query alone is.
        sentence = embedded[0][0]
        assert picture @ sentence > np.asarray(typed) @ sentence and np.linalg.norm(picture) == pytest.approx(
            1
        )
        assert semantic.picture_query("zebra", typed) == typed  # no training caption uses it
        long = "a goalie in front of the net"  # a sentence already: left as typed
        assert semantic.picture_query(long, typed) == typed
    finally:
        semantic.forget_word_vectors()
