"""The confidence file names the features it was fitted on: an older model's keeps working."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ml.confidence import CONFIDENCE_FILE, FEATURES, ConfidenceModel


def test_a_calibration_of_fewer_features_predicts_from_its_own_columns(tmp_path):
    old = FEATURES[:-1]  # fitted before "consensus" existed
    model = ConfidenceModel(np.zeros(len(old)), np.ones(len(old)), np.zeros(len(old)), 0.0, {}, old)
    model.coef[old.index("tag_max")] = 2.0
    model.save(tmp_path)
    assert json.loads((tmp_path / CONFIDENCE_FILE).read_text())["features"] == list(old)
    back = ConfidenceModel.load(tmp_path)
    assert back.features == old
    rows = np.zeros((2, len(FEATURES)))
    rows[0, FEATURES.index("tag_max")] = 1.0
    rows[:, FEATURES.index("consensus")] = 50.0  # not a feature of this calibration: no effect
    np.testing.assert_allclose(back.predict(rows), [1 / (1 + np.exp(-2.0)), 0.5])


def test_a_calibration_of_unknown_features_is_refused(tmp_path):
    ConfidenceModel(np.zeros(1), np.ones(1), np.zeros(1), 0.0, {}, ("tag_max",)).save(tmp_path)
    data = json.loads((tmp_path / CONFIDENCE_FILE).read_text())
    data["features"] = ["tag_max", "colour_of_the_sky"]
    (tmp_path / CONFIDENCE_FILE).write_text(json.dumps(data))
    with pytest.raises(ValueError, match="colour_of_the_sky"):
        ConfidenceModel.load(tmp_path)
