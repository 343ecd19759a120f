"""Words in the photo space: for each word of the training captions, where the photos described with it
lie in the encoder's pooled feature space, so that a short query ("goalie", "bmx") reaches photos
whose own caption does not use the word.

The photos' pooled features are standardised (centred on the training mean, divided by their
spread), reduced by PCA to `dims` directions and scaled to length 1. A word's vector is the ridge
regression from those to the word's share of each photo's captions (penalty 10: the best of 0.1-100
on the retrieval benchmark's keywords, Flickr8k dev), normalised; with no penalty, the mean of the
photos whose captions use it (the first version: a prototype). Ridge explains each photo's words
together, so a word that mostly comes with another ("grass" with "dog") is placed on what is its own,
not on its companion's photos: photo list alone, keywords R@10 31.6 against 28.8, sentences 54.5
against 43.0. A query is the IDF-weighted sum of its words' vectors, mapped back to the
feature space (`basis`), so it can be compared by cosine with each photo's stored pooled features
as they are (the platform's pgvector index on them): scoring standardised features against a word's
vector equals an inner product with the raw features up to a constant. Measured in models/NOTES.md.

Each word also has a place in the sentence-embedding space (`sentences`): the mean all-MiniLM-L6-v2
embedding of the training captions that use it. A two-word query embeds far from the sentences the
photo projection (ml/image_text.py) was trained on; the IDF-weighted sum of its words' sentence
vectors is a sentence-like vector for the same words, which search adds to a short query's own
embedding before meeting the photos' projections (keywords R@10 31.5 -> 33.1, R@1 7.8 -> 9.8
through the platform, bench/README.md).
Stored as `word_vectors.npz` in the model directory (`python -m ml word-vectors`); numpy only.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

WORD_VECTORS_FILE = "word_vectors.npz"
STOP_WORDS = frozenset(
    "a an and are as at be but by for from has he her his in into is it its of on or she that the their "  # noqa: SIM905
    "them there they this to was were will with while two one three four some other another".split()
)


def words_of(text: str) -> list[str]:
    """The lower-case words of `text`, stop words left out, each once, in order."""
    return [w for w in dict.fromkeys(re.findall(r"[a-z]+", text.lower())) if w not in STOP_WORDS]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclass
class WordVectors:
    words: list[str]
    vectors: np.ndarray  # [V, D] unit word vectors in the reduced standardised space
    idf: np.ndarray  # [V] log(photos / photos using the word)
    basis: np.ndarray  # [C, D] reduced space -> feature-space query weights (PCA directions / spread)
    info: dict = field(default_factory=dict)
    sentences: np.ndarray | None = None  # [V, 384] unit mean embedding of the captions using each word

    def __post_init__(self) -> None:
        self._index = {w: i for i, w in enumerate(self.words)}

    def _rows(self, text: str) -> list[int]:
        """The rows of the known words of `text`."""
        return [self._index[w] for w in words_of(text) if w in self._index]

    def query_vector(self, text: str) -> np.ndarray | None:
        """A unit vector [C] to compare by cosine with photos' pooled features; None when no word of
        `text` is known."""
        rows = self._rows(text)
        if not rows:
            return None
        reduced = (self.vectors[rows].astype(np.float32) * self.idf[rows, None]).sum(axis=0)  # [D]
        return _unit(self.basis @ reduced)

    def sentence_vector(self, text: str) -> np.ndarray | None:
        """A unit vector [384] in the sentence-embedding space where the training captions using the
        words of `text` lie; None when no word is known or the file has no sentence vectors."""
        rows = self._rows(text)
        if not rows or self.sentences is None:
            return None
        return _unit((self.sentences[rows].astype(np.float32) * self.idf[rows, None]).sum(axis=0))

    def save(self, directory: str | os.PathLike) -> Path:
        path = Path(directory) / WORD_VECTORS_FILE
        with open(path, "wb") as fp:
            np.savez(
                fp,
                words=np.array(self.words),
                vectors=self.vectors.astype(np.float16),  # 4 MB for ~8,000 words, within their noise
                idf=self.idf.astype(np.float32),
                basis=self.basis.astype(np.float16),
                info=np.array(json.dumps(self.info)),
                **({} if self.sentences is None else _quantised(self.sentences)),
            )
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike) -> WordVectors | None:
        """The model directory's word vectors, or None if it has none. ValueError/KeyError: unusable."""
        path = Path(directory) / WORD_VECTORS_FILE
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as data:
            return cls(
                words=[str(w) for w in data["words"]],
                vectors=data["vectors"],
                idf=data["idf"],
                basis=data["basis"].astype(np.float32),  # stored as float16
                info=json.loads(str(data["info"])),
                sentences=(
                    data["sentences_int8"].astype(np.float32) * data["sentences_scale"][:, None]
                    if "sentences_int8" in data.files
                    else None
                ),
            )


