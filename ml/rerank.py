"""Consensus reranking: of the beam's candidates, put first the one that says most what people said of
the training photos that look most like this one.

Beam search ranks by the decoder's probability, which favours safe, generic captions. Devlin et al.
2015 ("Exploring Nearest Neighbor Approaches for Image Captioning") pick, among candidate captions,
the one with the highest consensus (mean CIDEr) against the human captions of the image's nearest
training photos. Here the candidates are the beam's (10 of them), the neighbours the 30 training
photos of the image's caption style nearest in the encoder's pooled feature space (standardised,
PCA, cosine), and consensus is CIDEr-D's cosine of tf-idf n-gram vectors against the mean of the
neighbours' normalised reference vectors (no clipping or length penalty: that makes it one sparse
dot per candidate; the exact CIDEr-D picks as well, at ten times the cost). Measured in
models/NOTES.md.

Stored as `neighbours.npz` in the model directory (`python -m ml neighbours`): the training photos'
reduced features (int8), their styles and their captions as token ids; the n-gram index (document
frequencies, each photo's summed reference vectors) is built from those captions on first use, in
about a second. numpy and scipy.sparse.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import sparse

from ml.cider import NGRAMS

NEIGHBOURS_FILE = "neighbours.npz"
_ARRAYS = ("mean", "scale", "basis", "vectors", "photo_style", "caption_start", "token_start", "tokens")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclass
class Neighbours:
    """The training photos a caption is checked against, and what people said of them."""

    styles: list[str]  # styles[photo_style[i]] is photo i's caption style
    mean: np.ndarray  # [C] standardisation of the pooled features
    scale: np.ndarray  # [C]
    basis: np.ndarray  # [C, D] PCA directions of the standardised features
    vectors: np.ndarray  # int8 [N, D]: unit reduced features x 127
    photo_style: np.ndarray  # int8 [N]
    caption_start: np.ndarray  # int32 [N + 1]: photo i's captions are caption_start[i]:caption_start[i+1]
    token_start: np.ndarray  # int32 [M + 1]: caption j is tokens[token_start[j]:token_start[j+1]]
    tokens: np.ndarray  # int16/int32 [T] words only, no <start>/<end>
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._index: _NgramIndex | None = None  # built on first use
        self._unit_vectors: np.ndarray | None = None  # float32 [N, D], made on first use

    def __len__(self) -> int:
        return len(self.vectors)

    def captions_of(self, photo: int) -> list[list[int]]:
        lo, hi = self.caption_start[photo], self.caption_start[photo + 1]
        return [self.tokens[self.token_start[j] : self.token_start[j + 1]].tolist() for j in range(lo, hi)]

    def nearest(self, pooled: np.ndarray, styles: Sequence[str | None], k: int) -> list[np.ndarray]:
        """Per image (pooled features [n, C]), its k nearest training photos of its style (any style
        when None or one the file does not have), nearest first."""
        query = _unit(((np.asarray(pooled, np.float32) - self.mean) / self.scale) @ self.basis)  # [n, D]
        if self._unit_vectors is None:
            self._unit_vectors = self.vectors.astype(np.float32) / 127.0
        sims = query @ self._unit_vectors.T  # [n, N]
        out = []
        for row, style in zip(sims, styles, strict=True):
            if style in self.styles:
                row = np.where(self.photo_style == self.styles.index(style), row, -np.inf)
            k_row = min(k, len(row))
            top = np.argpartition(-row, k_row - 1)[:k_row]
            top = top[np.isfinite(row[top])]  # a style with fewer than k photos gives fewer
            out.append(top[np.argsort(-row[top])])
        return out

    def consensus(self, photos: Sequence[int], candidates: Sequence[Sequence[int]]) -> np.ndarray:
        """Each candidate's (token ids) agreement with the captions of `photos`: the mean over their
        captions of the n-gram orders' mean tf-idf cosine, 0-1. [len(candidates)]"""
        if self._index is None:
            self._index = _NgramIndex(self.tokens, self.token_start, self.caption_start)
        return self._index.consensus(np.asarray(photos, np.int64), candidates)

    def save(self, directory: str | os.PathLike) -> Path:
        path = Path(directory) / NEIGHBOURS_FILE
        with open(path, "wb") as fp:
            np.savez(
                fp,
                styles=np.array(self.styles),
                info=np.array(json.dumps(self.info)),
                **{k: getattr(self, k) for k in _ARRAYS},
            )
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Neighbours | None:
        """The model directory's neighbours, or None if it has none. ValueError/KeyError: unusable."""
        path = Path(directory) / NEIGHBOURS_FILE
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in _ARRAYS}
            styles, info = [str(s) for s in data["styles"]], json.loads(str(data["info"]))
        n = len(arrays["vectors"])
        if len(arrays["caption_start"]) != n + 1 or arrays["basis"].shape[1] != arrays["vectors"].shape[1]:
            raise ValueError(f"{path}: arrays of inconsistent sizes")
        return cls(styles=styles, info=info, **arrays)


