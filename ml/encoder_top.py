"""EfficientNet-Lite with its last MBConv block(s) + head fine-tuned on captions.

The network is cut before block `first_block` (lite0: before its last block, at the 7x7x192
grid). Below the cut nothing trains, so the cut's input is computed once per image and cached
(BlockInputCache, float16, keyed by the encoder's fingerprint + the cut + the image's content
hash, like FeatureCache); an epoch then runs only the top: [N, 49, 192] -> [N, 49, 1280].
BatchNormalization stays in inference mode (frozen ImageNet statistics: caption batches are
small), its scale and shift train with the convolutions.

Tags and the decoder's concept input stay the ImageNet classifier's: they come from the
ORIGINAL frozen top, run beside the fine-tuned one on the same block input. That second run of
the top costs about an eighth of the network (lite0: 50 M of 400 M multiply-adds per image).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ml.artifact import TOP_WEIGHTS
from ml.encoders.base import Encoder, EncoderError
from ml.encoders.efficientnet_lite import EfficientNetLiteEncoder, read_layer_npz, write_layer_npz
from ml.features import FeatureCache
from ml.images import ImageInput

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

TOP_FILE = TOP_WEIGHTS  # in a model directory, beside decoder.npz


class BlockInputCache(FeatureCache):
    """`get(paths)` -> float16 [N, P, C_in]: the input of block `first_block` of `encoder`."""

    def __init__(
        self, encoder: EfficientNetLiteEncoder, first_block: int, root: str | os.PathLike | None = None
    ) -> None:
        self.first_block = first_block
        self._bottom: keras.Model | None = None
        super().__init__(encoder, root)

    def key(self) -> str:
        return f"{self.encoder.fingerprint()}-block{self.first_block}-input"

    @property
    def bottom(self) -> keras.Model:
        if self._bottom is None:
            self._bottom = self.encoder.build_bottom(self.first_block)
        return self._bottom

    @property
    def shape(self) -> tuple[int, int, int]:
        _, h, w, c = self.bottom.output_shape
        return int(h), int(w), int(c)

    def encode_readable(self, paths: Sequence[str | os.PathLike]) -> tuple[np.ndarray, list[int], dict]:
        pixels, readable, errors = self.encoder.read_readable(paths)
        if pixels is None:
            h, w, c = self.shape
            return np.zeros((0, h * w, c), np.float32), readable, errors
        return self.encode_pixels(pixels), readable, errors

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [N, S, S, 3] -> float32 block input [N, P, C_in]."""
        out = np.asarray(self.bottom(self.encoder.scale(pixels), training=False), np.float32)
        return out.reshape(out.shape[0], -1, out.shape[-1])


class TunedTop:
    """A trainable copy of the top: block input [B, P, C_in] -> features [B, P, 1280].

    Called with training=False always, so BatchNormalization uses (and keeps) its statistics."""

    def __init__(self, network: keras.Model) -> None:
        self.network = network
        _, self.grid, _, self.input_dim = (int(d) if d else d for d in network.input_shape)

    def __call__(self, block_inputs: tf.Tensor | np.ndarray) -> tf.Tensor:
        import tensorflow as tf

        x = tf.convert_to_tensor(block_inputs, tf.float32)
        batch = tf.shape(x)[0]
        fmap = self.network(tf.reshape(x, [batch, self.grid, self.grid, self.input_dim]), training=False)
        return tf.reshape(fmap, [batch, self.grid * self.grid, fmap.shape[-1]])  # [B, P, 1280]

    @property
    def trainable_variables(self) -> list:
        return self.network.trainable_variables

    def weights(self) -> dict[str, list[np.ndarray]]:
        """Layer name -> float32 arrays (BN statistics included), the format of the encoder caches."""
        return {
            layer.name: [np.asarray(w.numpy(), np.float32) for w in layer.weights]
            for layer in self.network.layers
            if layer.weights
        }

    def digest(self) -> str:
        h = hashlib.sha256()
        for name, arrays in sorted(self.weights().items()):
            h.update(name.encode())
            for a in arrays:
                h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:12]

    def save(self, path: str | os.PathLike) -> None:
        write_layer_npz(Path(path), self.weights())

    def load(self, path: str | os.PathLike) -> None:
        from ml.encoders.efficientnet_lite_arch import assign_weights

        try:
            assign_weights(self.network, read_layer_npz(Path(path)))
        except (OSError, ValueError, KeyError) as exc:
            raise EncoderError(f"cannot load a fine-tuned encoder top from {path}: {exc}") from exc


