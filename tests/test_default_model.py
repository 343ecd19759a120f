"""The shipped default model: present, small, names the obvious subject, and its card's numbers hold."""

from __future__ import annotations

import json

import pytest
from conftest import COCO_MINI, FLICKR8K, REPO, needs_flickr8k, run_ml

from ml.data import load_dataset
from ml.vocab import tokenize

MODEL = REPO / "models" / "default"
SUBJECTS = {
    "dog": {"dog", "dogs", "puppy"},
    "person": {
        "man",
        "men",
        "woman",
        "women",
        "person",
        "people",
        "boy",
        "boys",
        "girl",
        "girls",
        "child",
        "children",
        "kid",
        "kids",
        "player",
        "guy",
        "lady",
        "baby",
        "toddler",
        "biker",
        "skier",
        "surfer",
        "climber",
        "snowboarder",
        "skateboarder",
        "couple",
        "crowd",
        "group",
    },
}


@pytest.fixture(scope="module")
def captioner():
    from ml.captioner import load_captioner

    return load_captioner()  # no path: the default model


def _agreed_subject(captions: list[str]) -> str | None:
    """The subject every one of the human captions names, if there is one."""
    for subject, words in SUBJECTS.items():
        if all(set(tokenize(c)) & words for c in captions):
            return subject
    return None


def test_shipped_model_is_complete_and_small():
    for name in ("config.json", "vocab.json", "decoder.npz", "metrics.json", "README.md"):
        assert (MODEL / name).is_file(), name
    size = sum(f.stat().st_size for f in MODEL.rglob("*") if f.is_file())  # second_opinion/ included
    assert size <= 30 * 1024 * 1024, size
    # Its reranking judges ship with it: a second opinion the captioner loads (ml/second_opinion.py).
    assert (MODEL / "second_opinion" / "decoder.npz").is_file()
    card = (MODEL / "README.md").read_text()
    assert "Hodosh" in card and "BLEU-4" in card and "efficientnet" in card.lower()


def _check_subjects(captioner, refs: dict[str, list[str]], per_subject: int) -> None:
    chosen: dict[str, list[str]] = {}
    for image, captions in refs.items():
        subject = _agreed_subject(captions)
        if subject and len(chosen.setdefault(subject, [])) < per_subject:
            chosen[subject].append(image)
    images = [i for group in chosen.values() for i in group]
    assert len(images) >= 3
    results = {r.image: r for r in captioner.caption(images)}
    for subject, group in chosen.items():
        for image in group:
            words = set(tokenize(results[image].caption))
            assert words & SUBJECTS[subject], (image, subject, results[image].caption)


def test_names_the_subject_of_dev_photos(captioner):
    needs_flickr8k()
    refs = load_dataset("flickr8k", FLICKR8K, split="dev").captions_by_image()
    _check_subjects(captioner, refs, per_subject=4)


def test_names_the_subject_of_full_size_coco_photos(captioner):
    if not (COCO_MINI / "annotations").is_dir():
        pytest.skip("coco-mini not found")
    _check_subjects(captioner, load_dataset("coco", COCO_MINI).captions_by_image(), per_subject=6)


