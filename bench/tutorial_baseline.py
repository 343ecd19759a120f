"""The TensorFlow tutorial "Image captioning with visual attention" (TF 2.x), re-written as the baseline.

The point is to time the tutorial's computation as it was written, so its shape is kept on purpose:
the attention keys W1(features) are recomputed at every time step, the output layers fc1/fc2 run
once per step instead of once per sequence, the loss is taken per step, and the time loop is a
Python loop inside ``tf.function`` (unrolled at trace time). Only the Keras 3 API differs.

One quirk is kept too: the tutorial calls ``self.gru(x)`` without ``initial_state``, so its GRU
starts every step from zeros and ``hidden`` only reaches the attention query. That costs the same
arithmetic as feeding the state back, so it does not change the timing.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf


class CNN_Encoder(keras.Model):  # noqa: N801 - the tutorial's name
    """The cached CNN features [B, 64, 2048] -> [B, 64, embedding_dim] through one Dense + relu."""

    def __init__(self, embedding_dim: int) -> None:
        super().__init__()
        self.fc = keras.layers.Dense(embedding_dim)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return tf.nn.relu(self.fc(x))


class BahdanauAttention(keras.Model):
    """Additive attention: score = V(tanh(W1(features) + W2(hidden)))."""

    def __init__(self, units: int) -> None:
        super().__init__()
        self.W1 = keras.layers.Dense(units)  # noqa: N815 - the tutorial's names
        self.W2 = keras.layers.Dense(units)  # noqa: N815
        self.V = keras.layers.Dense(1)  # noqa: N815

    def call(self, features: tf.Tensor, hidden: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        hidden_with_time_axis = tf.expand_dims(hidden, 1)  # [B, 1, units]
        attention_hidden_layer = tf.nn.tanh(self.W1(features) + self.W2(hidden_with_time_axis))
        score = self.V(attention_hidden_layer)  # [B, 64, 1]
        attention_weights = tf.nn.softmax(score, axis=1)
        context_vector = tf.reduce_sum(attention_weights * features, axis=1)
        return context_vector, attention_weights


class RNN_Decoder(keras.Model):  # noqa: N801 - the tutorial's name
    """One step: attention context + previous word -> GRU -> fc1 -> fc2 (vocabulary logits)."""

    def __init__(self, embedding_dim: int, units: int, vocab_size: int) -> None:
        super().__init__()
        self.units = units
        self.embedding = keras.layers.Embedding(vocab_size, embedding_dim)
        self.gru = keras.layers.GRU(
            units, return_sequences=True, return_state=True, recurrent_initializer="glorot_uniform"
        )
        self.fc1 = keras.layers.Dense(units)
        self.fc2 = keras.layers.Dense(vocab_size)
        self.attention = BahdanauAttention(units)

    def call(
        self, x: tf.Tensor, features: tf.Tensor, hidden: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        context_vector, attention_weights = self.attention(features, hidden)
        x = self.embedding(x)  # [B, 1, embedding_dim]
        x = tf.concat([tf.expand_dims(context_vector, 1), x], axis=-1)
        output, state = self.gru(x)  # no initial_state: as in the tutorial
        x = self.fc1(output)
        x = tf.reshape(x, (-1, x.shape[2]))
        x = self.fc2(x)
        return x, state, attention_weights

    def reset_state(self, batch_size: int) -> tf.Tensor:
        return tf.zeros((batch_size, self.units))


_loss_object = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")


def loss_function(real: tf.Tensor, pred: tf.Tensor) -> tf.Tensor:
    """Per-step cross-entropy, zeroed on padding, averaged over the whole batch (padding included)."""
    mask = tf.math.logical_not(tf.math.equal(real, 0))
    loss_ = _loss_object(real, pred)
    loss_ *= tf.cast(mask, dtype=loss_.dtype)
    return tf.reduce_mean(loss_)


def make_tutorial_train_step(
    vocab_size: int = 5000,
    embedding_dim: int = 256,
    units: int = 512,
    start_id: int = 1,
    eager: bool = False,
    learning_rate: float = 0.001,
) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """The tutorial's train_step with fresh weights and Adam: fn(img_tensor, target) -> mean loss.

    ``eager=True`` skips ``tf.function`` (the tutorial's cost without graph compilation).
    """
    encoder = CNN_Encoder(embedding_dim)
    decoder = RNN_Decoder(embedding_dim, units, vocab_size)
    optimizer = keras.optimizers.Adam(learning_rate)

    def train_step(img_tensor: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
        loss = 0.0
        batch = target.shape[0]
        hidden = decoder.reset_state(batch_size=batch)
        dec_input = tf.expand_dims([start_id] * batch, 1)
        with tf.GradientTape() as tape:
            features = encoder(img_tensor)
            for i in range(1, target.shape[1]):
                predictions, hidden, _ = decoder(dec_input, features, hidden)
                loss += loss_function(target[:, i], predictions)
                dec_input = tf.expand_dims(target[:, i], 1)  # teacher forcing
        total_loss = loss / int(target.shape[1])
        trainable_variables = encoder.trainable_variables + decoder.trainable_variables
        gradients = tape.gradient(loss, trainable_variables)
        optimizer.apply_gradients(zip(gradients, trainable_variables, strict=True))
        return total_loss

    step = train_step if eager else tf.function(train_step)
    # Keep the models reachable from the step (for counting parameters, inspection).
    step.encoder, step.decoder = encoder, decoder  # type: ignore[attr-defined]
    return step
