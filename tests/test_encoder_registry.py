"""Encoders by name, with options that reach the model config and the feature-cache key."""

from __future__ import annotations

import numpy as np
import pytest

from ml.encoders import ENCODER_NAMES, EncoderError, get_encoder


def test_unknown_names_and_options_are_clear_errors():
    with pytest.raises(EncoderError, match="choose from"):
        get_encoder("resnet9000")
    with pytest.raises(EncoderError, match="does not take options"):
        get_encoder("efficientnet_lite0", scaling="unit")
    with pytest.raises(EncoderError, match="scaling"):
        get_encoder("inception_v3_offline", scaling="sideways")
    assert set(ENCODER_NAMES) == {
        "inception_v3",
        "inception_v3_offline",
        "efficientnet_lite0",
        "efficientnet_lite2",
    }


def test_scaling_changes_input_and_feature_cache_key():
    keras_scaled = get_encoder("inception_v3_offline", image_size=75, scaling="keras")
    unit = get_encoder("inception_v3_offline", image_size=75, scaling="unit")
    assert unit.options() == {"tap": "mixed5", "scaling": "unit"}
    white = np.full((1, 2, 2, 3), 255, np.uint8)
    assert keras_scaled.scale(white).max() == 1.0 and unit.scale(white).max() == 1.0
    black = white * 0
    assert keras_scaled.scale(black).min() == -1.0 and unit.scale(black).min() == 0.0
    assert keras_scaled.fingerprint() != unit.fingerprint()
    assert "unit" in unit.fingerprint()