class _NgramIndex:
    """CIDEr-D's tf-idf n-gram vectors of the training captions, in numpy and scipy.sparse.

    An n-gram of token ids is packed into one int64 (15 bits a token, the order above them), so
    the index is a sorted key array, not a dict of tuples: a few tens of MB for 50,000 captions,
    built in about a second. Row p of `centroids` is the sum over photo p's captions of their
    tf-idf vectors, each n-gram order normalised to length 1 (document frequencies over photos, as
    coco-caption counts them over images).
    """

    def __init__(self, tokens: np.ndarray, token_start: np.ndarray, caption_start: np.ndarray) -> None:
        photos = len(caption_start) - 1
        caption_of_token = np.repeat(np.arange(len(token_start) - 1), np.diff(token_start))
        keys, captions = _ngrams(np.asarray(tokens, np.int64), caption_of_token)
        photo_of_caption = np.repeat(np.arange(photos), np.diff(caption_start))
        self.keys = np.unique(keys)  # sorted: searchsorted finds a candidate's n-grams
        col = np.searchsorted(self.keys, keys)
        # df: photos whose captions use the n-gram (each photo once).
        pairs = np.unique(photo_of_caption[captions] * len(self.keys) + col)
        df = np.bincount(pairs % len(self.keys), minlength=len(self.keys))
        self.log_photos = float(np.log(max(photos, 1)))
        self.idf = (self.log_photos - np.log(np.maximum(df, 1))).astype(np.float64)
        # tf per (caption, n-gram), then each caption's vector normalised per order.
        cells, tf = np.unique(captions * len(self.keys) + col, return_counts=True)
        cap, col = cells // len(self.keys), cells % len(self.keys)
        weight = tf * self.idf[col]
        order = (self.keys[col] >> _ORDER_SHIFT).astype(np.int64)
        norm = np.zeros((len(token_start) - 1, NGRAMS))
        np.add.at(norm, (cap, order), weight**2)
        norm = np.sqrt(norm)
        value = np.where(norm[cap, order] > 0, weight / np.maximum(norm[cap, order], 1e-12), 0.0)
        self.centroids = sparse.csr_matrix(
            (value.astype(np.float32), (photo_of_caption[cap], col)), shape=(photos, len(self.keys))
        )
        self.captions_per_photo = np.diff(caption_start)

    def consensus(self, photos: np.ndarray, candidates: Sequence[Sequence[int]]) -> np.ndarray:
        lengths = [len(c) for c in candidates]
        count = int(self.captions_per_photo[photos].sum())
        if not count or not sum(lengths):
            return np.zeros(len(candidates), np.float32)
        tokens = np.fromiter((t for c in candidates for t in c), np.int64, count=sum(lengths))
        keys, cand = _ngrams(tokens, np.repeat(np.arange(len(candidates)), lengths))
        cells, tf = np.unique(np.stack([cand, keys], axis=1), axis=0, return_counts=True)
        cand, keys = cells[:, 0], cells[:, 1]
        col = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        known = self.keys[col] == keys
        weight = tf * np.where(known, self.idf[col], self.log_photos)  # an unseen n-gram: df 0 -> 1
        slot = cand * NGRAMS + (keys >> _ORDER_SHIFT)  # (candidate, order)
        norm = np.sqrt(np.bincount(slot, weights=weight**2, minlength=len(candidates) * NGRAMS))
        used = np.unique(col[known])
        summed = np.zeros(len(self.keys), np.float64)
        summed[used] = np.asarray(self.centroids[photos][:, used].sum(axis=0)).ravel()
        agree = np.where(known, weight * summed[col], 0.0) / np.maximum(norm[slot], 1e-12)
        return (np.bincount(cand, weights=agree, minlength=len(candidates)) / (NGRAMS * count)).astype(
            np.float32
        )


