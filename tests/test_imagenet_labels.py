"""The everyday ImageNet tags (imagenet_labels.txt): well-formed, regenerable, and sensible."""

from __future__ import annotations

import re

import pytest

from ml.encoders import make_imagenet_labels
from ml.encoders.imagenet import CLASSES_FILE, LABELS_FILE, imagenet_classes, imagenet_labels


def test_labels_are_short_plain_words():
    labels = imagenet_labels()
    assert len(labels) == 1000
    for label in labels:
        assert label.isascii() and label == label.lower() and label == label.strip(), label
        assert not re.search(r"[,()\[\]{}]", label), label
        assert 1 <= len(label.split()) <= 3 and len(label) <= 24, label


def test_script_regenerates_the_committed_file(tmp_path):
    out = tmp_path / "imagenet_labels.txt"
    labels = make_imagenet_labels.write_labels(CLASSES_FILE, out)
    assert out.read_bytes() == LABELS_FILE.read_bytes()
    assert labels == imagenet_labels()


@pytest.mark.parametrize(
    ("index", "name", "label"),
    [
        (134, "crane bird", "crane"),
        (517, "crane", "crane"),  # the machine
        (207, "golden retriever", "dog"),
        (151, "Chihuahua", "dog"),
        (268, "Mexican hairless", "dog"),
        (281, "tabby", "cat"),
        (282, "tiger cat", "cat"),
        (285, "Egyptian cat", "cat"),
        (292, "tiger", "tiger"),
        (291, "lion", "lion"),
        (638, "maillot", "leotard"),
        (639, "maillot tank suit", "swimsuit"),
        (664, "monitor", "monitor"),
        (705, "passenger car", "train car"),
        (954, "banana", "banana"),
        (963, "pizza", "pizza"),
        (967, "espresso", "coffee"),
    ],
)
def test_spot_checks(index, name, label):
    assert imagenet_classes()[index] == name
    assert imagenet_labels()[index] == label


def test_every_dog_breed_is_dog():
    labels = imagenet_labels()
    assert set(labels[151:269]) == {"dog"}
    assert labels[150] != "dog" and labels[269] != "dog"


def test_rules_are_checked():
    classes = imagenet_classes()
    with pytest.raises(ValueError):
        make_imagenet_labels.check_label("Tabby, tabby cat")
    with pytest.raises(ValueError):
        make_imagenet_labels.check_label("one two three four")
    with pytest.raises(ValueError):
        make_imagenet_labels.build_labels(classes[:999])