def _quantised(sentences: np.ndarray) -> dict[str, np.ndarray]:
    """Unit rows as int8 with a scale per row: 1.6 MB for 4,000 words instead of 3.1 in float16, which
    keeps the model directory under its 30 MB; the error (under 0.2% of a row's largest value) is far
    below what ranks photos apart."""
    scale = np.maximum(np.abs(sentences).max(axis=1), 1e-12) / 127.0
    return {
        "sentences_int8": np.round(sentences / scale[:, None]).astype(np.int8),
        "sentences_scale": scale.astype(np.float32),
    }


def fit_word_vectors(
    pooled: np.ndarray,
    captions: Sequence[Sequence[str]],
    *,
    dims: int = 256,
    min_photos: int = 2,
    penalty: float | None = 10.0,
    caption_embeddings: Sequence[np.ndarray] | None = None,
) -> WordVectors:
    """Word vectors from training photos: `pooled` [N, C] features and each photo's captions; ridge
    regression with `penalty`, or the photos' mean (prototypes) when it is None or 0. Words used for
    fewer than `min_photos` photos are left out (one photo says nothing of a word). With
    `caption_embeddings` (per photo [its captions, 384], in the order of `captions`), each word's
    sentence vector too."""
    x = np.asarray(pooled, np.float32)
    if len(x) != len(captions):
        raise ValueError(f"{len(x)} photos but {len(captions)} caption lists")
    if caption_embeddings is not None and [len(e) for e in caption_embeddings] != [len(c) for c in captions]:
        raise ValueError("caption_embeddings must hold one embedding per caption, photo by photo")
    mean, spread = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = (x - mean) / spread  # [N, C]
    dims = min(dims, z.shape[0], z.shape[1])
    _, _, vt = np.linalg.svd(z, full_matrices=False)
    directions = vt[:dims].T  # [C, D]
    reduced = _unit(z @ directions)  # [N, D]
    said = [[set(words_of(text)) for text in texts] for texts in captions]  # per photo, per caption
    photos_of: dict[str, list[int]] = {}
    for i, texts in enumerate(said):
        for word in set().union(*texts):
            photos_of.setdefault(word, []).append(i)
    kept = sorted(w for w, ix in photos_of.items() if len(ix) >= min_photos)
    if not kept:
        raise ValueError("no word is used for enough photos to be placed among them")
    if penalty:
        share = np.zeros((len(x), len(kept)), np.float32)  # [N, V] the word's share of a photo's captions
        for col, w in enumerate(kept):
            for i in photos_of[w]:
                share[i, col] = sum(w in text for text in said[i]) / len(said[i])
        gram = reduced.T @ reduced + penalty * np.eye(dims, dtype=np.float32)  # [D, D]
        vectors = _unit(np.linalg.solve(gram, reduced.T @ share).T)  # [V, D]
    else:
        vectors = np.stack([_unit(reduced[photos_of[w]].mean(axis=0)) for w in kept])
    idf = np.array([math.log(len(x) / len(photos_of[w])) for w in kept], np.float32)
    info = {
        "photos": len(x),
        "words": len(kept),
        "dims": dims,
        "min_photos": min_photos,
        "penalty": penalty or 0,
    }
    sentences = None
    if caption_embeddings is not None:
        column = {w: i for i, w in enumerate(kept)}
        sums = np.zeros((len(kept), np.asarray(caption_embeddings[0]).shape[1]), np.float64)
        for texts, embedded in zip(said, caption_embeddings, strict=True):
            for words, vector in zip(texts, np.asarray(embedded, np.float32), strict=True):
                for w in words & column.keys():
                    sums[column[w]] += vector
        sentences = _unit(sums).astype(np.float32)  # the mean's direction: the sum's
        info["sentence_vectors"] = True
    basis = directions / spread[:, None]
    return WordVectors(words=kept, vectors=vectors, idf=idf, basis=basis, info=info, sentences=sentences)
