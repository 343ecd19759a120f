"""Greedy and beam-search decoding over a batch of images.

The decoder's step runs compiled on all live hypotheses of all images at once; the
bookkeeping (top-k, finished hypotheses, attention history) is done in numpy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from ml.concepts import label_probs
from ml.model import CaptionDecoder
from ml.vocab import FUNCTION_WORDS, Vocabulary


@dataclass
class Hypothesis:
    ids: list[int]  # word ids, without <start>, without <end>
    log_prob: float  # sum of token log-probabilities, <end> included when finished
    score: float  # length-normalised log_prob: what candidates are ranked by
    attention: np.ndarray  # [len(ids), P]
    finished: bool


def normalise(log_prob: float, length: int, length_penalty: float) -> float:
    """log_prob / length**alpha: alpha 0 ranks by raw probability, 1 by per-token probability."""
    return log_prob / max(length, 1) ** length_penalty


# Any word other than FUNCTION_WORDS said in the last REPEAT_WINDOW words is not said again
# ("a helmet and helmet"); function words may recur close together ("a man and a woman").
REPEAT_WINDOW = 3
NO_REPEAT_NGRAM = 3  # no word sequence of this length is said twice


class Decoder:
    """Wraps a CaptionDecoder with compiled per-image preparation and per-step functions.

    `concepts_of` maps feature grids to the concept vectors a decoder trained with them
    needs (the encoder's `concept_probs`); `style` picks the caption style of a model
    trained on several sources (default: its first, the style it was chosen for);
    `block_repeats` rules out repeated words and phrases (see FUNCTION_WORDS); `tag_boost`
    adds boost x P(label) to the log-probability of a concept label's word not said yet, a soft
    form of constrained beam search toward what the classifier sees (Anderson et al. 2017).
    """

    def __init__(
        self,
        model: CaptionDecoder,
        vocab: Vocabulary,
        concepts_of: Callable[[np.ndarray], np.ndarray] | None = None,
        style: str | None = None,
        block_repeats: bool = True,
        tag_boost: float = 0.0,
    ) -> None:
        self.model, self.vocab = model, vocab
        self.block_repeats = block_repeats
        self.tag_boost = tag_boost
        self._label_words: np.ndarray | None = None  # [labels, V]: which words say each label
        c = model.config
        if c.concept_dim and concepts_of is None:
            raise ValueError("this decoder was trained with concept inputs: give it concepts_of")
        self.concepts_of = concepts_of
        self.first_id = vocab.first_id(style)
        self._banned = vocab.non_word_ids
        # Content words (may not recur within REPEAT_WINDOW), as a mask over the vocabulary.
        self._content = np.asarray([w not in FUNCTION_WORDS for w in vocab.itos])
        state_dim = c.units * (1 if c.rnn == "gru" else 2)
        self._prepare = tf.function(
            lambda f, k: model.prepare(f, k if c.concept_dim else None, training=False),
            input_signature=[
                tf.TensorSpec([None, None, c.feature_dim], tf.float32),
                tf.TensorSpec([None, c.concept_dim], tf.float32),
            ],
        )
        self._step = tf.function(
            model.step,
            input_signature=[
                tf.TensorSpec([None], tf.int32),
                tf.TensorSpec([None, state_dim], tf.float32),
                tf.TensorSpec([None, None, c.feature_proj_dim], tf.float32),
                tf.TensorSpec([None, None, c.attention_dim], tf.float32),
                tf.TensorSpec([None, model.gates * c.units], tf.float32),
                tf.TensorSpec([None, c.embed_dim], tf.float32),
            ],
        )

    def prepare(self, features: np.ndarray, concepts: np.ndarray | None = None):
        """(feats, keys, state, word_bias, out_bias) for a batch of feature grids.

        `concepts` [N, K] are computed from the features when not given."""
        if self.model.config.concept_dim:
            if concepts is None:
                concepts = self.concepts_of(features)
            concepts = np.asarray(concepts, np.float32)
        else:
            concepts = np.zeros((len(features), 0), np.float32)
        return self._prepare(tf.convert_to_tensor(features, tf.float32), tf.convert_to_tensor(concepts))

    def tag_bonus(self, features: np.ndarray, concepts: np.ndarray | None) -> np.ndarray | None:
        """[N, V] log-probability bonus of each image's concept words (None when tag_boost is 0)."""
        if not self.tag_boost or self.concepts_of is None:
            return None
        if concepts is None:
            concepts = self.concepts_of(features)
        labels, per_label = label_probs(concepts)
        if self._label_words is None:
            # A label's last word is what a caption says ("sports car" -> "car"), singular or plural.
            self._label_words = np.zeros((len(labels), len(self.vocab)), np.float32)
            for i, label in enumerate(labels):
                head = label.split()[-1]
                for word in (head, head + "s"):
                    if word in self.vocab.stoi and word not in FUNCTION_WORDS:
                        self._label_words[i, self.vocab.stoi[word]] = 1.0
        return self.tag_boost * np.minimum(per_label @ self._label_words, 1.0)

    def _allowed(
        self, log_probs: tf.Tensor, history: np.ndarray, bonus: np.ndarray | None = None
    ) -> np.ndarray:
        """Log-probs as numpy with what a caption never says ruled out: <pad>, <start>, <unk>,
        style tokens, and repeats of `history` [rows, t] (see FUNCTION_WORDS, NO_REPEAT_NGRAM);
        plus `bonus` [rows, V] for words not said yet."""
        out = log_probs.numpy()
        if bonus is not None:
            bonus = bonus.copy()
            bonus[np.arange(len(history))[:, None], history] = 0.0
            out += bonus
        out[:, self._banned] = -np.inf
        if not self.block_repeats:
            return out
        rows, t = history.shape
        if t:
            out[np.arange(rows), history[:, -1]] = -np.inf  # no word twice in a row ("a a")
            recent = history[:, -REPEAT_WINDOW:]
            hit = self._content[recent]
            r, col = np.nonzero(hit)
            out[r, recent[r, col]] = -np.inf
        n = NO_REPEAT_NGRAM
        if t >= n:
            # Every earlier n-gram whose first n-1 words are the last n-1 said bans its last word.
            grams = np.lib.stride_tricks.sliding_window_view(history, n, axis=1)  # [rows, t-n+1, n]
            match = (grams[:, :, :-1] == history[:, None, t - n + 1 :]).all(axis=-1)
            r, g = np.nonzero(match)
            out[r, grams[r, g, -1]] = -np.inf
        return out

    def greedy(
        self,
        features: np.ndarray,
        max_len: int = 30,
        length_penalty: float = 0.0,
        concepts: np.ndarray | None = None,
        first_ids: np.ndarray | None = None,
    ) -> list[Hypothesis]:
        """The most probable word at every step; `first_ids` [N] start each caption in its own style."""
        n = len(features)
        feats, keys, state, word_bias, out_bias = self.prepare(features, concepts)
        bonus = self.tag_bonus(features, concepts)
        words = np.full(n, self.first_id, np.int32) if first_ids is None else np.asarray(first_ids, np.int32)
        ids = np.zeros((n, max_len), np.int32)
        log_prob = np.zeros(n)
        alphas = np.zeros((n, max_len, feats.shape[1]), np.float32)
        done = np.zeros(n, bool)
        length = np.full(n, max_len)
        for t in range(max_len):
            lp, state, alpha = self._step(words, state, feats, keys, word_bias, out_bias)
            lp = self._allowed(lp, ids[:, :t], bonus)
            words = lp.argmax(-1).astype(np.int32)
            log_prob += np.where(done, 0.0, lp[np.arange(n), words])
            ids[:, t], alphas[:, t] = words, alpha.numpy()
            ended = ~done & (words == self.vocab.end_id)
            length[ended] = t
            done |= ended
            if done.all():
                break
        return [
            Hypothesis(
                ids[i, : length[i]].tolist(),
                float(log_prob[i]),
                normalise(float(log_prob[i]), int(length[i]) + int(done[i]), length_penalty),
                alphas[i, : length[i]],
                bool(done[i]),
            )
            for i in range(n)
        ]

    def beam(
        self,
        features: np.ndarray,
        beam_size: int = 3,
        max_len: int = 30,
        length_penalty: float = 0.0,
        n_best: int | None = None,
        concepts: np.ndarray | None = None,
        first_ids: np.ndarray | None = None,
    ) -> list[list[Hypothesis]]:
        """Beam search; per image the `n_best` (default beam_size) hypotheses, best first.

        Images whose search has ended leave the batch, so a long caption in a batch costs
        only its own beams, not everyone's.
        """
        k, n = beam_size, len(features)
        n_best = min(n_best or k, k)
        end_id = self.vocab.end_id
        feats, keys, state, word_bias, out_bias = self.prepare(features, concepts)
        bonus = self.tag_bonus(features, concepts)  # [live images, V]
        positions = feats.shape[1]
        feats, keys, state, word_bias, out_bias = (
            tf.repeat(x, k, axis=0) for x in (feats, keys, state, word_bias, out_bias)
        )
        live = np.arange(n)  # images still searching; row j*k+b of the tensors is beam b of live[j]
        words = np.full(n * k, self.first_id, np.int32)
        if first_ids is not None:
            words = np.repeat(np.asarray(first_ids, np.int32), k)
        beam_lp = np.full((n, k), -np.inf)
        beam_lp[:, 0] = 0.0  # all k start identical: keep one alive so they don't duplicate
        history = np.zeros((n, k, 0), np.int32)
        attn = np.zeros((n, k, 0, positions), np.float32)
        finished: list[list[Hypothesis]] = [[] for _ in range(n)]
        for t in range(max_len):
            m = len(live)
            lp, state, alpha = self._step(words, state, feats, keys, word_bias, out_bias)
            vocab_size = lp.shape[-1]
            rows_bonus = None if bonus is None else np.repeat(bonus, k, axis=0)
            allowed = self._allowed(lp, history.reshape(m * k, history.shape[2]), rows_bonus)
            allowed = allowed.reshape(m, k, vocab_size)
            flat = (beam_lp[:, :, None] + allowed).reshape(m, -1)
            # 2k candidates always hold k that do not end here; best first. TensorFlow's top_k is 3-4x
            # faster than numpy's argpartition + argsort over the k x V scores (a fifth of a beam step).
            top = tf.math.top_k(flat, 2 * k).indices.numpy()
            new_parent = np.zeros((m, k), np.int64)
            new_word = np.full((m, k), end_id, np.int32)
            new_lp = np.full((m, k), -np.inf)
            keep = np.ones(m, bool)
            for j in range(m):
                slot = 0
                for cand in top[j]:
                    parent, word = divmod(int(cand), vocab_size)
                    score = float(flat[j, cand])
                    if not np.isfinite(score):
                        break
                    if word == end_id:
                        norm = normalise(score, t + 1, length_penalty)
                        hyp = Hypothesis(history[j, parent].tolist(), score, norm, attn[j, parent], True)
                        finished[live[j]].append(hyp)
                    else:
                        new_parent[j, slot], new_word[j, slot], new_lp[j, slot] = parent, word, score
                        slot += 1
                        if slot == k:
                            break
                # With length_penalty 0, stop once no live beam can beat the n_best-th finished one
                # (log-probs only fall, so that bound is exact); otherwise once k have finished.
                done = sorted((h.score for h in finished[live[j]]), reverse=True)[:n_best]
                if len(done) >= n_best and (
                    new_lp[j].max() <= done[-1] if length_penalty == 0.0 else len(finished[live[j]]) >= k
                ):
                    keep[j] = False
            alpha = alpha.numpy().reshape(m, k, positions)
            history = np.concatenate(
                [np.take_along_axis(history, new_parent[:, :, None], 1), new_word[:, :, None]], axis=2
            )[keep]
            attn = np.concatenate(
                [
                    np.take_along_axis(attn, new_parent[:, :, None, None], 1),
                    np.take_along_axis(alpha, new_parent[:, :, None], 1)[:, :, None, :],
                ],
                axis=2,
            )[keep]
            beam_lp, words = new_lp[keep], new_word[keep].reshape(-1)
            bonus = None if bonus is None else bonus[keep]
            rows = (np.flatnonzero(keep)[:, None] * k + np.arange(k)).reshape(-1)
            state = tf.gather(state, (np.flatnonzero(keep)[:, None] * k + new_parent[keep]).reshape(-1))
            if not keep.all():
                feats, keys = tf.gather(feats, rows), tf.gather(keys, rows)
                word_bias, out_bias = tf.gather(word_bias, rows), tf.gather(out_bias, rows)
            live = live[keep]
            if not len(live):
                break
        # Out of length: live beams fill the lists of images with fewer than n_best finished ones.
        for j, i in enumerate(live):
            spare = n_best - len(finished[i])
            order = np.argsort(-beam_lp[j])[: max(spare, 0)]
            for b in order:
                if np.isfinite(beam_lp[j, b]):
                    norm = normalise(beam_lp[j, b], history.shape[2], length_penalty)
                    finished[i].append(
                        Hypothesis(history[j, b].tolist(), float(beam_lp[j, b]), norm, attn[j, b], False)
                    )
        return [sorted(hyps, key=lambda h: -h.score)[:n_best] for hyps in finished]
