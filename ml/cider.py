"""CIDEr-D of candidate captions against fixed reference sets: the reward of self-critical training
(ml/scst.py), coco-caption's definition (its n-gram counting reused), on the vocabulary's token ids.

Kept apart from ml/scst.py so that numpy-only code (ml/rerank.py, which computes the same tf-idf
n-gram vectors vectorised for many photos at once) shares its n-gram orders without TensorFlow.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from pycocoevalcap.cider.cider_scorer import precook

NGRAMS = 4
SIGMA = 6.0  # CIDEr-D's length penalty width


def _counts(ids: Sequence[int]) -> dict[tuple[str, ...], int]:
    return precook(" ".join(map(str, ids)), NGRAMS)


class CiderD:
    """CIDEr-D of candidate captions against fixed references, with document frequencies over
    `references` (one list of token-id captions per image), on coco-caption's 0-10 scale."""

    def __init__(self, references: Sequence[Sequence[Sequence[int]]]) -> None:
        cooked = [[_counts(r) for r in refs] for refs in references]
        self.df: dict[tuple[str, ...], float] = defaultdict(float)
        for refs in cooked:
            for ngram in {g for r in refs for g in r}:
                self.df[ngram] += 1.0
        self.log_images = float(np.log(len(references)))
        self._refs = [[self._vector(r) for r in refs] for refs in cooked]

    def _vector(self, counts: dict[tuple[str, ...], int]):
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

    def score(self, image: int, ids: Sequence[int]) -> float:
        """CIDEr-D of caption `ids` (words only) for the `image`-th reference set."""
        vec, norm, length = self._vector(_counts(ids))
        total = 0.0
        refs = self._refs[image]
        for vec_ref, norm_ref, length_ref in refs:
            penalty = np.exp(-((length - length_ref) ** 2) / (2 * SIGMA**2))
            for n in range(NGRAMS):
                ref_n = vec_ref[n]
                val = sum(min(w, ref_n[g]) * ref_n[g] for g, w in vec[n].items() if g in ref_n)
                if norm[n] and norm_ref[n]:
                    val /= norm[n] * norm_ref[n]
                total += val * penalty
        return 10.0 * total / NGRAMS / len(refs)
