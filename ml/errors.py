"""Exceptions that mean "the user asked for something impossible": printed as one line by the CLI."""

from __future__ import annotations

from ml.artifact import ModelError
from ml.data import DatasetError
from ml.encoders import EncoderError
from ml.images import ImageError
from ml.metrics import MetricsError

USER_ERRORS: tuple[type[BaseException], ...] = (
    ModelError,
    DatasetError,
    EncoderError,
    ImageError,
    MetricsError,
    FileExistsError,
    FileNotFoundError,
    ValueError,
)
