"""The shipped model's set-up on a tiny scale: two sources with style tokens, concept input,
repeat blocking, tags and a calibrated confidence (real photos, a real tiny TensorFlow model)."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
import tensorflow as tf
from conftest import FLICKR8K, IMG2DATASET_FIXTURE, run_ml

from ml.calibrate import OUT_OF_DOMAIN_KINDS, out_of_domain_image
from ml.captioner import load_captioner
from ml.data import load_dataset
from ml.decode import Decoder
from ml.vocab import detokenize, tokenize


@pytest.fixture(scope="session")
def broad(tiny_broad_run):
    return load_captioner(tiny_broad_run)


def test_one_decoder_learns_both_sources_and_decodes_in_the_main_style(
    broad, tiny_broad_run, tiny_references
):
    config = json.loads((tiny_broad_run / "config.json").read_text())
    assert config["decoding"]["style"] == "flickr8k" and config["decoder"]["concept_dim"] == 1000
    assert [s["style"] for s in config["data"]["sources"]] == ["flickr8k", "cc"]
    assert broad.vocab.styles == ["flickr8k", "cc"]
    results = broad.caption(list(tiny_references), beam_size=3)
    right = sum(r.caption == detokenize(tokenize(tiny_references[r.image])) for r in results)
    assert right >= 6, [r.caption for r in results]
    # Asked for the other style, the same decoder says what it learned for the other source.
    cc = load_dataset("img2dataset", IMG2DATASET_FIXTURE).captions_by_image()
    feats = broad.encoder.encode(list(cc))
    in_cc_style = Decoder(broad.decoder.model, broad.vocab, broad.encoder.concept_probs, style="cc")
    said = [detokenize(broad.vocab.decode(h.ids)) for h in in_cc_style.greedy(feats, 25)]
    assert sum(s == detokenize(tokenize(cc[p][0])) for s, p in zip(said, cc, strict=True)) >= 3, said


def test_concepts_reach_the_decoder(broad):
    feats = np.random.default_rng(0).uniform(0, 6, (2, 9, 1280)).astype(np.float32)
    concepts = broad.encoder.concept_probs(feats)
    a = broad.decoder.prepare(feats, concepts)
    b = broad.decoder.prepare(feats, concepts[::-1].copy())
    # Same grids, other concepts: another first state and other per-step biases.
    for x, y in zip(a[2:], b[2:], strict=True):
        assert not np.allclose(x.numpy(), y.numpy())
    with pytest.raises(ValueError, match="concepts_of"):
        Decoder(broad.decoder.model, broad.vocab)


def test_results_carry_tags_and_captions_read_as_text(broad, tiny_references):
    (result,) = broad.caption([next(iter(tiny_references))])
    line = result.to_json()
    assert set(line) == {"image", "caption", "score", "candidates", "tags", "confidence"}
    assert line["tags"] == [t.to_json() for t in result.tags]
    assert "<style" not in line["caption"] and " 's" not in line["caption"]


def test_repeats_are_ruled_out_while_decoding(broad):
    vocab = broad.vocab
    ids = {w: vocab.stoi[w] for w in ("a", "man", "in", "and") if w in vocab.stoi}
    assert len(ids) == 4, "the tiny vocabulary lacks a test word"
    dec = broad.decoder
    history = np.asarray(
        [
            [ids["a"], ids["man"], ids["and"]],  # "a man and" -> not "man" again
            [ids["a"], ids["man"], ids["a"]],  # "a man a" -> no "a a", no "man" again
            [ids["man"], ids["in"], ids["a"]],  # function words may recur, just not twice in a row
        ],
        np.int32,
    )
    log_probs = tf.zeros((3, len(vocab)))
    allowed = dec._allowed(log_probs, history)
    assert allowed[0, ids["man"]] == -np.inf and np.isfinite(allowed[0, ids["a"]])
    assert allowed[1, ids["a"]] == -np.inf and allowed[1, ids["man"]] == -np.inf
    assert allowed[2, ids["a"]] == -np.inf and np.isfinite(allowed[2, ids["in"]])
    # A phrase is never said twice: after "a man in and a man", "in" would repeat "a man in".
    long = np.asarray([[ids["a"], ids["man"], ids["in"], ids["and"], ids["a"], ids["man"]]], np.int32)
    assert dec._allowed(tf.zeros((1, len(vocab))), long)[0, ids["in"]] == -np.inf
    # Style tokens, <start>, <pad> and <unk> are never said.
    assert (allowed[:, vocab.non_word_ids] == -np.inf).all()
    # Turned off (models from before it), nothing but the non-words is ruled out.
    plain = Decoder(dec.model, vocab, broad.encoder.concept_probs, block_repeats=False)
    assert np.isfinite(plain._allowed(log_probs, history)[0, ids["man"]])


def test_calibrated_confidence_doubts_pictures_no_caption_describes(
    tiny_broad_run, tiny_references, tmp_path
):
    model = tmp_path / "model"
    shutil.copytree(tiny_broad_run, model, ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
    # The 8 training photos (captioned right, by heart) and 4 pictures of each out-of-domain kind.
    proc = run_ml(
        "calibrate",
        "--model",
        str(model),
        "--set",
        f"train:flickr8k:{FLICKR8K}:train:8",
        "--out-of-domain",
        "4",
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(report["held_out"]) == {"train", "out-of-domain"}
    assert (model / "confidence.json").is_file() and (model / "confidence.png").read_bytes()[:4] == b"\x89PNG"
    card = (model / "README.md").read_text()
    assert "## Confidence" in card and "confidence.png" in card
    captioner = load_captioner(model)
    rng = random.Random(123)  # other pictures than the fit saw
    odd = [out_of_domain_image(kind, rng) for kind in OUT_OF_DOMAIN_KINDS]
    photos = captioner.caption(list(tiny_references)[:4])
    doubtful = captioner.caption(odd)
    assert all(0.0 <= r.confidence <= 1.0 for r in photos + doubtful)
    assert min(r.confidence for r in photos) > max(r.confidence for r in doubtful), (
        [r.confidence for r in photos],
        [r.confidence for r in doubtful],
    )
    assert max(r.confidence for r in doubtful) < 0.5


def test_the_caption_command_takes_a_style_and_refuses_an_unknown_one(tiny_broad_run, tiny_references):
    image = next(iter(tiny_references))
    proc = run_ml("caption", "--model", str(tiny_broad_run), "--style", "cc", "--jsonl", image)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["caption"]
    proc = run_ml("caption", "--model", str(tiny_broad_run), "--style", "coco", image)
    assert (
        proc.returncode == 2
        and "unknown caption style 'coco'" in proc.stderr
        and "flickr8k, cc" in proc.stderr
    )


def test_tag_boost_favours_the_concepts_words_not_yet_said(broad):
    from ml.encoders.imagenet import imagenet_classes

    vocab = broad.vocab
    assert "dog" in vocab.stoi
    concepts = np.zeros((1, 1000), np.float32)
    concepts[0, imagenet_classes().index("golden retriever")] = 0.6
    concepts[0, imagenet_classes().index("tennis ball")] = 0.4
    feats = np.zeros((1, 9, 1280), np.float32)
    boosted = Decoder(broad.decoder.model, vocab, broad.encoder.concept_probs, tag_boost=2.0)
    bonus = boosted.tag_bonus(feats, concepts)
    assert bonus[0, vocab.stoi["dog"]] == pytest.approx(1.2, abs=1e-5)
    assert bonus[0, vocab.non_word_ids].max() == 0 and bonus.max() <= 2.0
    said = np.asarray([[vocab.stoi["dog"]]], np.int32)
    plain = boosted._allowed(tf.zeros((1, len(vocab))), np.zeros((1, 0), np.int32), bonus)
    after = boosted._allowed(tf.zeros((1, len(vocab))), said, bonus)
    assert plain[0, vocab.stoi["dog"]] == pytest.approx(1.2) and after[0, vocab.stoi["dog"]] <= 0
    # Off by default: no bonus at all.
    assert broad.decoder.tag_bonus(feats, concepts) is None


def test_the_router_gives_each_image_its_sources_style(tiny_broad_run, tiny_run, tiny_references, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_broad_run, model, ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
    proc = run_ml("route", "--model", str(model), "--quiet")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["images"] == {"flickr8k": 8, "cc": 4}  # the training images (one fixture key is dev)
    routed = load_captioner(model)
    assert routed.router is not None and load_captioner(model, "cc").router is None
    cc = list(load_dataset("img2dataset", IMG2DATASET_FIXTURE).captions_by_image())
    flickr = list(tiny_references)
    assert routed.router.route(routed.encoder.encode(flickr + cc)) == ["flickr8k"] * 8 + ["cc"] * len(cc)
    # Each image is captioned in its own style: what the one-style decoders say for it.
    in_style = {s: load_captioner(model, s) for s in ("flickr8k", "cc")}
    for image, style in zip(flickr[:2] + cc[:2], ["flickr8k"] * 2 + ["cc"] * 2, strict=True):
        assert routed.caption([image])[0].caption == in_style[style].caption([image])[0].caption
    proc = run_ml("route", "--model", str(tiny_run), "--quiet")
    assert proc.returncode == 2 and "not trained on several styles" in proc.stderr


def test_a_run_can_start_from_a_model(tiny_broad_run, tmp_path):
    from conftest import TINY

    from ml.artifact import load_decoder
    from ml.config import TrainConfig
    from ml.train import train

    cfg = TrainConfig(
        **{**TINY, "batch_size": 8, "learning_rate": 1e-9},
        epochs=1,
        styles=True,
        concepts=True,
        init_from=str(tiny_broad_run),
    )
    train(cfg, tmp_path / "ft", progress=False)
    _, start, start_vocab = load_decoder(tiny_broad_run)
    _, tuned, vocab = load_decoder(tmp_path / "ft")
    assert vocab.itos == start_vocab.itos  # the starting model's words and styles, not rebuilt
    for a, b in zip(start.weights, tuned.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=2e-3)  # float16 on disk


def test_align_puts_photos_near_their_captions_in_the_sentence_space(tiny_broad_run, tmp_path):
    from ml.image_text import IMAGE_TEXT_FILE, embed_texts_cached
    from ml.text_embedding import DIMENSIONS

    model = tmp_path / "model"
    shutil.copytree(tiny_broad_run, model, ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
    assert (
        load_captioner(model)
        .caption([next(iter(load_dataset("img2dataset", IMG2DATASET_FIXTURE).images()))])[0]
        .image_embedding
        is None
    )  # no projection yet
    args = ["--batch-size", "6", "--epochs", "60", "--hidden", "64", "--quiet"]
    proc = run_ml("align", "--model", str(model), *args)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["images"] == 12 and info["epoch"] >= 1  # the tiny run has no dev split to score on
    assert (model / IMAGE_TEXT_FILE).is_file() and "Search by meaning" in (model / "README.md").read_text()

    # The captioner now gives each photo a unit vector in the sentence space, from the same forward
    # pass, near its own caption: the training photos find their captions among the others'.
    flickr = load_dataset("flickr8k", FLICKR8K, split="train").captions_by_image()
    cc = load_dataset("img2dataset", IMG2DATASET_FIXTURE, split="train").captions_by_image()
    images = list(flickr)[:8] + list(cc)
    captions = [(flickr | cc)[image][0] for image in images]
    results = load_captioner(model).caption(images)
    photos = np.stack([r.image_embedding for r in results])
    assert photos.shape == (12, DIMENSIONS) and np.allclose(np.linalg.norm(photos, axis=1), 1, atol=1e-4)
    assert all(r.features is not None and r.features.shape == (r.features.size,) for r in results)
    nearest = (photos @ embed_texts_cached(captions, progress=False).T).argmax(axis=1)
    assert (nearest == np.arange(12)).mean() >= 0.75


def test_short_queries_are_content_words_of_the_caption_in_order():
    from ml.image_text import short_queries

    rng = np.random.default_rng(0)
    caption = "A brown dog is running on the beach with a red ball"
    queries = short_queries(caption, 50, rng)
    content = ["brown", "dog", "running", "beach", "red", "ball"]
    assert len(queries) == 50 and {len(q.split()) for q in queries} == {1, 2, 3}
    for q in queries:
        words = q.split()
        assert all(w in content for w in words) and words == sorted(words, key=content.index)
    assert short_queries("a the of", 3, rng) == []  # nothing but stop words: no query
