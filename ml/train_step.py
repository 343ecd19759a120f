"""The loss, the compiled training step, and what a step updates (decoder, maybe an encoder top)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import keras
import tensorflow as tf

from ml.model import CaptionDecoder

if TYPE_CHECKING:
    from ml.encoder_top import TunedTop


class Trainables:
    """The decoder's variables and its optimizer, plus, when the encoder's top is fine-tuned, the
    top's with an optimizer of their own (its own learning rate). Gradients are clipped jointly.

    `train_decoder` False freezes the decoder (only the top trains): its weights get no gradients,
    which also spares the backward pass their cost."""

    def __init__(
        self,
        decoder: CaptionDecoder,
        optimizer: keras.optimizers.Optimizer,
        top: TunedTop | None = None,
        top_optimizer: keras.optimizers.Optimizer | None = None,
        train_decoder: bool = True,
    ) -> None:
        if (top is None) != (top_optimizer is None):
            raise ValueError("a fine-tuned top needs its optimizer (and an optimizer its top)")
        if not train_decoder and top is None:
            raise ValueError("with the decoder frozen nothing would train: fine-tune the encoder's top")
        self.decoder, self.optimizer, self.top, self.top_optimizer = decoder, optimizer, top, top_optimizer
        self.train_decoder = train_decoder

    @property
    def input_dim(self) -> int:
        """C of what a step is fed: the feature grid's, or the top's block input's."""
        return self.top.input_dim if self.top is not None else self.decoder.config.feature_dim

    def features(self, inputs: tf.Tensor) -> tf.Tensor:
        """A step's inputs [B, P, C_in] -> the decoder's features [B, P, C] (the top, if tuned)."""
        return inputs if self.top is None else self.top(inputs)

    @property
    def variables(self) -> list:
        top = self.top.trainable_variables if self.top is not None else []
        return self._decoder_variables + list(top)

    @property
    def _decoder_variables(self) -> list:
        return list(self.decoder.trainable_variables) if self.train_decoder else []

    def apply(self, grads: list, clip_norm: float) -> None:
        """Clip (over all variables) and apply each group's gradients with its optimizer."""
        if clip_norm:
            grads, _ = tf.clip_by_global_norm(grads, clip_norm)
        variables = self.variables
        n = len(self._decoder_variables)
        if n:
            self.optimizer.apply_gradients(zip(grads[:n], variables[:n], strict=True))
        if self.top_optimizer is not None:
            self.top_optimizer.apply_gradients(zip(grads[n:], variables[n:], strict=True))


def caption_loss(
    logits: tf.Tensor,
    alphas: tf.Tensor,
    targets: tf.Tensor,
    penalty: float = 1.0,
    label_smoothing: float = 0.0,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Masked cross-entropy per token + the paper's doubly-stochastic attention penalty.

    Returns (loss, cross_entropy, token_count). Padding (id 0) is masked out everywhere.
    """
    mask = tf.cast(tf.not_equal(targets, 0), tf.float32)
    log_probs = tf.nn.log_softmax(logits, axis=-1)
    nll = -tf.gather(log_probs, targets, axis=-1, batch_dims=2)
    if label_smoothing:
        nll = (1.0 - label_smoothing) * nll - label_smoothing * tf.reduce_mean(log_probs, axis=-1)
    tokens = tf.reduce_sum(mask)
    ce = tf.reduce_sum(nll * mask) / tf.maximum(tokens, 1.0)
    loss = ce
    if penalty:
        # Encourage every grid position to receive, over the whole caption, about one unit of attention.
        coverage = tf.reduce_sum(alphas * mask[:, :, None], axis=1)
        loss = loss + penalty * tf.reduce_mean(tf.reduce_sum(tf.square(1.0 - coverage), axis=-1))
    return loss, ce, tokens


def _signature(decoder: CaptionDecoder, input_dim: int | None = None) -> list[tf.TensorSpec]:
    # Any batch size and caption length: the decoder's time loop is symbolic, so one trace serves all.
    # Concepts are [B, concept_dim]: zero columns for a decoder without concept input.
    return [
        tf.TensorSpec([None, None, input_dim or decoder.config.feature_dim], tf.float32),
        tf.TensorSpec([None, None], tf.int32),
        tf.TensorSpec([None, decoder.config.concept_dim], tf.float32),
    ]


def make_train_step(
    decoder: CaptionDecoder,
    optimizer: keras.optimizers.Optimizer,
    penalty: float = 1.0,
    label_smoothing: float = 0.0,
    clip_norm: float = 5.0,
    top: TunedTop | None = None,
    top_optimizer: keras.optimizers.Optimizer | None = None,
    train_decoder: bool = True,
) -> Callable[[tf.Tensor, tf.Tensor, tf.Tensor], dict[str, tf.Tensor]]:
    """A compiled step: (features [B,P,C] float, tokens [B,T+1] int32 with <start>...<end> + padding,
    concepts [B,K] float). With a fine-tuned `top`, the first input is its block input [B,P,C_in]
    and the top trains too (by `top_optimizer`), or alone (`train_decoder` False)."""
    params = Trainables(decoder, optimizer, top, top_optimizer, train_decoder)

    # No XLA: on CPUs it measured about 2x slower than TF's own kernels for this step.
    @tf.function(input_signature=_signature(decoder, params.input_dim))
    def train_step(features: tf.Tensor, tokens: tf.Tensor, concepts: tf.Tensor) -> dict[str, tf.Tensor]:
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        with tf.GradientTape() as tape:
            logits, alphas = decoder((params.features(features), inputs, concepts), training=True)
            loss, ce, count = caption_loss(logits, alphas, targets, penalty, label_smoothing)
        params.apply(tape.gradient(loss, params.variables), clip_norm)
        return {"loss": loss, "ce": ce, "tokens": count}

    return train_step


def make_eval_step(
    decoder: CaptionDecoder,
) -> Callable[[tf.Tensor, tf.Tensor, tf.Tensor], dict[str, tf.Tensor]]:
    """Teacher-forced cross-entropy without dropout (the dev loss)."""

    @tf.function(input_signature=_signature(decoder))
    def eval_step(features: tf.Tensor, tokens: tf.Tensor, concepts: tf.Tensor) -> dict[str, tf.Tensor]:
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        logits, alphas = decoder((features, inputs, concepts), training=False)
        _, ce, count = caption_loss(logits, alphas, targets, penalty=0.0)
        return {"ce": ce, "tokens": count}

    return eval_step
