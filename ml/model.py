"""The Show-Attend-and-Tell decoder: additive (Bahdanau) attention over the feature grid + GRU/LSTM.

Speed matters on CPUs, so the work that does not change between time steps is done once:
the features' projection and attention keys once per image, the word embeddings' share of
the recurrent input and the output (vocabulary) layer once per sequence. Each time step
then costs two matrix products: one for everything that reads h_{t-1} (attention query,
context gate, recurrent weights), one for the context's share of the recurrent input.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import keras
import tensorflow as tf


@dataclass
class DecoderConfig:
    vocab_size: int
    feature_dim: int  # C of the encoder's feature grid
    embed_dim: int = 256
    units: int = 512  # recurrent state size
    feature_proj_dim: int = 512  # features are projected C -> D once per image
    attention_dim: int = 512
    rnn: str = "gru"  # "gru" or "lstm"
    dropout: float = 0.3
    tie_embeddings: bool = False  # output layer shares the word embedding matrix
    # Size of the concept vector given with each image (the encoder's ImageNet class
    # probabilities, 1000), 0 for none. It sets the first state and biases every step's
    # input and output, as in Yao et al. 2017 ("Boosting image captioning with attributes").
    concept_dim: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DecoderConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class CaptionDecoder(keras.Model):
    """features [B, P, C] + previous words -> next-word logits, with attention weights."""

    def __init__(self, config: DecoderConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        if config.rnn not in ("gru", "lstm"):
            raise ValueError(f"rnn must be 'gru' or 'lstm', not {config.rnn!r}")
        self.config = c = config
        self.gates = 3 if c.rnn == "gru" else 4
        self.feature_proj = keras.layers.Dense(c.feature_proj_dim, activation="relu", name="feature_proj")
        self.attn_keys = keras.layers.Dense(c.attention_dim, name="attn_keys")
        self.attn_score = keras.layers.Dense(1, use_bias=False, name="attn_score")
        # Initial state from the mean feature, as in the paper.
        self.init_state = keras.layers.Dense(
            c.units * (1 if c.rnn == "gru" else 2), activation="tanh", name="init_state"
        )
        self.embedding = keras.layers.Embedding(c.vocab_size, c.embed_dim, name="embedding")
        # Everything that reads h_{t-1}, fused: [attention query | context gate | recurrent].
        self.hidden_proj = keras.layers.Dense(
            c.attention_dim + c.feature_proj_dim + self.gates * c.units, name="hidden_proj"
        )
        self.word_in = keras.layers.Dense(self.gates * c.units, name="word_in")
        self.context_in = keras.layers.Dense(self.gates * c.units, use_bias=False, name="context_in")
        self.deep_out = keras.layers.Dense(c.embed_dim, name="deep_out")
        self.logits_out = None if c.tie_embeddings else keras.layers.Dense(c.vocab_size, name="logits")
        self.logits_bias = (
            self.add_weight(shape=(c.vocab_size,), initializer="zeros", name="logits_bias")
            if c.tie_embeddings
            else None
        )
        self.drop = keras.layers.Dropout(c.dropout)
        if c.concept_dim:
            self.concept_proj = keras.layers.Dense(c.embed_dim, activation="relu", name="concept_proj")
            self.concept_word = keras.layers.Dense(self.gates * c.units, use_bias=False, name="concept_word")
            self.concept_out = keras.layers.Dense(c.embed_dim, use_bias=False, name="concept_out")

    # -- pieces ------------------------------------------------------------------------
    def prepare(self, features: tf.Tensor, concepts: tf.Tensor | None = None, training: bool = False):
        """Per-image work: (projected features [B,P,D], attention keys [B,P,A], initial state,
        the concepts' share of every step's input [B,G*U] and of its output [B,E]; zeros without)."""
        c = self.config
        feats = self.drop(self.feature_proj(features), training=training)
        keys = self.attn_keys(feats)
        pooled = tf.reduce_mean(feats, axis=1)
        batch = tf.shape(features)[0]
        if c.concept_dim and concepts is not None:
            sem = self.drop(self.concept_proj(concepts), training=training)  # [B, E]
            state = self.init_state(tf.concat([pooled, sem], axis=-1))
            return feats, keys, state, self.concept_word(sem), self.concept_out(sem)
        if c.concept_dim:
            raise ValueError("this decoder was trained with concept inputs: pass concepts")
        state = self.init_state(pooled)
        return feats, keys, state, tf.zeros([batch, self.gates * c.units]), tf.zeros([batch, c.embed_dim])

    def _recur(self, word_part, state, feats, keys):
        """One time step from the word's precomputed input share. Returns (h, context, alpha, state)."""
        c = self.config
        h_prev = state if c.rnn == "gru" else state[:, : c.units]
        proj = self.hidden_proj(h_prev)
        query = proj[:, : c.attention_dim]
        gate = tf.sigmoid(proj[:, c.attention_dim : c.attention_dim + c.feature_proj_dim])
        rec = proj[:, c.attention_dim + c.feature_proj_dim :]
        scores = tf.squeeze(self.attn_score(tf.tanh(keys + query[:, None, :])), -1)
        alpha = tf.nn.softmax(scores, axis=-1)
        context = gate * tf.einsum("bp,bpd->bd", alpha, feats)
        x = word_part + self.context_in(context)
        if c.rnn == "gru":
            # Keras' "reset_after" GRU: the reset gate scales the recurrent candidate.
            xz, xr, xh = tf.split(x, 3, axis=-1)
            hz, hr, hh = tf.split(rec, 3, axis=-1)
            z = tf.sigmoid(xz + hz)
            r = tf.sigmoid(xr + hr)
            n = tf.tanh(xh + r * hh)
            h = z * h_prev + (1.0 - z) * n
            new_state = h
        else:
            cell_prev = state[:, c.units :]
            i, f, g, o = tf.split(x + rec, 4, axis=-1)
            cell = tf.sigmoid(f + 1.0) * cell_prev + tf.sigmoid(i) * tf.tanh(g)
            h = tf.sigmoid(o) * tf.tanh(cell)
            new_state = tf.concat([h, cell], axis=-1)
        return h, context, alpha, new_state

    def _logits(self, h, context, emb, training: bool):
        deep = self.deep_out(tf.concat([h, context], axis=-1)) + emb
        deep = self.drop(deep, training=training)
        if self.logits_out is not None:
            return self.logits_out(deep)
        return tf.matmul(deep, self.embedding.embeddings, transpose_b=True) + self.logits_bias

    # -- whole sequences (training) ----------------------------------------------------
    def call(self, inputs, training: bool = False):
        """(features [B,P,C], words [B,T][, concepts [B,K]]) -> (logits [B,T,V], alphas [B,T,P])
        under teacher forcing."""
        features, words = inputs[0], inputs[1]
        concepts = inputs[2] if len(inputs) > 2 else None
        return self.forced(self.prepare(features, concepts, training=training), words, training)

    def forced(self, prepared, words: tf.Tensor, training: bool = False):
        """`prepare`'s per-image tensors + words [B,T] -> (logits [B,T,V], alphas [B,T,P]) under
        teacher forcing (self-critical training prepares once and repeats for K samples)."""
        feats, keys, state, word_bias, out_bias = prepared
        emb = self.embedding(words)  # [B, T, E]
        # The embeddings' (and concepts') share of every step, in one product.
        word_parts = self.word_in(emb) + word_bias[:, None, :]

        # A symbolic loop (not unrolled): one compiled graph serves every caption length.
        def step(carry, word_part):
            return self._recur(word_part, carry[3], feats, keys)

        batch = tf.shape(words)[0]
        init = (
            tf.zeros([batch, self.config.units]),
            tf.zeros([batch, self.config.feature_proj_dim]),
            tf.zeros([batch, tf.shape(feats)[1]]),
            state,
        )
        h_all, ctx_all, alpha_all, _ = tf.scan(step, tf.transpose(word_parts, [1, 0, 2]), initializer=init)
        h_all, ctx_all, alpha_all = (tf.transpose(x, [1, 0, 2]) for x in (h_all, ctx_all, alpha_all))
        logits = self._logits(h_all, ctx_all, emb + out_bias[:, None, :], training)
        return logits, alpha_all

    # -- one step (decoding) -----------------------------------------------------------
    def step(self, words, state, feats, keys, word_bias, out_bias):
        """words [B] -> (log-probs [B,V], new state, alpha [B,P]); inference only."""
        emb = self.embedding(words)
        h, context, alpha, state = self._recur(self.word_in(emb) + word_bias, state, feats, keys)
        logits = self._logits(h, context, emb + out_bias, training=False)
        return tf.nn.log_softmax(logits, axis=-1), state, alpha

    def build_for(self, num_positions: int) -> None:
        """Create all weights by running one tiny batch."""
        c = self.config
        inputs = (tf.zeros((1, num_positions, c.feature_dim)), tf.zeros((1, 1), tf.int32))
        if c.concept_dim:
            inputs += (tf.zeros((1, c.concept_dim)),)
        self(inputs, training=False)
