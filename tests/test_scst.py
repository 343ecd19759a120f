"""Self-critical training: the CIDEr-D reward is coco-caption's, and training on it raises it."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY, needs_flickr8k, read_log
from pycocoevalcap.cider.cider import Cider

from ml.cider import CiderD
from ml.config import TrainConfig
from ml.train import train

REFERENCES = [
    [[5, 6, 7, 8, 9], [5, 6, 10, 8], [11, 6, 7, 12, 13, 14]],
    [[20, 21, 22], [20, 23, 22, 24, 25, 26, 27]],
    [[5, 30, 31, 32, 33], [5, 30, 34], [35, 30, 31], [5, 6, 7]],
    [[40, 41, 42, 43, 44, 45, 46, 47, 48]],
]
CANDIDATES = [[5, 6, 7, 8], [20, 22], [5, 30, 31, 32, 33], [40, 41, 99, 43, 44, 45, 46]]


def test_cider_d_matches_coco_caption():
    def text(ids):
        return " ".join(map(str, ids))

    gts = {i: [text(r) for r in refs] for i, refs in enumerate(REFERENCES)}
    res = {i: [text(c)] for i, c in enumerate(CANDIDATES)}
    _, expected = Cider().compute_score(gts, res)
    cider = CiderD(REFERENCES)
    got = [cider.score(i, c) for i, c in enumerate(CANDIDATES)]
    np.testing.assert_allclose(got, expected, rtol=1e-9)
    # A caption equal to an image's only reference beats a partial one; nothing scores nothing.
    assert cider.score(3, REFERENCES[3][0]) > cider.score(3, CANDIDATES[3]) > 0
    assert cider.score(0, []) == 0.0


def test_self_critical_training_raises_the_reward(tmp_path):
    needs_flickr8k()
    # A briefly trained start (captions half learnt), then CIDEr-D as the objective.
    start = tmp_path / "xe"
    train(TrainConfig(**{**TINY, "captions_per_image": 5}, epochs=12), start, progress=False)
    # Adam at 3e-4 (1e-3 made the policy collapse here); every image sampled 6 times per step.
    cfg = TrainConfig(
        **{**TINY, "captions_per_image": 5, "learning_rate": 3e-4},
        epochs=80,
        objective="cider",
        samples_per_image=6,
        init_from=str(start),
        lr_schedule="constant",
    )
    state = train(cfg, tmp_path / "scst", progress=False)
    assert state["epoch"] == 80
    rewards = [float(r["reward"]) for r in read_log(tmp_path / "scst")]
    # Measured: about 0.65 over the first 10 steps, 0.82 over the last 10.
    assert np.mean(rewards[-10:]) > np.mean(rewards[:10]) + 0.08, rewards
    assert (tmp_path / "scst" / "decoder.npz").is_file()


def test_objective_and_samples_are_checked(tmp_path):
    needs_flickr8k()
    with pytest.raises(ValueError, match="objective must be"):
        train(TrainConfig(**TINY, epochs=1, objective="bleu"), tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="at least 2 samples"):
        train(
            TrainConfig(**TINY, epochs=1, objective="cider", samples_per_image=1),
            tmp_path / "b",
            progress=False,
        )
