"""Pluggable image encoders, looked up by name. Modules are imported on first use."""

from __future__ import annotations

import importlib

from ml.encoders.base import Encoder, EncoderError

# name -> (module, class name); importing lazily keeps TensorFlow out until needed.
_REGISTRY: dict[str, tuple[str, str]] = {
    "inception_v3": ("ml.encoders.inception", "InceptionV3Encoder"),
    "inception_v3_offline": ("ml.encoders.inception_offline", "InceptionV3OfflineEncoder"),
    "efficientnet_lite0": ("ml.encoders.efficientnet_lite", "EfficientNetLite0Encoder"),
    "efficientnet_lite2": ("ml.encoders.efficientnet_lite", "EfficientNetLite2Encoder"),
}

ENCODER_NAMES = tuple(_REGISTRY)


def get_encoder(
    name: str, image_size: int | None = None, weights: str | None = None, **options: str
) -> Encoder:
    """Instantiate encoder `name` (weights are loaded when its model is first built).

    `options` are encoder-specific (e.g. inception_v3_offline's `scaling`, `tap`).
    """
    try:
        module_name, class_name = _REGISTRY[name]
    except KeyError:
        raise EncoderError(f"unknown encoder {name!r}; choose from {', '.join(ENCODER_NAMES)}") from None
    cls = getattr(importlib.import_module(module_name), class_name)
    try:
        return cls(image_size=image_size, weights=weights, **options)
    except TypeError as exc:
        raise EncoderError(f"encoder {name!r} does not take options {sorted(options)}") from exc


__all__ = ["ENCODER_NAMES", "Encoder", "EncoderError", "get_encoder"]
