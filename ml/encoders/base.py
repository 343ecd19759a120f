"""The encoder contract: a CNN that maps images to a grid of feature vectors.

Each encoder declares its input size, its pixel scaling and (once built) its feature
grid. TensorFlow is imported only when a Keras model is actually built.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from ml.images import ImageError, ImageInput, load_image

if TYPE_CHECKING:
    import keras


class EncoderError(RuntimeError):
    """The encoder cannot be built (typically: its weights are not available)."""


class Encoder(ABC):
    """Subclasses set `name`, `default_size`, implement `scale` and `build_model`."""

    name: str = ""
    default_size: int = 224

    def __init__(self, image_size: int | None = None, weights: str | None = None) -> None:
        self.image_size = int(image_size or self.default_size)
        self.weights = weights  # encoder-specific weight source (a path, or None for the default)
        self._model: keras.Model | None = None
        self.weight_source = ""  # filled in by build_model: where the weights came from

    # -- to implement -----------------------------------------------------------------
    @abstractmethod
    def scale(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [N, S, S, 3] RGB -> float32 network input."""

    @abstractmethod
    def build_model(self) -> keras.Model:
        """Keras model: scaled [N, S, S, 3] -> feature map [N, h, w, C]. Sets `weight_source`."""

    def options(self) -> dict[str, str]:
        """Encoder-specific settings beyond size and weights (saved with models, part of the fingerprint)."""
        return {}

    # -- shared behaviour -------------------------------------------------------------
    @property
    def model(self) -> keras.Model:
        if self._model is None:
            self._model = self.build_model()
        return self._model

    @property
    def feature_shape(self) -> tuple[int, int, int]:
        """(h, w, C) of the feature grid."""
        _, h, w, c = self.model.output_shape
        return int(h), int(w), int(c)

    def fingerprint(self) -> str:
        """Stable id of (encoder, input size, weights) for keying feature caches."""
        digest = hashlib.sha256()
        for w in self.model.weights:
            digest.update(np.ascontiguousarray(w.numpy()[..., :4]).tobytes())
        variant = "".join(f"-{v}" for v in self.options().values())
        return f"{self.name}{variant}-{self.image_size}-{digest.hexdigest()[:12]}"

    def resize(self, image: Image.Image) -> np.ndarray:
        """Stretch to S x S (Flickr8k's images are distributed stretched, so we match that)."""
        if image.size != (self.image_size, self.image_size):
            image = image.resize((self.image_size, self.image_size), Image.BILINEAR)
        return np.asarray(image, dtype=np.uint8)

    @property
    def read_size(self) -> int:
        """The smallest side `load_image` may shrink a big photo to before `resize`: twice the input, so
        the final resize still averages several pixels into each, as it does from a full decode."""
        return 2 * self.image_size

    def preprocess(self, images: Sequence[ImageInput]) -> np.ndarray:
        pixels = np.stack([self.resize(load_image(im, min_size=self.read_size)) for im in images])
        return self.scale(pixels)

    def encode(self, images: Sequence[ImageInput], batch_size: int = 32) -> np.ndarray:
        """Images -> float32 [N, h*w, C]."""
        out = []
        for i in range(0, len(images), batch_size):
            out.append(self.encode_batch(self.preprocess(images[i : i + batch_size])))
        h, w, c = self.feature_shape
        return np.concatenate(out) if out else np.zeros((0, h * w, c), np.float32)

    def read_readable(
        self, images: Sequence[ImageInput], names: Sequence[str] | None = None
    ) -> tuple[np.ndarray | None, list[int], dict[int, str]]:
        """Resized uint8 [M, S, S, 3] of the images that can be read (None if none), their indices,
        index -> error message (errors call the images `names`)."""
        readable, pixels, errors = [], [], {}
        for i, image in enumerate(images):
            try:
                name = names[i] if names else None
                pixels.append(self.resize(load_image(image, name=name, min_size=self.read_size)))
                readable.append(i)
            except ImageError as exc:
                errors[i] = str(exc)
        return (np.stack(pixels) if pixels else None), readable, errors

    def encode_readable(
        self, images: Sequence[ImageInput], names: Sequence[str] | None = None
    ) -> tuple[np.ndarray, list[int], dict[int, str]]:
        """Encode the images that can be read, in one batch; error messages call them `names`.

        Returns (float32 [M, h*w, C] for the readable ones, their indices, index -> error message).
        """
        pixels, readable, errors = self.read_readable(images, names)
        if pixels is None:
            h, w, c = self.feature_shape
            return np.zeros((0, h * w, c), np.float32), readable, errors
        return self.encode_batch(self.scale(pixels)), readable, errors

    def encode_readable_with_concepts(
        self, images: Sequence[ImageInput], names: Sequence[str] | None = None
    ) -> tuple[np.ndarray, np.ndarray | None, list[int], dict[int, str]]:
        """`encode_readable` plus the readable images' concepts [M, 1000] (None without a classifier)."""
        feats, readable, errors = self.encode_readable(images, names)
        concepts = self.concept_probs(feats) if self.has_concepts and readable else None
        return feats, concepts, readable, errors

    def cached_concepts(
        self, paths: Sequence[str], features: np.ndarray, progress: bool = True
    ) -> np.ndarray:
        """Concepts [N, 1000] of images whose feature grids [N, P, C] came from a FeatureCache."""
        chunks = [
            self.concept_probs(features[i : i + 512].astype(np.float32)) for i in range(0, len(features), 512)
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, 1000), np.float32)

    # -- concepts: what the encoder's own classifier sees ------------------------------
    @property
    def has_concepts(self) -> bool:
        """Whether `concept_probs` works: the encoder ships its ImageNet classifier head."""
        return False

    def concept_probs(self, features: np.ndarray) -> np.ndarray:
        """Feature grids [N, P, C] -> ImageNet class probabilities [N, 1000] (float32)."""
        raise EncoderError(f"{self.name} has no classifier head, so it gives no concepts")

    def encode_batch(self, scaled: np.ndarray) -> np.ndarray:
        """Scaled network input -> float32 [N, h*w, C]."""
        fmap = self.model(scaled, training=False)
        fmap = np.asarray(fmap, dtype=np.float32)
        return fmap.reshape(fmap.shape[0], -1, fmap.shape[-1])