def test_recorded_metrics_match_a_fresh_evaluation():
    needs_flickr8k()
    recorded = json.loads((MODEL / "metrics.json").read_text())["subset"]
    proc = run_ml(
        "evaluate",
        "--dataset",
        "flickr8k",
        "--root",
        str(FLICKR8K),
        "--split",
        "dev",
        "--limit",
        str(recorded["images"]),
        "--beam-size",
        str(recorded["beam_size"]),
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    fresh = json.loads(proc.stdout.strip().splitlines()[-1])["metrics"]
    for name, value in recorded["metrics"].items():
        assert fresh[name] == pytest.approx(value, abs=0.05), name


def test_caption_command_uses_the_default_model():
    needs_flickr8k()
    image = str(FLICKR8K / "images" / "2090545563_a4e66ec76b.jpg")
    proc = run_ml("caption", "--jsonl", image)
    assert proc.returncode == 0, proc.stderr
    line = json.loads(proc.stdout)
    beam = json.loads((MODEL / "config.json").read_text())["decoding"]["beam_size"]
    assert line["image"] == image and line["caption"] and len(line["candidates"]) == beam


def test_doubts_pictures_no_caption_describes(captioner):
    """A blank page, a single pixel, a screenshot of text and a chart come out with low confidence."""
    import random

    from PIL import Image

    from ml.calibrate import out_of_domain_image

    needs_flickr8k()
    rng = random.Random(2026)  # other pictures than the calibration saw
    doubtful = {
        "1x1 red pixel": Image.new("RGB", (1, 1), (255, 0, 0)),
        "blank white page": Image.new("RGB", (800, 600), "white"),
        "text screenshot": out_of_domain_image("text", rng),
        "bar chart": out_of_domain_image("chart", rng),
    }
    photos = list(load_dataset("flickr8k", FLICKR8K, split="dev").captions_by_image())[:20]
    photo_conf = sorted(r.confidence for r in captioner.caption(photos))
    median = photo_conf[len(photo_conf) // 2]
    for (name, _), result in zip(doubtful.items(), captioner.caption(list(doubtful.values())), strict=True):
        assert result.confidence is not None and result.confidence < 0.2, (
            name,
            result.caption,
            result.confidence,
        )
        assert result.confidence < median / 2, (name, result.confidence, median)


def test_tags_name_what_the_encoder_knows(captioner):
    if not (COCO_MINI / "val2017").is_dir():
        pytest.skip("coco-mini not found")
    expected = {"000000519208.jpg": "elephant", "000000128598.jpg": "orange", "000000407574.jpg": "banana"}
    results = captioner.caption([str(COCO_MINI / "val2017" / name) for name in expected])
    for (name, label), result in zip(expected.items(), results, strict=True):
        assert label in [t.label for t in result.tags], (name, result.tags)
        assert all(0.1 <= t.score <= 1 for t in result.tags)


def test_captions_read_as_text(captioner):
    """No "man s face", no word twice in a row, no phrase said twice, in any candidate."""
    needs_flickr8k()
    if not json.loads((MODEL / "config.json").read_text())["decoding"].get("block_repeats"):
        pytest.skip("the shipped model predates repeat blocking")
    images = list(load_dataset("flickr8k", FLICKR8K, split="dev").captions_by_image())[100:150]
    for result in captioner.caption(images):
        for cand in result.candidates:
            words = cand.words
            assert " 's" not in cand.text and all(words[i] != words[i + 1] for i in range(len(words) - 1))
            trigrams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
            assert len(trigrams) == len(set(trigrams)), cand.text


def test_its_judges_choose_among_the_beams_candidates(captioner):
    """The default reranks the Flickr8k style's candidates by consensus joined by its judges: every
    candidate carries their signals, and the order shown is the order of the combined score."""
    import numpy as np

    from ml.rerank_score import combined

    needs_flickr8k()
    assert captioner.second_opinion is not None
    weights = captioner.rerank_weights["flickr8k"]
    assert weights["second_opinion"] > 0
    images = list(load_dataset("flickr8k", FLICKR8K, split="dev").captions_by_image())[:4]
    results = captioner.caption(images)
    judged = 0
    for r in results:
        if not all("second_opinion" in c.signals for c in r.candidates):
            continue  # routed to the other style, or the judge abstained on a word it does not know
        judged += 1
        assert len(r.candidates) == captioner.beam_size
        consensus = np.asarray([c.consensus for c in r.candidates])
        signals = {n: np.asarray([c.signals[n] for c in r.candidates]) for n in r.candidates[0].signals}
        score = combined(consensus, signals, weights)
        assert np.all(np.diff(score) <= 1e-9), (r.image, score)  # shown best first
    assert judged >= 3