class FineTunedEncoder(Encoder):
    """`base` below the cut, a fine-tuned top above it; its features are the tuned top's.

    `blocks` is how many of the last MBConv blocks are tuned (with the head conv + BN)."""

    def __init__(self, base: EfficientNetLiteEncoder, blocks: int = 1, top_file: str | None = None) -> None:
        super().__init__(base.image_size, base.weights)
        if not 0 < blocks < base.num_blocks:
            raise EncoderError(f"{base.name}: can tune 1..{base.num_blocks - 1} blocks, not {blocks}")
        self.name, self.base, self.blocks = base.name, base, blocks
        self.first_block = base.num_blocks - blocks
        self.top = TunedTop(base.build_top(self.first_block))  # starts at the ImageNet weights
        if top_file is not None:
            self.top.load(top_file)
        self.frozen_top = TunedTop(base.build_top(self.first_block))  # never trained: the concepts
        self.block_cache = BlockInputCache(base, self.first_block)
        self.weight_source = base.weight_source

    def scale(self, pixels: np.ndarray) -> np.ndarray:
        return self.base.scale(pixels)

    def build_model(self) -> keras.Model:
        import keras

        inputs = keras.Input((self.image_size, self.image_size, 3), name="image")
        return keras.Model(
            inputs, self.top.network(self.block_cache.bottom(inputs)), name=f"{self.name}_tuned"
        )

    def fingerprint(self) -> str:
        # The tuned top's weights in full: features cached for one epoch's top are not another's.
        return f"{self.base.fingerprint()}-tuned{self.blocks}-{self.top.digest()}"

    def options(self) -> dict[str, str]:
        return self.base.options()

    # -- features ----------------------------------------------------------------------
    def encode_batch(self, scaled: np.ndarray) -> np.ndarray:
        block = self.block_cache.bottom(scaled, training=False)
        return np.asarray(self.top(np.reshape(block, (block.shape[0], -1, block.shape[-1]))), np.float32)

    def encode_readable(
        self, images: Sequence[ImageInput], names: Sequence[str] | None = None
    ) -> tuple[np.ndarray, list[int], dict[int, str]]:
        if names is None and all(isinstance(im, (str, os.PathLike)) for im in images):
            # Dataset images (FeatureCache, `ml route`): their block inputs are usually cached.
            block, failed = self.block_cache.get(images, progress=False)
            bad = set(failed)
            readable = [i for i, p in enumerate(images) if str(p) not in bad]
            errors = {i: f"cannot read {p}" for i, p in enumerate(images) if str(p) in bad}
            return self.tuned_features(block[readable]), readable, errors
        return super().encode_readable(images, names)

    def encode_readable_with_concepts(
        self, images: Sequence[ImageInput], names: Sequence[str] | None = None
    ) -> tuple[np.ndarray, np.ndarray | None, list[int], dict[int, str]]:
        """One bottom run, then both tops: the tuned one's features, the frozen one's concepts."""
        pixels, readable, errors = self.read_readable(images, names)
        if pixels is None:
            h, w, c = self.feature_shape
            return np.zeros((0, h * w, c), np.float32), None, readable, errors
        block = self.block_cache.encode_pixels(pixels)
        return self.tuned_features(block), self.frozen_concepts(block), readable, errors

    def tuned_features(self, block_inputs: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Block inputs [N, P, C_in] -> the tuned top's float32 features [N, P, 1280]."""
        return self._in_batches(lambda b: np.asarray(self.top(b), np.float32), block_inputs, batch_size)

    # -- concepts: the original top's ---------------------------------------------------
    @property
    def has_concepts(self) -> bool:
        return self.base.has_concepts

    def concept_probs(self, features: np.ndarray) -> np.ndarray:
        raise EncoderError(
            "a fine-tuned top's features are not the classifier's: concepts come from the frozen top "
            "(encode_readable_with_concepts, cached_concepts or frozen_concepts)"
        )

    def frozen_concepts(self, block_inputs: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Block inputs [N, P, C_in] -> ImageNet probabilities [N, 1000] of the ORIGINAL top."""

        def probs(b: np.ndarray) -> np.ndarray:
            return self.base.concept_probs(np.asarray(self.frozen_top(b), np.float32))

        return self._in_batches(probs, block_inputs, batch_size)

    def cached_concepts(
        self, paths: Sequence[str], features: np.ndarray, progress: bool = True
    ) -> np.ndarray:
        block, _ = self.block_cache.get(paths, progress=progress)
        return self.frozen_concepts(block)

    @staticmethod
    def _in_batches(fn, arrays: np.ndarray, batch_size: int) -> np.ndarray:
        if not len(arrays):
            return fn(arrays.astype(np.float32))
        return np.concatenate(
            [fn(arrays[i : i + batch_size].astype(np.float32)) for i in range(0, len(arrays), batch_size)]
        )


def fine_tuned(encoder: Encoder, blocks: int, top_file: str | os.PathLike | None = None) -> FineTunedEncoder:
    """`encoder` with its last `blocks` blocks tunable (from `top_file`'s weights if given)."""
    if not isinstance(encoder, EfficientNetLiteEncoder):
        raise EncoderError(f"fine-tuning the top is implemented for EfficientNet-Lite, not {encoder.name}")
    return FineTunedEncoder(encoder, blocks, None if top_file is None else str(top_file))
