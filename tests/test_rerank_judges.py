"""Reranking by more than consensus: int8 weights, a second decoder's opinion, fitted weights."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import FLICKR8K, run_ml

from ml.rerank_score import combined, cross_validated_gain, fit_weights, standardised


def test_signals_are_compared_within_one_image_and_weighted():
    assert standardised(np.array([2.0, 2.0, 2.0])).tolist() == [0.0, 0.0, 0.0]
    z = standardised(np.array([1.0, 2.0, 3.0]))
    assert z.mean() == pytest.approx(0.0) and z.std() == pytest.approx(1.0)
    consensus = np.array([0.3, 0.2, 0.1])
    judge = np.array([-5.0, -1.0, -3.0])  # only its order counts, not its scale
    assert np.argmax(combined(consensus, {"second_opinion": judge}, {})) == 0
    assert np.argmax(combined(consensus, {"second_opinion": judge}, {"second_opinion": 3.0})) == 1
    # A weight without its signal (a model without that judge) adds nothing.
    assert combined(consensus, {}, {"second_opinion": 3.0}).tolist() == standardised(consensus).tolist()


def test_fitting_finds_the_judge_that_knows_the_better_caption():
    rng = np.random.default_rng(0)
    images = 60
    gains = [rng.uniform(0, 1, 6) for _ in range(images)]
    consensus = [g + rng.normal(0, 0.6, 6) for g in gains]  # a noisy judge
    signals = [
        {
            "second_opinion": g + rng.normal(0, 0.2, 6),  # a better one
            "word_support": rng.normal(0, 1, 6),  # one that knows nothing
        }
        for g in gains
    ]
    weights = fit_weights(consensus, signals, gains, ["second_opinion", "word_support"])
    assert weights["second_opinion"] >= 1.5 and weights["word_support"] <= 0.5
    alone = np.mean([g[np.argmax(c)] for g, c in zip(gains, consensus, strict=True)])
    fitted = cross_validated_gain(consensus, signals, gains, ["second_opinion", "word_support"], repeats=2)
    assert fitted > alone + 0.05


def test_int8_weights_load_within_half_a_step_of_the_originals(tiny_run, tmp_path):
    from ml.artifact import SCALE_SUFFIX, WEIGHTS, load_decoder, model_version

    model = tmp_path / "model"
    shutil.copytree(tiny_run, model)
    _, before, _ = load_decoder(model)
    version = model_version(model)
    proc = run_ml("compress", "--model", str(model))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["bytes_after"] < 0.6 * report["bytes_before"]
    with np.load(model / WEIGHTS) as stored:
        kinds = {k: stored[k].dtype for k in stored.files}
    assert (
        kinds["embedding/embeddings"] == np.int8
        and kinds["embedding/embeddings" + SCALE_SUFFIX] == np.float32
    )
    _, after, _ = load_decoder(model)
    for old, new in zip(before.weights, after.weights, strict=True):
        a, b = old.numpy(), new.numpy()
        if a.ndim < 2:
            np.testing.assert_allclose(b, a.astype(np.float16), rtol=0, atol=0)
            continue
        axis = 1 if "embedding" in old.path else 0
        step = np.abs(a).max(axis=axis, keepdims=True) / 127.0
        assert np.all(np.abs(a - b) <= step / 2 + 1e-6), old.path
    assert model_version(model) != version  # other weights, another model version


def test_a_second_opinion_scores_a_caption_as_its_own_decoder_does(tiny_run):
    from ml.artifact import load_decoder
    from ml.captioner import load_captioner
    from ml.second_opinion import SecondOpinion
    from ml.vocab import tokenize

    captioner = load_captioner(tiny_run)
    images = sorted((FLICKR8K / "images").glob("*.jpg"))[:3]
    feats = captioner.encoder.encode(images)
    greedy = captioner.caption_features(feats, beam_size=1)
    config, decoder, vocab = load_decoder(tiny_run)
    judge = SecondOpinion(decoder, vocab, config["encoder"]["feature_shape"])
    words = [[c.words for c in per_image] for per_image in greedy]
    said = judge.mean_log_probs(feats, words)
    for per_image, mean in zip(greedy, said, strict=True):
        c = per_image[0]
        assert mean[0] == pytest.approx(c.log_prob / (len(c.words) + 1), abs=1e-3)
    # Several candidates of different lengths in one pass, each its own: the same as one at a time.
    many = [[tokenize("a dog runs on the grass"), tokenize("a man"), words[0][0]]] * 2
    together = judge.mean_log_probs(feats[:2], many)
    for i in range(2):
        for j, cand in enumerate(many[i]):
            alone = judge.mean_log_probs(feats[i : i + 1], [[cand]])[0][0]
            assert together[i][j] == pytest.approx(alone, abs=1e-4)


def test_fit_rerank_weighs_the_judges_and_the_captioner_follows(tiny_broad_run, tiny_run, tmp_path):
    from ml.captioner import load_captioner
    from ml.second_opinion import SECOND_OPINION_DIR

    model = tmp_path / "model"
    shutil.copytree(tiny_broad_run, model)  # the session's tiny model stays without them
    proc = run_ml("fit-rerank", "--model", str(model), "--split", "train", "--limit", "8", "--quiet")
    assert proc.returncode == 2 and "does not rerank" in proc.stderr
    steps = [
        ("neighbours", "--dims", "4", "--beam-size", "4", "--neighbours", "2", "--root", "", "--quiet"),
        ("word-vectors", "--dims", "4", "--min-photos", "1", "--quiet"),
        ("second-opinion", "--from", str(tiny_run)),
    ]
    for step in steps:
        proc = run_ml(step[0], "--model", str(model), *step[1:])
        assert proc.returncode == 0, proc.stderr
    assert (model / SECOND_OPINION_DIR / "decoder.npz").is_file()
    proc = run_ml("fit-rerank", "--model", str(model), "--split", "train", "--limit", "8", "--quiet")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["style"] == "flickr8k" and report["images"] == 8  # no router: the model's own style
    # No photo projection (image_text.npz) in this model: no sentence_match to weigh.
    judges = {"second_opinion", "word_support"}
    assert set(report["weights"]) == judges
    cider = report["cider"]
    assert cider["best_of_candidates"] >= cider["fitted"] >= cider["consensus"]
    config = json.loads((model / "config.json").read_text())
    assert config["decoding"]["rerank_weights"] == {"flickr8k": report["weights"]}

    captioner = load_captioner(model)
    assert captioner.second_opinion is not None and captioner.word_vectors is not None
    images = sorted((FLICKR8K / "images").glob("*.jpg"))[:3]
    captioner.rerank_weights["flickr8k"] = {"second_opinion": 1.0, "word_support": 1.0, "sentence_match": 1.0}
    for result in captioner.caption(images, n_best=4):
        cands = result.candidates
        assert all(set(c.signals) == judges for c in cands)
        score = combined(
            np.array([c.consensus for c in cands]),
            {n: np.array([c.signals[n] for c in cands]) for n in judges},
            captioner.rerank_weights["flickr8k"],
        )
        assert list(score) == sorted(score, reverse=True)  # the N-best list is in the judges' order
    # A style without weights is reranked by consensus alone and its signals are not computed.
    captioner.rerank_weights = {"cc": {"second_opinion": 1.0}}
    for result in captioner.caption(images, n_best=4):
        assert all(not c.signals for c in result.candidates)
        assert [c.consensus for c in result.candidates] == sorted(
            (c.consensus for c in result.candidates), reverse=True
        )


def test_a_second_opinion_must_read_the_same_features(tiny_run, tmp_path):
    from ml.artifact import ModelError
    from ml.second_opinion import add_second_opinion

    model, other = tmp_path / "model", tmp_path / "other"
    shutil.copytree(tiny_run, model)
    shutil.copytree(tiny_run, other)
    config = json.loads((other / "config.json").read_text())
    config["encoder"]["name"] = "inception_v3_offline"
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="must read the same"):
        add_second_opinion(model, other)
    assert not (model / "second_opinion").exists()
    proc = run_ml("second-opinion", "--model", str(model), "--from", str(tmp_path / "missing"))
    assert proc.returncode == 2 and "not a model directory" in proc.stderr
