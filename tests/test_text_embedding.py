"""all-MiniLM-L6-v2 in numpy: the same vectors as sentence-transformers, meaning-aware, no PyTorch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ml.text_embedding import DIMENSIONS, TextEmbedder

REFERENCE = Path(__file__).parent / "fixtures" / "text_embedding" / "minilm_reference.json"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def embedder() -> TextEmbedder:
    return TextEmbedder()


def test_vectors_equal_sentence_transformers_own(embedder):
    # Recorded once with sentence-transformers and PyTorch (see "made_with" in the file), which the
    # project does not install; the long text checks truncation at 256 tokens.
    reference = json.loads(REFERENCE.read_text())
    expected = np.asarray(reference["embeddings"], np.float32)
    got = embedder.embed(reference["texts"])
    assert got.shape == (len(reference["texts"]), DIMENSIONS) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=2e-6)


def test_unit_vectors_independent_of_the_batch(embedder):
    texts = ["a black dog", "two girls on a beach at sunset", "x"]
    together = embedder.embed(texts)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    for i, text in enumerate(texts):
        np.testing.assert_allclose(embedder.embed([text])[0], together[i], atol=1e-6)
    assert embedder.embed([]).shape == (0, DIMENSIONS)
    with pytest.raises(TypeError):
        embedder.embed("a single string")


def test_words_people_search_with_meet_the_captions_they_mean(embedder):
    captions = embedder.embed(
        ["a brown dog runs through the grass", "two boys play football", "a bowl of noodles with chopsticks"]
    )
    # (A typo such as "dgo" is not close to "dog" here: typos are corrected against the captions' words.)
    for query, wanted in (("puppy", 0), ("kids", 1), ("children", 1), ("food", 2)):
        scores = captions @ embedder.embed([query])[0]
        assert int(np.argmax(scores)) == wanted, (query, scores)


def test_embedding_imports_neither_tensorflow_nor_torch():
    probe = (
        "import sys; from ml.text_embedding import TextEmbedder; TextEmbedder().embed(['a dog']); "
        "print(sorted(m for m in ('tensorflow', 'torch', 'keras') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
