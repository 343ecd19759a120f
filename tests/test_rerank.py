"""Consensus reranking: the beam's candidates reordered by what people said of the nearest training photos."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import run_ml

from ml.rerank import NEIGHBOURS_FILE, Neighbours, fit_neighbours

# Three kinds of photo (clusters in a 3-d feature space), two of each, with what people said of them.
DOG, BEACH, CAKE = [5, 6, 7, 8], [9, 10, 11], [12, 13, 14, 15]


def photos(seed: int = 0) -> tuple[np.ndarray, list[list[list[int]]], list[str]]:
    rng = np.random.default_rng(seed)
    pooled = np.concatenate([c + 0.1 * rng.normal(size=(2, 3)) for c in np.eye(3) * 3.0])
    captions = [[DOG, DOG[:3]], [DOG], [BEACH], [BEACH, [9, 10]], [CAKE], [CAKE, [12, 13]]]
    return pooled, captions, ["f", "f", "f", "f", "cc", "cc"]


def test_a_candidate_that_says_what_the_neighbours_said_comes_first():
    pooled, captions, styles = photos()
    nb = fit_neighbours(pooled, captions, styles, dims=2)
    assert nb.styles == ["f", "cc"] and len(nb) == 6 and nb.info == {"photos": 6, "captions": 9, "dims": 2}
    dog_photo = pooled[0] + 0.01
    near = nb.nearest(dog_photo[None], ["f"], k=2)[0]
    assert sorted(near.tolist()) == [0, 1]
    agree = nb.consensus(near, [BEACH, DOG, DOG[:2], []])
    assert agree[1] > agree[2] > agree[0] == 0.0 and agree[3] == 0.0
    # One neighbour with one caption: saying exactly it is full agreement (n-gram orders it has no
    # n-gram of count zero, as in CIDEr).
    assert nb.consensus([1], [DOG])[0] == pytest.approx(1.0, abs=1e-5)
    assert nb.consensus([2], [BEACH])[0] == pytest.approx(0.75, abs=1e-5)
    # A style narrows the neighbours to photos of that style; an unknown or no style allows all.
    assert set(nb.nearest(dog_photo[None], ["cc"], k=2)[0].tolist()) == {4, 5}
    assert set(nb.nearest(dog_photo[None], ["cc"], k=5)[0].tolist()) == {4, 5}  # all the style has
    assert sorted(nb.nearest(dog_photo[None], [None], k=2)[0].tolist()) == [0, 1]
    assert len(nb.nearest(dog_photo[None], ["other"], k=50)[0]) == 6


def test_saved_and_loaded_alike_and_bad_files_refused(tmp_path):
    pooled, captions, styles = photos()
    nb = fit_neighbours(pooled, captions, styles, dims=2)
    assert Neighbours.load(tmp_path) is None
    nb.save(tmp_path)
    back = Neighbours.load(tmp_path)
    assert back.styles == nb.styles and back.info == nb.info
    assert [back.captions_of(i) for i in range(6)] == captions
    query = pooled[3:4] + 0.01
    assert back.nearest(query, ["f"], 3)[0].tolist() == nb.nearest(query, ["f"], 3)[0].tolist()
    with np.load(tmp_path / NEIGHBOURS_FILE) as data:
        arrays = dict(data)
    arrays["caption_start"] = arrays["caption_start"][:-1]
    np.savez(tmp_path / NEIGHBOURS_FILE, **arrays)
    with pytest.raises(ValueError, match="inconsistent"):
        Neighbours.load(tmp_path)
    with pytest.raises(ValueError, match="6 photos, 5 caption lists"):
        fit_neighbours(pooled, captions[:5], styles)


def test_ml_neighbours_makes_the_captioner_rerank(tiny_broad_run, tmp_path):
    from ml.captioner import load_captioner

    model = tmp_path / "model"
    shutil.copytree(tiny_broad_run, model)  # the session's tiny model stays without them
    args = ("--dims", "4", "--beam-size", "4", "--neighbours", "2", "--root", "", "--quiet")
    proc = run_ml("neighbours", "--model", str(model), *args)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["sources"] == ["flickr8k:train (8 images)", "img2dataset:train (4 images)"]
    assert info["photos"] == 12 and info["captions"] == 8 * 5 + 4  # every human caption, not the trained one
    config = json.loads((model / "config.json").read_text())
    assert config["decoding"]["beam_size"] == 4 and config["decoding"]["consensus_neighbours"] == 2
    assert "neighbours.npz" in (model / "README.md").read_text()

    captioner = load_captioner(model)
    nb = captioner.neighbours
    assert nb is not None and nb.styles == ["flickr8k", "cc"]
    from ml.data import load_dataset

    refs = load_dataset("flickr8k", config["training"]["root"], split="train").captions_by_image()
    images = list(refs)[:3]
    results = captioner.caption(images, n_best=3)
    for result in results:
        cands = result.candidates
        assert len(cands) == 3 and all(c.consensus is not None for c in cands)
        assert [c.consensus for c in cands] == sorted((c.consensus for c in cands), reverse=True)
    # Without the file the same model decodes as before: the beam's order, no consensus.
    (model / NEIGHBOURS_FILE).unlink()
    plain = load_captioner(model).caption(images, n_best=3)
    assert all(c.consensus is None for r in plain for c in r.candidates)
    assert all(r.candidates == sorted(r.candidates, key=lambda c: -c.score) for r in plain)
