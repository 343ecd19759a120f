"""Concept tags: the encoder's ImageNet classes as short labels people search for.

The 1,000 classes are fine-grained (118 dog breeds, five domestic cats), so probabilities
are summed per short label ("tabby" + "tiger cat" + "Egyptian cat" -> "cat") before the top
ones are kept: five breeds at 0.15 each are one confident "dog", not five doubtful tags.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

TOP_TAGS = 5  # at most this many tags an image
MIN_TAG_SCORE = 0.1  # a tag below this probability is more often wrong than right
# ...and one of its classes must stand out on its own: a flat distribution sums to a tag for the
# labels with many classes (118 dog breeds at 0.001 each make a "dog" of 0.118).
MIN_CLASS_SCORE = 0.05


@dataclass(frozen=True)
class Tag:
    label: str
    score: float  # the probability of the label (summed over its ImageNet classes)

    def to_json(self) -> dict[str, object]:
        return {"label": self.label, "score": round(self.score, 4)}


@lru_cache(maxsize=1)
def _label_index() -> tuple[tuple[str, ...], np.ndarray]:
    """(distinct labels, class -> label column) for summing class probabilities per label."""
    from ml.encoders.imagenet import imagenet_labels

    labels = imagenet_labels()
    distinct = tuple(dict.fromkeys(labels))
    column = {label: i for i, label in enumerate(distinct)}
    return distinct, np.asarray([column[label] for label in labels])


def label_probs(probs: np.ndarray) -> tuple[tuple[str, ...], np.ndarray]:
    """Class probabilities [N, 1000] -> (labels, probabilities per label [N, L])."""
    distinct, column = _label_index()
    probs = np.asarray(probs, np.float32)
    out = np.zeros((len(probs), len(distinct)), np.float32)
    np.add.at(out, (slice(None), column), probs)
    return distinct, out


def _best_class_per_label(probs: np.ndarray) -> np.ndarray:
    """[N, L]: the probability of each label's most probable class."""
    distinct, column = _label_index()
    out = np.zeros((len(probs), len(distinct)), np.float32)
    np.maximum.at(out, (slice(None), column), np.asarray(probs, np.float32))
    return out


def top_tags(
    probs: np.ndarray, k: int = TOP_TAGS, min_score: float = MIN_TAG_SCORE, min_class: float = MIN_CLASS_SCORE
) -> list[list[Tag]]:
    """Per image, up to `k` tags scoring at least `min_score` (with a class of at least `min_class`),
    most probable first."""
    labels, per_label = label_probs(probs)
    standing_out = _best_class_per_label(probs) >= min_class
    out = []
    for row, ok in zip(per_label, standing_out, strict=True):
        order = np.argsort(-np.where(ok, row, 0.0))[:k]
        out.append([Tag(labels[i], float(row[i])) for i in order if ok[i] and row[i] >= min_score])
    return out
