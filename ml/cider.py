"""CIDEr-D of candidate captions against fixed reference sets: the reward of self-critical training
(ml/scst.py) and the agreement score of consensus reranking (ml/rerank.py).

coco-caption's definition (its n-gram counting reused), on token ids or words, with the document
frequencies of the whole reference collection computed once; a reference set's tf-idf vectors are
computed the first time it is scored against, so a large collection costs little until it is used.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence

import numpy as np
from pycocoevalcap.cider.cider_scorer import precook

NGRAMS = 4
SIGMA = 6.0  # CIDEr-D's length penalty width

_Vector = tuple[list[dict[tuple[str, ...], float]], list[float], int]


def _counts(tokens: Sequence[Hashable]) -> dict[tuple[str, ...], int]:
    return precook(" ".join(map(str, tokens)), NGRAMS)


class CiderD:
    """CIDEr-D against `references` (one list of tokenised captions per image), coco-caption's 0-10
    scale; `score(i, tokens)` scores against the i-th image's references."""

    def __init__(self, references: Sequence[Sequence[Sequence[Hashable]]]) -> None:
        self._cooked = [[_counts(r) for r in refs] for refs in references]
        self.df: dict[tuple[str, ...], float] = defaultdict(float)
        for refs in self._cooked:
            for ngram in {g for r in refs for g in r}:
                self.df[ngram] += 1.0
        self.log_images = float(np.log(len(references)))
        self._refs: dict[int, list[_Vector]] = {}

    def __len__(self) -> int:
        return len(self._cooked)

    def _vector(self, counts: dict[tuple[str, ...], int]) -> _Vector:
        """tf-idf per n-gram order, the orders' norms, and the length as coco-caption counts it."""
        vec: list[dict[tuple[str, ...], float]] = [{} for _ in range(NGRAMS)]
        norm = [0.0] * NGRAMS
        length = 0
        for ngram, tf_ in counts.items():
            n = len(ngram) - 1
            w = tf_ * (self.log_images - np.log(max(1.0, self.df.get(ngram, 0.0))))
            vec[n][ngram] = w
            norm[n] += w * w
            if n == 1:  # coco-caption's length is its bigram count; kept for identical scores
                length += tf_
        return vec, [float(np.sqrt(x)) for x in norm], length

    def _references(self, image: int) -> list[_Vector]:
        refs = self._refs.get(image)
        if refs is None:
            refs = self._refs[image] = [self._vector(r) for r in self._cooked[image]]
        return refs

    def score(self, image: int, tokens: Sequence[Hashable]) -> float:
        """CIDEr-D of caption `tokens` (words only) for the `image`-th reference set."""
        vec, norm, length = self._vector(_counts(tokens))
        refs = self._references(image)
        if not refs:
            return 0.0
        total = 0.0
        for vec_ref, norm_ref, length_ref in refs:
            penalty = np.exp(-((length - length_ref) ** 2) / (2 * SIGMA**2))
            for n in range(NGRAMS):
                ref_n = vec_ref[n]
                val = sum(min(w, ref_n[g]) * ref_n[g] for g, w in vec[n].items() if g in ref_n)
                if norm[n] and norm_ref[n]:
                    val /= norm[n] * norm_ref[n]
                total += val * penalty
        return 10.0 * total / NGRAMS / len(refs)
