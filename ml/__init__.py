"""imgcap's captioning library: Show, Attend and Tell in TensorFlow, usable without Django.

The platform calls exactly one thing: `load_captioner(path).caption(images) -> list[CaptionResult]`.
Importing `ml` is cheap; TensorFlow loads with the first model.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

# TensorFlow's C++ info lines (CUDA probing on CPU-only machines) are noise for our users.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if TYPE_CHECKING:
    from ml.captioner import Candidate, Captioner, CaptionResult, load_captioner

__all__ = ["Candidate", "CaptionResult", "Captioner", "load_captioner"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from ml import captioner

        return getattr(captioner, name)
    raise AttributeError(name)
