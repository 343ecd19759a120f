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
    size = sum(f.stat().st_size for f in MODEL.iterdir())
    assert size <= 30 * 1024 * 1024, size
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
