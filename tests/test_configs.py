"""Every shipped training config parses into a TrainConfig."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml.config import TrainConfig

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_parses(path):
    cfg = TrainConfig.from_file(path)
    assert cfg.dataset and cfg.encoder and cfg.epochs > 0


def test_there_are_configs():
    assert CONFIGS