_TOKEN_BITS, _ORDER_SHIFT = 15, 60  # 4 tokens of 15 bits, then the order (0-3)


def _ngrams(tokens: np.ndarray, caption_of_token: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every 1- to 4-gram of the captions in `tokens` (ids < 2**15) as packed keys, with its caption."""
    keys, captions = [], []
    for n in range(1, NGRAMS + 1):
        start = np.arange(len(tokens) - n + 1)
        start = start[caption_of_token[start] == caption_of_token[start + n - 1]]
        key = np.full(len(start), (n - 1) << _ORDER_SHIFT, np.int64)
        for m in range(n):
            key |= tokens[start + m] << (_TOKEN_BITS * m)
        keys.append(key)
        captions.append(caption_of_token[start])
    return np.concatenate(keys), np.concatenate(captions)


def fit_neighbours(
    pooled: np.ndarray, captions: Sequence[Sequence[Sequence[int]]], styles: Sequence[str], dims: int = 128
) -> Neighbours:
    """Neighbours from training photos: pooled features [N, C], each photo's captions as token ids
    (words only) and its caption style."""
    x = np.asarray(pooled, np.float32)
    if not (len(x) == len(captions) == len(styles)):
        raise ValueError(f"{len(x)} photos, {len(captions)} caption lists, {len(styles)} styles")
    if not len(x):
        raise ValueError("no training photos")
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = (x - mean) / scale
    dims = min(dims, z.shape[0], z.shape[1])
    _, _, vt = np.linalg.svd(z, full_matrices=False)
    basis = vt[:dims].T.astype(np.float32)  # [C, D]
    vectors = np.round(_unit(z @ basis) * 127.0).astype(np.int8)
    names = list(dict.fromkeys(styles))
    flat = [list(c) for caps in captions for c in caps]
    token_start = np.cumsum([0] + [len(c) for c in flat]).astype(np.int32)
    caption_start = np.cumsum([0] + [len(caps) for caps in captions]).astype(np.int32)
    tokens = np.fromiter((t for c in flat for t in c), np.int64, count=int(token_start[-1]))
    if tokens.max(initial=0) >= 1 << _TOKEN_BITS:
        raise ValueError(
            f"token ids up to {tokens.max()}: n-grams are packed for ids below {1 << _TOKEN_BITS}"
        )
    small = tokens.max(initial=0) < np.iinfo(np.int16).max
    info = {"photos": len(x), "captions": len(flat), "dims": dims}
    return Neighbours(
        styles=names,
        mean=mean,
        scale=scale,
        basis=basis,
        vectors=vectors,
        photo_style=np.array([names.index(s) for s in styles], np.int8),
        caption_start=caption_start,
        token_start=token_start,
        tokens=tokens.astype(np.int16 if small else np.int32),
        info=info,
    )
