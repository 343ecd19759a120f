"""ml/word_vectors.py: words of training captions placed in the photo feature space."""

from __future__ import annotations

import numpy as np
import pytest

from ml.word_vectors import WordVectors, fit_word_vectors, words_of


def clusters(seed: int = 0) -> tuple[np.ndarray, list[list[str]], np.ndarray, np.ndarray]:
    """Photos of cats near one direction, of dogs near another, in a 64-d feature space."""
    rng = np.random.default_rng(seed)
    cat, dog = rng.normal(size=64), rng.normal(size=64)
    base = np.abs(rng.normal(size=64)) + 2.0  # pooled features are positive and far from zero
    photos = [base + c + 0.3 * rng.normal(size=64) for c in [cat] * 20 + [dog] * 20]
    captions = [["a cat sleeps on the sofa"]] * 20 + [["a dog runs in the park"]] * 20
    return np.stack(photos), captions, base + cat, base + dog


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_a_word_points_at_the_photos_described_with_it_in_their_own_feature_space(tmp_path):
    pooled, captions, a_cat, a_dog = clusters()
    vectors = fit_word_vectors(pooled, captions, dims=16)
    cat = vectors.query_vector("cat")
    # Compared with the features as stored (not standardised), as the platform's index does.
    assert cosine(cat, a_cat) > cosine(cat, a_dog)
    dog = vectors.query_vector("Dogs? no: the DOG")  # case and punctuation do not matter
    assert cosine(dog, a_dog) > cosine(dog, a_cat)
    assert vectors.query_vector("the a of") is None  # stop words only
    assert vectors.query_vector("zebra") is None  # a word no training caption used
    assert vectors.info == {"photos": 40, "words": 6, "dims": 16, "min_photos": 2, "penalty": 10.0}

    vectors.save(tmp_path)
    again = WordVectors.load(tmp_path)
    assert again.words == vectors.words
    np.testing.assert_allclose(again.query_vector("cat sofa"), vectors.query_vector("cat sofa"), atol=1e-3)
    assert WordVectors.load(tmp_path / "nothing") is None


def test_rare_words_weigh_more_and_bad_input_is_refused():
    pooled, captions, _, _ = clusters()
    vectors = fit_word_vectors(pooled, captions, dims=8)
    idf = dict(zip(vectors.words, vectors.idf, strict=True))
    assert idf["cat"] == pytest.approx(np.log(2))
    assert words_of("A dog, a DOG and the park") == ["dog", "park"]
    with pytest.raises(ValueError, match="caption lists"):
        fit_word_vectors(pooled, captions[:3])
    with pytest.raises(ValueError, match="no word"):
        fit_word_vectors(pooled[:2], [["one"], ["two"]])


def test_ridge_tells_a_word_from_the_words_it_comes_with_and_no_penalty_gives_prototypes():
    # Most dogs are on grass: the mean of the grass photos leans towards dogs, so a prototype "grass"
    # finds the dogs indoors nearly as well as the men on grass; ridge puts the word on grass itself.
    rng = np.random.default_rng(0)
    grass, dog = rng.normal(size=64), rng.normal(size=64)
    base = np.abs(rng.normal(size=64)) + 2.0
    on_grass, is_dog = np.arange(60) < 30, (np.arange(60) < 24) | (np.arange(60) >= 54)
    pooled = np.stack(
        [
            base + grass * g + dog * d + 0.3 * rng.normal(size=64)
            for g, d in zip(on_grass, is_dog, strict=True)
        ]
    )
    captions = [
        [f"a {'dog' if d else 'man'} {'on the grass' if g else 'indoors'}"]
        for g, d in zip(on_grass, is_dog, strict=True)
    ]
    ridge = fit_word_vectors(pooled, captions, dims=16)
    prototypes = fit_word_vectors(pooled, captions, dims=16, penalty=0)
    assert prototypes.info["penalty"] == 0 and ridge.words == prototypes.words

    def margin(vectors: WordVectors) -> float:
        """How much nearer "grass" is to the men on grass than to the dogs indoors (stored features)."""
        q = vectors.query_vector("grass")
        near = pooled @ q / np.linalg.norm(pooled, axis=1)
        return float(near[on_grass & ~is_dog].mean() - near[~on_grass & is_dog].mean())

    assert margin(ridge) > 1.5 * margin(prototypes) > 0  # measured: 0.22 against 0.11


def test_a_words_sentence_vector_is_where_the_captions_using_it_lie(tmp_path):
    from ml.text_embedding import shared_embedder

    pooled, _, _, _ = clusters()
    captions = [["a cat sleeps on the sofa", "a kitten naps"]] * 20 + [
        ["a dog runs in the park", "a puppy"]
    ] * 20
    embedded = [shared_embedder().embed(caps) for caps in captions]  # the real sentence model
    vectors = fit_word_vectors(pooled, captions, dims=8, caption_embeddings=embedded)
    assert vectors.info["sentence_vectors"] is True
    # "sofa" is used by one caption of each cat photo: its vector is that caption's embedding.
    np.testing.assert_allclose(vectors.sentence_vector("sofa"), embedded[0][0], atol=1e-5)
    # A two-word query lands nearer the sentences of its words than of the others'.
    both = vectors.sentence_vector("cat sofa")
    assert cosine(both, embedded[0][0]) > cosine(both, embedded[20][0])
    assert vectors.sentence_vector("zebra") is None

    vectors.save(tmp_path)
    np.testing.assert_allclose(
        WordVectors.load(tmp_path).sentence_vector("park"), vectors.sentence_vector("park"), atol=1e-3
    )
    without = fit_word_vectors(pooled, captions, dims=8)  # no embeddings given: none kept, none saved
    without.save(tmp_path)
    assert WordVectors.load(tmp_path).sentences is None and without.sentence_vector("cat") is None
    with pytest.raises(ValueError, match="one embedding per caption"):
        fit_word_vectors(pooled, captions, dims=8, caption_embeddings=[e[:1] for e in embedded])
