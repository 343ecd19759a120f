"""Greedy and beam-search decoding over a batch of images.

The decoder's step runs compiled on all live hypotheses of all images at once; the
bookkeeping (top-k, finished hypotheses, attention history) is done in numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from ml.model import CaptionDecoder
from ml.vocab import Vocabulary


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


class Decoder:
    """Wraps a CaptionDecoder with compiled per-image preparation and per-step functions."""

    def __init__(self, model: CaptionDecoder, vocab: Vocabulary) -> None:
        self.model, self.vocab = model, vocab
        self._banned = [vocab.pad_id, vocab.start_id, vocab.unk_id]
        c = model.config
        state_dim = c.units * (1 if c.rnn == "gru" else 2)
        self._prepare = tf.function(
            lambda f: model.prepare(f, training=False),
            input_signature=[tf.TensorSpec([None, None, c.feature_dim], tf.float32)],
        )
        self._step = tf.function(
            model.step,
            input_signature=[
                tf.TensorSpec([None], tf.int32),
                tf.TensorSpec([None, state_dim], tf.float32),
                tf.TensorSpec([None, None, c.feature_proj_dim], tf.float32),
                tf.TensorSpec([None, None, c.attention_dim], tf.float32),
            ],
        )

    def _allowed(self, log_probs: tf.Tensor) -> np.ndarray:
        """Log-probs as numpy with <pad>, <start> and <unk> ruled out: a caption never says them."""
        out = log_probs.numpy()
        out[:, self._banned] = -np.inf
        return out

    def greedy(
        self, features: np.ndarray, max_len: int = 30, length_penalty: float = 0.0
    ) -> list[Hypothesis]:
        """The most probable word at every step."""
        n = len(features)
        feats, keys, state = self._prepare(tf.convert_to_tensor(features, tf.float32))
        words = np.full(n, self.vocab.start_id, np.int32)
        ids = np.zeros((n, max_len), np.int32)
        log_prob = np.zeros(n)
        alphas = np.zeros((n, max_len, feats.shape[1]), np.float32)
        done = np.zeros(n, bool)
        length = np.full(n, max_len)
        for t in range(max_len):
            lp, state, alpha = self._step(words, state, feats, keys)
            lp = self._allowed(lp)
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
    ) -> list[list[Hypothesis]]:
        """Beam search; per image the `n_best` (default beam_size) hypotheses, best first.

        Images whose search has ended leave the batch, so a long caption in a batch costs
        only its own beams, not everyone's.
        """
        k, n = beam_size, len(features)
        n_best = min(n_best or k, k)
        end_id = self.vocab.end_id
        feats, keys, state = self._prepare(tf.convert_to_tensor(features, tf.float32))
        positions = feats.shape[1]
        feats, keys, state = (tf.repeat(x, k, axis=0) for x in (feats, keys, state))
        live = np.arange(n)  # images still searching; row j*k+b of the tensors is beam b of live[j]
        words = np.full(n * k, self.vocab.start_id, np.int32)
        beam_lp = np.full((n, k), -np.inf)
        beam_lp[:, 0] = 0.0  # all k start identical: keep one alive so they don't duplicate
        history = np.zeros((n, k, 0), np.int32)
        attn = np.zeros((n, k, 0, positions), np.float32)
        finished: list[list[Hypothesis]] = [[] for _ in range(n)]
        for t in range(max_len):
            m = len(live)
            lp, state, alpha = self._step(words, state, feats, keys)
            vocab_size = lp.shape[-1]
            flat = (beam_lp[:, :, None] + self._allowed(lp).reshape(m, k, vocab_size)).reshape(m, -1)
            # 2k candidates always hold k that do not end here.
            top = np.argpartition(-flat, 2 * k - 1, axis=1)[:, : 2 * k]
            top = np.take_along_axis(top, np.argsort(-np.take_along_axis(flat, top, 1), axis=1), 1)
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
            rows = (np.flatnonzero(keep)[:, None] * k + np.arange(k)).reshape(-1)
            state = tf.gather(state, (np.flatnonzero(keep)[:, None] * k + new_parent[keep]).reshape(-1))
            if not keep.all():
                feats, keys = tf.gather(feats, rows), tf.gather(keys, rows)
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
