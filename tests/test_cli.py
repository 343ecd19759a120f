"""`python -m ml ...` as a user runs it: the caption contract, attention pictures, evaluation."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import COCO_MINI, FLICKR8K, read_log, run_ml
from PIL import Image

from ml.vocab import detokenize, tokenize


@pytest.fixture(scope="module")
def odd_images(tmp_path_factory, tiny_references):
    """A folder of real photos in awkward forms, plus files that are not images."""
    folder = tmp_path_factory.mktemp("odd")
    photo = Image.open(next(iter(tiny_references))).convert("RGB")
    photo.convert("RGBA").save(folder / "rgba.png")
    photo.convert("P").save(folder / "palette.gif")
    photo.convert("L").save(folder / "grey.jpg")
    photo.convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(np.asarray(photo.convert("L"), np.uint16) * 257).save(folder / "deep.png")
    big = photo.resize((1600, 900))
    exif = Image.Exif()
    exif[0x0112] = 8
    big.save(folder / "rotated.jpg", exif=exif.tobytes())
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    (folder / "empty.png").write_bytes(b"")
    return folder


def test_caption_jsonl_contract(tiny_run, tiny_references, odd_images):
    images = list(tiny_references)[:2]
    # The command line itself, in its own process, as a user runs it.
    proc = run_ml(
        "caption",
        "--model",
        str(tiny_run),
        "--beam-size",
        "3",
        "--jsonl",
        *images,
        str(odd_images),
        own_process=True,
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 1, proc.stderr  # two of the inputs are not images
    assert len(lines) == 2 + 8
    by_name = {os.path.basename(x["image"]): x for x in lines}
    for path in images:
        line = by_name[os.path.basename(path)]
        assert set(line) == {"image", "caption", "score", "candidates", "tags", "confidence"}
        assert line["image"] == path
        assert line["caption"] == detokenize(tokenize(tiny_references[path]))
        assert line["confidence"] is None  # the tiny model is not calibrated
        assert all(set(t) == {"label", "score"} and 0.1 <= t["score"] <= 1 for t in line["tags"])
        assert [t["score"] for t in line["tags"]] == sorted((t["score"] for t in line["tags"]), reverse=True)
        assert line["candidates"][0] == {"text": line["caption"], "score": line["score"]}
        assert len(line["candidates"]) == 3
        assert [c["score"] for c in line["candidates"]] == sorted(
            (c["score"] for c in line["candidates"]), reverse=True
        )
    for name in ("rgba.png", "palette.gif", "grey.jpg", "cmyk.jpg", "deep.png", "rotated.jpg"):
        assert by_name[name]["caption"], name
    for name in ("corrupt.jpg", "empty.png"):
        assert set(by_name[name]) == {"image", "error"} and by_name[name]["error"], name
    assert "2 of 10 image(s) could not be captioned" in proc.stderr


def test_caption_plain_output_and_missing_default_model(tiny_run, tiny_references, tmp_path):
    image = next(iter(tiny_references))
    proc = run_ml("caption", "--model", str(tiny_run), image)
    assert proc.returncode == 0, proc.stderr
    path, caption, score = proc.stdout.strip().split("\t")
    assert path == image and caption == detokenize(tokenize(tiny_references[image])) and float(score) <= 0
    proc = run_ml("caption", image, env={"IMGCAP_DEFAULT_MODEL": str(tmp_path / "none")})
    assert proc.returncode == 2 and "no default model" in proc.stderr and "--model" in proc.stderr
    proc = run_ml("caption", "--model", str(tmp_path), image)
    assert proc.returncode == 2 and "not a model directory" in proc.stderr


def test_attention_picture(tiny_run, tiny_references, tmp_path):
    image = next(iter(tiny_references))
    out = tmp_path / "att.png"
    proc = run_ml("attention", "--model", str(tiny_run), image, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    words = proc.stdout.splitlines()[0].split()
    picture = Image.open(out)
    assert picture.format == "PNG"
    columns = min(4, len(words) + 1)
    assert (
        picture.width >= columns * 200 and picture.height >= ((len(words) + 1 + columns - 1) // columns) * 200
    )


def test_evaluate_prints_all_metrics_as_json(tiny_run, tmp_path):
    captions = tmp_path / "caps.jsonl"
    proc = run_ml(
        "evaluate",
        "--model",
        str(tiny_run),
        "--dataset",
        "flickr8k",
        "--root",
        str(FLICKR8K),
        "--split",
        "dev",
        "--limit",
        "12",
        "--beam-size",
        "2",
        "--captions",
        str(captions),
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["images"] == 12 and result["beam_size"] == 2
    assert set(result["metrics"]) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"}
    assert all(0 <= v <= 100 for v in result["metrics"].values())
    assert len(captions.read_text().splitlines()) == 12


def test_train_cli_on_coco_with_a_config_file_and_an_lstm(tmp_path):
    if not (COCO_MINI / "annotations").is_dir():
        pytest.skip("coco-mini not found")
    config = tmp_path / "tiny.toml"
    config.write_text(
        f'dataset = "coco"\nroot = "{COCO_MINI}"\ntrain_split = "val2017"\nencoder = "efficientnet_lite0"\n'
        "image_size = 64\nepochs = 2\nbatch_size = 16\nembed_dim = 32\nunits = 32\nfeature_proj_dim = 32\n"
        'attention_dim = 32\neval_every = 0\nrnn = "lstm"\nlearning_rate = 0.003\n'
    )
    proc = run_ml(
        "train", "--config", str(config), "--out", str(tmp_path / "run"), "--epochs", "3", "--quiet"
    )
    assert proc.returncode == 0, proc.stderr
    state = json.loads(proc.stdout.strip().splitlines()[-1])
    assert state["epoch"] == 3
    config_json = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config_json["data"]["train_images"] == 24 and config_json["data"]["train_captions"] >= 120
    assert config_json["decoder"]["rnn"] == "lstm"
    log = read_log(tmp_path / "run")
    assert float(log[-1]["ce"]) < float(log[0]["ce"])
    proc = run_ml("train", "--config", str(config), "--out", str(tmp_path / "run"), "--quiet")
    assert proc.returncode == 2 and "--resume" in proc.stderr


def test_sweep_scores_each_beam_and_length_penalty(tiny_run):
    proc = run_ml(
        "sweep",
        "--model",
        str(tiny_run),
        "--root",
        str(FLICKR8K),
        "--limit",
        "6",
        "--beams",
        "1",
        "2",
        "--length-penalties",
        "0",
        "1",
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    # greedy once (the penalty does not change it), then beam 2 with each penalty
    assert [(r["beam_size"], r["length_penalty"]) for r in rows] == [(1, 0.0), (2, 0.0), (2, 1.0)]
    assert all(set(r["metrics"]) >= {"BLEU-4", "CIDEr"} for r in rows)
    assert "| 2 | 1 |" in proc.stderr  # the markdown table


def test_average_writes_a_model_with_the_mean_weights(tiny_run, tmp_path):
    from ml.artifact import ModelError
    from ml.averaging import average_weights

    best, last = tiny_run / "decoder.npz", tiny_run / "checkpoints" / "decoder.npz"
    out = tmp_path / "avg"
    proc = run_ml("average", "--run", str(tiny_run), "--weights", str(best), str(last), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    with np.load(best) as a, np.load(last) as b, np.load(out / "decoder.npz") as m:
        for key in a.files:
            expected = (a[key].astype(np.float32) + b[key].astype(np.float32)) / 2
            np.testing.assert_allclose(m[key].astype(np.float32), expected, rtol=2e-3, atol=1e-3)
    proc = run_ml(
        "caption",
        "--model",
        str(tmp_path / "avg"),
        "--jsonl",
        str(FLICKR8K / "images" / "2090545563_a4e66ec76b.jpg"),
    )
    assert proc.returncode == 0 and json.loads(proc.stdout)["caption"], proc.stderr
    other = tmp_path / "other.npz"
    np.savez(other, embedding=np.zeros(3))
    with pytest.raises(ModelError, match="do not match"):
        average_weights([best, other])


def test_word_vectors_places_the_training_words_in_the_photo_space(tiny_run, tmp_path):
    import shutil

    from ml.word_vectors import WordVectors

    model = tmp_path / "model"
    shutil.copytree(tiny_run, model)  # the session's tiny model stays without them
    proc = run_ml("word-vectors", "--model", str(model), "--dims", "4", "--quiet")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["photos"] == 8 and info["words"] > 5 and info["sources"] == ["flickr8k:train (8 images)"]
    vectors = WordVectors.load(model)
    assert vectors.query_vector("dog").shape == (1280,)
    assert "word_vectors.npz" in (model / "README.md").read_text()


def test_word_vectors_of_one_caption_style_only(tiny_broad_run, tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_broad_run, model)
    proc = run_ml(
        "word-vectors", "--model", str(model), "--dims", "4", "--min-photos", "1", "--style", "cc", "--quiet"
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["sources"] == ["img2dataset:train (4 images)"] and info["penalty"] == 10.0
    proc = run_ml("word-vectors", "--model", str(model), "--style", "coco", "--quiet")
    assert proc.returncode == 2 and "no training source of style 'coco'" in proc.stderr
    assert "cc" in proc.stderr and "flickr8k" in proc.stderr  # what it has
