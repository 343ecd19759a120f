"""Self-critical training: the decoder samples captions and learns from their CIDEr-D.

Cross-entropy teaches the next word of a human caption; the captions people read come from
the decoder's own words. Self-critical sequence training (Rennie et al. 2017) closes that gap:
sample K captions per image, score each against the image's references with CIDEr-D, and
raise the log-probability of those better than the image's other samples (the baseline of
Luo 2020, "A Better Variant of Self-Critical Sequence Training": the mean reward of the
other K-1 samples, so no greedy decode is needed).

The reward is CIDEr-D (ml/cider.py) with the document frequencies of the whole training set, on the
vocabulary's token ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import keras
import numpy as np
import tensorflow as tf

from ml.cider import CiderD
from ml.model import CaptionDecoder
from ml.train_step import Trainables
from ml.vocab import Vocabulary

if TYPE_CHECKING:
    from ml.encoder_top import TunedTop


def _words(ids: np.ndarray, end_id: int) -> list[int]:
    """The word ids before <end> (or padding) of w1 .. wn <end> 0 .."""
    out = []
    for t in ids:
        if t == end_id or t == 0:
            break
        out.append(int(t))
    return out


class SelfCritical:
    """Sampling, rewards and the policy-gradient step for one training split.

    `image_index` maps each caption of `tokens` to its image (a row of the split's features);
    every image is trained in the style of its own captions (their first token). With a
    fine-tuned `top`, `step` is given block inputs, and the top trains by `top_optimizer` (alone, with
    `train_decoder` False).
    """

    def __init__(
        self,
        decoder: CaptionDecoder,
        optimizer: keras.optimizers.Optimizer,
        vocab: Vocabulary,
        tokens: Sequence[np.ndarray],
        image_index: np.ndarray,
        samples: int = 5,
        max_len: int = 30,
        clip_norm: float = 5.0,
        top: TunedTop | None = None,
        top_optimizer: keras.optimizers.Optimizer | None = None,
        train_decoder: bool = True,
    ) -> None:
        if samples < 2:
            raise ValueError("self-critical training needs at least 2 samples per image (the baseline)")
        self.decoder, self.vocab, self.samples, self.max_len = decoder, vocab, samples, max_len
        num_images = int(image_index.max()) + 1 if len(image_index) else 0
        refs: list[list[list[int]]] = [[] for _ in range(num_images)]
        self.first_ids = np.zeros(num_images, np.int32)
        for toks, row in zip(tokens, image_index, strict=True):
            refs[row].append(_words(toks[1:], vocab.end_id))
            self.first_ids[row] = toks[0]
        self.cider = CiderD(refs)
        c = decoder.config
        ban = np.zeros(c.vocab_size, np.float32)
        ban[vocab.non_word_ids] = -1e9  # never sampled: <pad>, <start>, <unk>, style tokens
        self._ban = tf.constant(ban)
        self.params = Trainables(decoder, optimizer, top, top_optimizer, train_decoder)
        spec = [
            tf.TensorSpec([None, None, self.params.input_dim], tf.float32),
            tf.TensorSpec([None, c.concept_dim], tf.float32),
        ]
        self._sample = tf.function(
            self._sample_graph, input_signature=[*spec, tf.TensorSpec([None], tf.int32)]
        )
        self._update = tf.function(
            self._update_graph,
            input_signature=[
                *spec,
                tf.TensorSpec([None, None], tf.int32),
                tf.TensorSpec([None], tf.float32),
            ],
        )
        self.clip_norm = clip_norm

    @property
    def num_images(self) -> int:
        return len(self.first_ids)

    def batches(self, images_per_step: int, rng: np.random.Generator) -> list[np.ndarray]:
        """Every image once, in shuffled groups of `images_per_step` (the last, short one dropped)."""
        order = rng.permutation(self.num_images)
        size = min(images_per_step, self.num_images)
        return [order[i : i + size] for i in range(0, len(order) - size + 1, size)]

    # -- graphs ------------------------------------------------------------------------
    def _sample_graph(self, features, concepts, first):
        """K sampled captions per image: [B*K, T] ids, <end> then 0s after it (T <= max_len + 1)."""
        d, k = self.decoder, self.samples
        features = self.params.features(features)  # the tuned top (a second, small run), if any
        prepared = d.prepare(features, concepts if d.config.concept_dim else None, training=False)
        feats, keys, state, word_bias, out_bias = (tf.repeat(x, k, axis=0) for x in prepared)
        words = tf.repeat(first, k)
        n = tf.shape(words)[0]
        end = self.vocab.end_id

        def body(t, words, state, done, out):
            log_probs, state, _ = d.step(words, state, feats, keys, word_bias, out_bias)
            nxt = tf.random.categorical(log_probs + self._ban, 1, dtype=tf.int32)[:, 0]
            nxt = tf.where(t == self.max_len, end, nxt)  # the last step always ends the caption
            nxt = tf.where(done, 0, nxt)
            return t + 1, nxt, state, done | tf.equal(nxt, end), out.write(t, nxt)

        def cond(t, words, state, done, out):
            return tf.logical_and(t <= self.max_len, tf.logical_not(tf.reduce_all(done)))

        out = tf.TensorArray(tf.int32, size=0, dynamic_size=True)
        _, _, _, _, out = tf.while_loop(
            cond, body, (tf.constant(0), words, state, tf.zeros([n], tf.bool), out)
        )
        return tf.transpose(out.stack())

    def _update_graph(self, features, concepts, tokens, advantages):
        """One policy-gradient step on B images' B*K sampled `tokens` (first token included):
        -advantage x log P(caption), averaged over captions."""
        d, k = self.decoder, self.samples
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        with tf.GradientTape() as tape:
            # No dropout: the gradient is of the same policy that sampled the captions.
            features = self.params.features(features)
            prepared = d.prepare(features, concepts if d.config.concept_dim else None, training=False)
            logits, _ = d.forced([tf.repeat(x, k, axis=0) for x in prepared], inputs, training=False)
            mask = tf.cast(tf.not_equal(targets, 0), tf.float32)
            log_probs = tf.nn.log_softmax(logits + self._ban, axis=-1)
            token_lp = tf.gather(log_probs, targets, axis=-1, batch_dims=2) * mask
            loss = -tf.reduce_mean(advantages * tf.reduce_sum(token_lp, axis=1))
        self.params.apply(tape.gradient(loss, self.params.variables), self.clip_norm)
        return loss, tf.reduce_sum(mask)

    # -- one step ----------------------------------------------------------------------
    def step(self, rows: np.ndarray, features: np.ndarray, concepts: np.ndarray) -> dict[str, float]:
        """Sample, reward and update on the images `rows` (their features [B,P,C] or, with a tuned
        top, block inputs [B,P,C_in]; concepts [B,K])."""
        k = self.samples
        sampled = self._sample(features, concepts, self.first_ids[rows]).numpy()  # [B*K, T]
        end = self.vocab.end_id
        rewards = np.asarray(
            [self.cider.score(int(rows[i // k]), _words(s, end)) for i, s in enumerate(sampled)], np.float32
        ).reshape(-1, k)
        baseline = (rewards.sum(axis=1, keepdims=True) - rewards) / (k - 1)
        tokens = np.concatenate([np.repeat(self.first_ids[rows], k)[:, None], sampled], axis=1)
        loss, count = self._update(
            features,
            concepts,
            tokens.astype(np.int32),
            (rewards - baseline).reshape(-1),
        )
        return {"loss": float(loss), "reward": float(rewards.mean()), "tokens": float(count)}
