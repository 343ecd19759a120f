"""Tokenisation and the vocabulary saved with every model."""

from __future__ import annotations

import pytest

from ml.vocab import Vocabulary, detokenize, tokenize


def test_tokenize_lowercases_and_drops_punctuation():
    assert tokenize("A dog's ball, mid-air!  Two   kids.") == [
        "a",
        "dog",
        "'s",
        "ball",
        "mid-air",
        "two",
        "kids",
    ]


def test_the_possessive_is_one_token_however_written_and_joins_its_word_again():
    # Flickr8k writes "horse 's", other data "horse's": both are the metrics' PTB form.
    assert tokenize("A girl holding a horse 's lead") == tokenize("a girl holding a horse's lead")
    assert tokenize("a man's face")[1:3] == ["man", "'s"]
    assert detokenize(tokenize("A man 's face")) == "a man's face"
    assert tokenize("don't") == ["don't"]


def test_style_tokens_start_captions_and_are_never_words(tmp_path):
    vocab = Vocabulary.build(["a dog runs", "a red car"], styles=["flickr8k", "cc"])
    assert vocab.itos[-2:] == ["<style:flickr8k>", "<style:cc>"]
    ids = vocab.encode("a dog runs", style="cc")
    assert ids[0] == vocab.stoi["<style:cc>"] and vocab.encode("a dog")[0] == vocab.stoi["<style:flickr8k>"]
    assert vocab.decode(ids) == ["a", "dog", "runs"]
    assert set(vocab.non_word_ids) >= {vocab.pad_id, vocab.start_id, vocab.unk_id, ids[0]}
    vocab.save(tmp_path / "v.json")
    again = Vocabulary.load(tmp_path / "v.json")
    assert again.itos == vocab.itos and again.styles == ["flickr8k", "cc"]
    with pytest.raises(ValueError, match="unknown caption style 'coco'"):
        vocab.encode("a dog", style="coco")
    # A model without styles starts from <start>, as before.
    assert Vocabulary.build(["a dog"]).encode("a dog")[0] == Vocabulary.start_id


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
