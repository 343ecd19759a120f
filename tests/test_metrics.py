"""Caption metrics: sanity cases, input validation, Java process hygiene, real Flickr8k numbers."""

from __future__ import annotations

import math
import shutil
from collections import defaultdict
from pathlib import Path

import pytest

from ml import metrics
from ml.metrics import METRIC_NAMES, CaptionScorer, MetricsError, score_captions

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="caption metrics need a JRE")
FLICKR = Path("/work/shared/data/flickr8k")

# Four clearly different scenes so CIDEr's IDF has something to work with.
REFS = {
    "dog": ["a brown dog runs across the green grass", "a dog running on a lawn", "a dog is running outside"],
    "surf": ["a man rides a wave on a surfboard", "a surfer on a big wave", "a person surfing in the ocean"],
    "kids": ["two children play on a swing set", "kids swinging at a playground", "two kids on swings"],
    "bike": ["a man rides a bicycle down the street", "a cyclist on a city road", "a person riding a bike"],
}


@pytest.fixture(scope="module")
def scorer():
    # One METEOR JVM for the whole module: starting it costs ~10 s.
    with CaptionScorer() as s:
        yield s


@needs_java
def test_perfect_captions_score_high(scorer):
    scores = scorer.score(REFS, {k: refs[0] for k, refs in REFS.items()})
    assert set(scores) == set(METRIC_NAMES)
    for name in ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L"):
        assert scores[name] == pytest.approx(100.0, abs=1e-3), name
    assert scores["METEOR"] > 80
    assert scores["CIDEr"] > 150


@needs_java
def test_unrelated_captions_score_near_zero(scorer):
    scores = scorer.score(REFS, {k: "quantum economics yesterday purple" for k in REFS})
    for name, value in scores.items():
        assert 0 <= value < 1, name


@needs_java
def test_per_image_cider_averages_to_the_corpus_score_and_ranks_captions(scorer):
    hyps = {
        "dog": "a brown dog runs across the grass",
        "surf": "a man rides a wave",
        "kids": "a red car",
        "bike": "two children play on a swing set",  # right words, wrong image
    }
    per_image = metrics.per_image_cider(REFS, hyps)
    assert list(per_image) == list(REFS)
    corpus = scorer.score(REFS, hyps)["CIDEr"]
    assert sum(per_image.values()) / len(per_image) * 100 == pytest.approx(corpus, rel=1e-6)
    assert per_image["dog"] > per_image["surf"] > per_image["kids"] == 0 and per_image["bike"] < 0.1


@needs_java
def test_bleu1_hand_checked_cwd_independent_and_jvm_closed(tmp_path, monkeypatch, meteor_starts):
    started = meteor_starts
    monkeypatch.chdir(tmp_path)  # the jars must be found whatever the caller's cwd
    # Tokenized: hyp "a dog sits" (3 words, 2 in the reference), reference 5 words; case and
    # punctuation vanish in PTB tokenization. BLEU-1 = 2/3 * exp(1 - 5/3).
    scores = score_captions({"img": ["A dog runs on grass."]}, {"img": "A dog, sits!"})
    assert scores["BLEU-1"] == pytest.approx(100 * 2 / 3 * math.exp(1 - 5 / 3), abs=1e-4)
    assert list(tmp_path.iterdir()) == []  # no stray temp files left in the cwd
    assert len(started) == 1 and started[0]._proc.poll() is not None  # one-shot call stopped its JVM


@needs_java
def test_good_caption_beats_bad_on_every_metric(scorer):
    good = {
        "dog": "a brown dog is running on the grass",
        "surf": "a man surfing a big wave",
        "kids": "two kids play on the swings",
        "bike": "a man riding a bike on the street",
    }
    bad = {
        "dog": "a cat sleeping on a sofa",
        "surf": "a man is standing",
        "kids": "a person in a building",
        "bike": "a dog on the street",
    }
    good_scores, bad_scores = scorer.score(REFS, good), scorer.score(REFS, bad)
    for name in METRIC_NAMES:
        assert good_scores[name] > bad_scores[name], name


@needs_java
def test_empty_hypothesis_scores_zero_without_breaking_alignment(scorer):
    hyps = {k: refs[0] for k, refs in REFS.items()}
    hyps["surf"] = ""
    scores = scorer.score(REFS, hyps)
    assert 0 < scores["BLEU-1"] < 100  # the other three images still line up with their references
    assert scores["ROUGE-L"] == pytest.approx(75.0, abs=1e-6)


@pytest.mark.parametrize(
    ("refs", "hyps", "message"),
    [
        ({}, {}, "empty"),
        ({"a": ["x y"]}, {"b": "x"}, "same image ids"),
        ({"a": ["x y"], "b": ["z"]}, {"a": "x"}, "same image ids"),
        ({"a": []}, {"a": "x"}, "at least one reference"),
        ({"a": ["x", "  "]}, {"a": "x"}, "blank reference"),
        ({"a": "x y"}, {"a": "x"}, "list of strings"),
        ({"a": ["x"]}, {"a": ["x"]}, "one string"),
    ],
)
def test_invalid_input_is_rejected_before_java_runs(refs, hyps, message):
    with pytest.raises(ValueError, match=message):
        score_captions(refs, hyps)


def test_missing_java_says_how_to_install(monkeypatch):
    monkeypatch.setattr(metrics.shutil, "which", lambda _name: None)
    with pytest.raises(MetricsError, match="default-jre-headless"):
        score_captions({"a": ["a dog"]}, {"a": "a dog"})


@needs_java
def test_meteor_timeout_raises_and_kills_the_jvm():
    # The JVM needs seconds to load METEOR's paraphrase table, so 0.3 s must time out cleanly.
    meteor = metrics._Meteor(timeout=0.3)
    try:
        with pytest.raises(MetricsError, match="timed out"):
            meteor.score(["a dog"], [["a dog runs"]])
    finally:
        meteor.close(kill=True)
    assert meteor._proc.poll() is not None


def _flickr_dev() -> dict[str, list[str]]:
    dev = (FLICKR / "Flickr_8k.devImages.txt").read_text().split()
    captions: dict[str, dict[int, str]] = defaultdict(dict)
    for line in (FLICKR / "Flickr8k.token.txt").read_text().splitlines():
        name, caption = line.split("\t")
        image, index = name.split("#")
        captions[image][int(index)] = caption
    return {image: [captions[image][i] for i in range(5)] for image in dev}


@needs_java
@pytest.mark.skipif(not (FLICKR / "Flickr8k.token.txt").is_file(), reason="Flickr8k not available")
def test_flickr8k_dev_reference_points(scorer):
    # Measured once: constant caption BLEU-4 3.46 / METEOR 8.50 / CIDEr 8.30; caption #0 against
    # the other four BLEU-4 21.16 / METEOR 25.50 / CIDEr 80.37 (identical to pycocoevalcap's own wrappers).
    refs = _flickr_dev()
    assert len(refs) == 1000
    constant = scorer.score(refs, {k: "a dog runs through the grass ." for k in refs})
    assert 2 < constant["BLEU-4"] < 6
    assert 6 < constant["METEOR"] < 11
    assert 5 < constant["CIDEr"] < 12
    human = scorer.score({k: v[1:] for k, v in refs.items()}, {k: v[0] for k, v in refs.items()})
    assert 17 < human["BLEU-4"] < 25
    assert 22 < human["METEOR"] < 29
    assert 65 < human["CIDEr"] < 95
