"""Concept tags from class probabilities: summed per short label, the top ones kept (no TensorFlow)."""

from __future__ import annotations

import numpy as np

from ml.concepts import label_probs, top_tags
from ml.encoders.imagenet import imagenet_classes, imagenet_labels


def _probs(**by_class: float) -> np.ndarray:
    classes = imagenet_classes()
    row = np.zeros((1, 1000), np.float32)
    for name, p in by_class.items():
        row[0, classes.index(name.replace("_", " "))] = p
    return row


def test_classes_sharing_a_label_are_summed_into_one_tag():
    # Five breeds at 0.15 each are one confident "dog", not five doubtful tags.
    probs = _probs(
        golden_retriever=0.15, Labrador_retriever=0.15, beagle=0.15, pug=0.15, collie=0.15, banana=0.2
    )
    (tags,) = top_tags(probs)
    assert [t.label for t in tags] == ["dog", "banana"]
    assert abs(tags[0].score - 0.75) < 1e-5 and tags[0].to_json() == {"label": "dog", "score": 0.75}


def test_tags_below_the_threshold_and_past_the_limit_are_dropped():
    probs = np.full((2, 1000), 0.0, np.float32)
    probs[0] = 1 / 1000  # nothing stands out: no tag
    labels = imagenet_labels()
    distinct = [labels.index(label) for label in dict.fromkeys(labels)][:6]  # six classes, six labels
    probs[1, distinct] = [0.3, 0.2, 0.15, 0.12, 0.11, 0.1]
    flat, many = top_tags(probs)
    assert flat == []  # though 118 dog breeds at 0.001 sum to 0.118: no class stands out
    assert len(many) == 5 and [t.score for t in many] == sorted((t.score for t in many), reverse=True)
    assert top_tags(probs, k=2, min_score=0.16)[1][0].score >= 0.16


def test_label_probabilities_keep_the_total():
    probs = np.random.default_rng(0).dirichlet(np.ones(1000), size=3).astype(np.float32)
    labels, per_label = label_probs(probs)
    assert len(labels) == per_label.shape[1] < 1000 and len(set(labels)) == len(labels)
    np.testing.assert_allclose(per_label.sum(axis=1), 1.0, atol=1e-5)
