"""A second decoder's opinion of the beam's candidates: how likely it finds each, word by word.

The shipped decoder was trained by self-critical training, which sharpens it towards what scored well
on its training photos; a decoder trained only by cross-entropy on people's captions (the
Flickr8k-only model) is an independent judge of which candidate reads like what a person would write
of this photo. Its mean log-probability per word (and <end>) of each candidate, under teacher
forcing, is one of the reranking signals (ml/rerank_score.py): Flickr8k dev CIDEr +1.0 on its own
beside consensus on photos the weights were not fitted on, +2 with the word judges (models/NOTES.md).
One forced pass over the candidates, no search; still about a third of the beam search's arithmetic,
which is why the default model goes without.

Stored as the model directory's `second_opinion/` folder, itself a model directory (config.json,
vocab.json, decoder.npz in int8): `python -m ml second-opinion --model DIR --from OTHER`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from ml.artifact import CONFIG, VOCAB, WEIGHTS, ModelError, compress_weights, load_decoder
from ml.model import CaptionDecoder
from ml.vocab import Vocabulary

SECOND_OPINION_DIR = "second_opinion"
_MAX_SEQUENCES = 160  # per forced pass: the logits are [sequences, words, vocabulary]


class SecondOpinion:
    def __init__(self, decoder: CaptionDecoder, vocab: Vocabulary, feature_shape: Sequence[int]) -> None:
        self.decoder, self.vocab = decoder, vocab
        self.feature_shape = list(feature_shape)
        c = decoder.config

        # Per-image work once (projecting 49 x 1280 features is most of a forced pass), then shared
        # by that image's candidates.
        self._prepare = tf.function(
            lambda f, k: decoder.prepare(f, k if c.concept_dim else None, training=False),
            input_signature=[
                tf.TensorSpec([None, None, c.feature_dim], tf.float32),
                tf.TensorSpec([None, c.concept_dim], tf.float32),
            ],
        )

        def mean_log_probs(prepared, owner, words, lengths):
            mine = tuple(tf.gather(x, owner) for x in prepared)
            logits, _ = decoder.forced(mine, words[:, :-1], training=False)  # [S, T, V]
            said = tf.gather(tf.nn.log_softmax(logits), words[:, 1:], batch_dims=2)  # [S, T]
            mask = tf.sequence_mask(lengths, tf.shape(said)[1], tf.float32)
            return tf.reduce_sum(said * mask, axis=1) / tf.cast(lengths, tf.float32)

        self._mean_log_probs = tf.function(mean_log_probs, reduce_retracing=True)

    def mean_log_probs(
        self,
        features: np.ndarray,
        candidates: Sequence[Sequence[Sequence[str]]],
        concepts: np.ndarray | None = None,
        styles: Sequence[str | None] | None = None,
    ) -> list[np.ndarray]:
        """Per image (feature grids [N, P, C], its candidates' words), each candidate's mean
        log-probability per word under this decoder. Words it does not know count as <unk>. A judge
        trained on several caption styles reads each image's candidates in its style (`styles`),
        where it has that style; else in its own."""
        c = self.decoder.config
        if c.concept_dim and concepts is None:
            raise ValueError("this decoder was trained with concept inputs: pass concepts")
        stoi, unk = self.vocab.stoi, self.vocab.unk_id
        own = self.vocab.styles
        firsts = [self.vocab.first_id(s if s in own else None) for s in styles or [None] * len(candidates)]
        sequences = [
            [first, *(stoi.get(w, unk) for w in words), self.vocab.end_id]
            for first, per_image in zip(firsts, candidates, strict=True)
            for words in per_image
        ]
        owner = np.repeat(np.arange(len(candidates)), [len(p) for p in candidates]).astype(np.int32)
        given = (
            np.asarray(concepts, np.float32) if c.concept_dim else np.zeros((len(candidates), 0), np.float32)
        )
        prepared = self._prepare(tf.convert_to_tensor(features, tf.float32), tf.convert_to_tensor(given))
        scores = np.zeros(len(sequences), np.float32)
        by_length = np.argsort([len(s) for s in sequences], kind="stable")  # little padding per pass
        for lo in range(0, len(sequences), _MAX_SEQUENCES):
            picked = by_length[lo : lo + _MAX_SEQUENCES]
            chunk = [sequences[i] for i in picked]
            words = np.zeros((len(chunk), len(chunk[-1])), np.int32)  # <pad> after <end>: masked out
            for i, seq in enumerate(chunk):
                words[i, : len(seq)] = seq
            lengths = np.asarray([len(seq) - 1 for seq in chunk], np.int32)  # the words and <end>
            scores[picked] = self._mean_log_probs(
                prepared, tf.constant(owner[picked]), tf.constant(words), tf.constant(lengths)
            ).numpy()
        bounds = np.cumsum([0] + [len(p) for p in candidates])
        return [scores[bounds[i] : bounds[i + 1]] for i in range(len(candidates))]

    def knows(self, words: Sequence[str]) -> bool:
        """Whether every word is in this decoder's vocabulary. A judge that never learnt a word can
        only call it unlikely, and so would push captions of what it has not seen out of the first
        place (the Flickr8k-only model has no "banana", "sandwich" or "sink"): it abstains instead."""
        return all(w in self.vocab.stoi for w in words)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> SecondOpinion | None:
        """The model directory's second opinion, or None if it has none."""
        folder = Path(directory) / SECOND_OPINION_DIR
        if not (folder / CONFIG).is_file():
            return None
        config, decoder, vocab = load_decoder(folder)
        return cls(decoder, vocab, config["encoder"]["feature_shape"])


def add_second_opinion(directory: str | os.PathLike, source: str | os.PathLike) -> Path:
    """Copy model directory `source`'s decoder (int8) into `directory` as its second opinion. Both must
    read the same encoder's features."""
    config, _, _ = load_decoder(source)  # refuses an incomplete or unreadable source
    own, _, _ = load_decoder(directory)
    if config["encoder"]["name"] != own["encoder"]["name"] or list(
        config["encoder"]["feature_shape"]
    ) != list(own["encoder"]["feature_shape"]):
        raise ModelError(
            f"{source} reads {config['encoder']['name']} features, {directory} "
            f"{own['encoder']['name']}: a second opinion must read the same ones"
        )
    out = Path(directory) / SECOND_OPINION_DIR
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name in (CONFIG, VOCAB, WEIGHTS):
        shutil.copyfile(Path(source) / name, tmp / name)
    compress_weights(tmp / WEIGHTS)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out
