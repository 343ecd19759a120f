"""The score the beam's candidates are reranked by: consensus, plus what other judges say of each.

Consensus (ml/rerank.py) alone picks a candidate worth 56.95 CIDEr on Flickr8k dev, while the best of
the 10 would be worth 82.9: the chooser, not only the decoder, leaves captions on the table. Three
more signals, each an independent judge of a candidate:
- `second_opinion`: a second decoder's mean log-probability per word (ml/second_opinion.py);
- `word_support`: how well the candidate's words fit the photo itself, the cosine between its
  words' vectors and the photo's pooled features (ml/word_vectors.py, the keyword search's);
- `sentence_match`: the cosine between its words' sentence vectors and the photo's projection into
  the sentence-embedding space (ml/image_text.py), without embedding the candidate.
Each signal is standardised across one image's candidates (only its order there matters) and added
to the standardised consensus with a weight per caption style, fitted on dev captions
(`python -m ml fit-rerank`). A style without weights is reranked by consensus alone.
numpy only.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np

SIGNALS = ("second_opinion", "word_support", "sentence_match")
WEIGHT_GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


def standardised(values: np.ndarray) -> np.ndarray:
    """One image's candidates' values [K] as z-scores (all 0 when they are equal)."""
    v = np.asarray(values, np.float64)
    spread = v.std()
    return (v - v.mean()) / spread if spread > 1e-9 else np.zeros_like(v)


def combined(
    consensus: np.ndarray, signals: Mapping[str, np.ndarray], weights: Mapping[str, float]
) -> np.ndarray:
    """One image's candidates' rerank scores [K]: standardised consensus + weighted standardised
    signals (a signal without a weight, or a weight without its signal, adds nothing)."""
    score = standardised(consensus)
    for name, weight in weights.items():
        if weight and name in signals:
            score = score + weight * standardised(signals[name])
    return score


def _picked_gain(
    consensus: Sequence[np.ndarray],
    signals: Sequence[Mapping[str, np.ndarray]],
    gains: Sequence[np.ndarray],
    weights: Mapping[str, float],
    images: Sequence[int],
) -> float:
    """The mean gain (e.g. CIDEr-D) of the candidates `weights` would put first on `images`."""
    return float(
        np.mean([gains[i][int(np.argmax(combined(consensus[i], signals[i], weights)))] for i in images])
    )


def fit_weights(
    consensus: Sequence[np.ndarray],
    signals: Sequence[Mapping[str, np.ndarray]],
    gains: Sequence[np.ndarray],
    names: Sequence[str] = SIGNALS,
    images: Sequence[int] | None = None,
    sweeps: int = 3,
) -> dict[str, float]:
    """The weights (from WEIGHT_GRID, coordinate ascent from all 0) whose first candidates score best.

    Per image: its candidates' consensus [K], signals {name: [K]} and gain [K] (each candidate's
    per-image CIDEr-D against the image's references)."""
    chosen = list(range(len(gains))) if images is None else list(images)
    weights = dict.fromkeys(names, 0.0)
    for _ in range(sweeps):
        for name in names:
            weights[name] = max(
                WEIGHT_GRID,
                key=lambda w: _picked_gain(consensus, signals, gains, {**weights, name: w}, chosen),
            )
    return weights


def cross_validated_gain(
    consensus: Sequence[np.ndarray],
    signals: Sequence[Mapping[str, np.ndarray]],
    gains: Sequence[np.ndarray],
    names: Sequence[str] = SIGNALS,
    repeats: int = 3,
    seed: int = 0,
) -> float:
    """The mean gain of weights fitted on one random half of the images and applied to the other
    (both ways, `repeats` splits): what fitting on dev is worth on images it has not seen."""
    rng = np.random.default_rng(seed)
    n, scores = len(gains), []
    for _ in range(repeats):
        order = rng.permutation(n)
        halves = (order[: n // 2], order[n // 2 :])
        for fit_on, score_on in itertools.permutations(halves):
            weights = fit_weights(consensus, signals, gains, names, fit_on)
            scores.append(_picked_gain(consensus, signals, gains, weights, score_on) * len(score_on) / n)
    return float(np.sum(scores) / repeats)
