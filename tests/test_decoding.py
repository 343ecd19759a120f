"""Greedy and beam search, N-best lists, attention, and a saved model reloading identically."""

from __future__ import annotations

import numpy as np
from conftest import FLICKR8K

from ml.artifact import load_decoder, model_version
from ml.captioner import Captioner, load_captioner
from ml.data import load_dataset
from ml.decode import Decoder


def _features(captioner: Captioner, n_train: int = 8, n_dev: int = 6) -> np.ndarray:
    train = load_dataset("flickr8k", FLICKR8K, split="train").images()[:n_train]
    dev = load_dataset("flickr8k", FLICKR8K, split="dev").images()[:n_dev]
    return captioner.encoder.encode(train + dev)


def test_beam_width_one_equals_greedy(tiny_captioner):
    feats = _features(tiny_captioner)
    decoder = tiny_captioner.decoder
    greedy = decoder.greedy(feats, max_len=25)
    beam = decoder.beam(feats, beam_size=1, max_len=25)
    assert [g.ids for g in greedy] == [b[0].ids for b in beam]
    np.testing.assert_allclose([g.log_prob for g in greedy], [b[0].log_prob for b in beam], atol=1e-4)


def test_n_best_lists_are_sorted_distinct_and_scored(tiny_captioner):
    feats = _features(tiny_captioner)
    for cands in tiny_captioner.caption_features(feats, beam_size=5, n_best=5):
        assert len(cands) == 5
        scores = [c.score for c in cands]
        assert scores == sorted(scores, reverse=True)
        assert len({c.text for c in cands}) == 5
        assert all(c.log_prob <= 0 for c in cands)
        best = cands[0]
        assert best.attention.shape == (len(best.words), 3, 3)
        np.testing.assert_allclose(best.attention.sum(axis=(1, 2)), 1.0, atol=1e-4)


def test_beam_search_finds_captions_at_least_as_probable_as_greedy(tiny_captioner):
    feats = _features(tiny_captioner)
    greedy = tiny_captioner.caption_features(feats, beam_size=1)
    beam = tiny_captioner.caption_features(feats, beam_size=4, length_penalty=0.0)
    for g, b in zip(greedy, beam, strict=True):
        assert b[0].log_prob >= g[0].log_prob - 1e-4


def test_length_penalty_and_max_len(tiny_captioner):
    feats = _features(tiny_captioner, 2, 2)
    short = tiny_captioner.caption_features(feats, beam_size=3, max_len=4)
    for cands in short:
        assert all(len(c.words) <= 4 for c in cands)
    normalised = tiny_captioner.caption_features(feats, beam_size=3, length_penalty=1.0)
    for cands in normalised:
        c = cands[0]
        assert np.isclose(c.score, c.log_prob / (len(c.words) + 1), atol=1e-5)


def test_saved_model_reloads_with_identical_captions(tiny_run, tiny_captioner):
    feats = _features(tiny_captioner)
    again = load_captioner(tiny_run)
    assert again.version == tiny_captioner.version == model_version(tiny_run)
    a = tiny_captioner.caption_features(feats, beam_size=3)
    b = again.caption_features(feats, beam_size=3)
    assert [[c.text for c in x] for x in a] == [[c.text for c in x] for x in b]
    np.testing.assert_allclose([x[0].score for x in a], [x[0].score for x in b], atol=1e-6)
    # The float16 artifact decodes like the float32 training checkpoint.
    config, decoder, vocab = load_decoder(tiny_run)
    from ml.artifact import load_weights

    load_weights(decoder, tiny_run / "checkpoints" / "decoder.npz")
    full = Captioner(tiny_captioner.encoder, Decoder(decoder, vocab), config)
    c = full.caption_features(feats[:8], beam_size=3)
    assert [x[0].text for x in c] == [x[0].text for x in a[:8]]
    np.testing.assert_allclose([x[0].score for x in c], [x[0].score for x in a[:8]], atol=0.02)


def test_many_images_in_one_batch_match_one_at_a_time(tiny_captioner):
    feats = _features(tiny_captioner, 4, 4)
    together = tiny_captioner.caption_features(feats, beam_size=3)
    alone = [tiny_captioner.caption_features(feats[i : i + 1], beam_size=3)[0] for i in range(len(feats))]
    assert [[c.text for c in x] for x in together] == [[c.text for c in x] for x in alone]


def test_special_tokens_are_never_generated(tiny_run, tiny_captioner):
    captioner = load_captioner(tiny_run)
    model, vocab = captioner.decoder.model, captioner.vocab
    # Make <unk> and <start> the model's favourite words: decoding must still refuse them.
    bias = model.get_layer("logits").bias
    favoured = bias.numpy()
    favoured[[vocab.unk_id, vocab.start_id]] += 50.0
    bias.assign(favoured)
    feats = _features(tiny_captioner, 2, 2)
    for k in (1, 3):
        for cands in captioner.caption_features(feats, beam_size=k):
            for c in cands:
                assert c.words and not {"<unk>", "<start>", "<pad>"} & set(c.words), c.text
