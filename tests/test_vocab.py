"""Tokenisation and the vocabulary saved with every model."""

from __future__ import annotations

from ml.vocab import Vocabulary, tokenize


def test_tokenize_lowercases_and_drops_punctuation():
    assert tokenize("A dog's ball, mid-air!  Two   kids.") == ["a", "dog's", "ball", "mid-air", "two", "kids"]


def test_build_respects_size_and_min_count():
    captions = ["a dog runs", "a dog sits", "a cat sits", "zebra"]
    vocab = Vocabulary.build(captions, max_size=7, min_count=1)
    assert vocab.itos[:4] == ["<pad>", "<start>", "<end>", "<unk>"]
    assert vocab.itos[4:] == ["a", "dog", "sits"]  # most frequent first, ties alphabetical
    assert len(Vocabulary.build(captions, min_count=2)) == 4 + 3


def test_encode_decode_round_trip_and_unknowns(tmp_path):
    vocab = Vocabulary.build(["a dog runs on grass"])
    ids = vocab.encode("A dog runs on snow", max_len=10)
    assert ids[0] == vocab.start_id and ids[-1] == vocab.end_id
    assert vocab.decode(ids) == ["a", "dog", "runs", "on", "<unk>"]
    assert len(vocab.encode("a dog runs on grass", max_len=2)) == 4
    vocab.save(tmp_path / "v.json")
    assert Vocabulary.load(tmp_path / "v.json").itos == vocab.itos
