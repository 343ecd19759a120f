"""One directory is one model: config.json, vocab.json, decoder.npz, metrics.json, README.md
(and encoder_top.npz when the encoder's top was fine-tuned, ml/encoder_top.py)."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ml.model import CaptionDecoder, DecoderConfig
from ml.vocab import Vocabulary

if TYPE_CHECKING:
    from ml.encoder_top import TunedTop

FORMAT_VERSION = 1
CONFIG, VOCAB, WEIGHTS, METRICS, CARD, TOP_WEIGHTS = (
    "config.json",
    "vocab.json",
    "decoder.npz",
    "metrics.json",
    "README.md",
    "encoder_top.npz",  # ml.encoder_top.TOP_FILE
)


class ModelError(RuntimeError):
    """A model directory is missing, incomplete or from an incompatible format."""


def _weight_key(path: str) -> str:
    # Drop the model's own (auto-numbered) name: "caption_decoder_1/embedding/embeddings" -> "embedding/...".
    return path.split("/", 1)[1] if "/" in path else path


def versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
    }


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as fp:
        fp.write(data)
    os.replace(tmp, path)


SCALE_SUFFIX = "@scale"  # int8 weights: `key` holds the integers, `key@scale` a float32 scale per channel


def quantise_int8(key: str, array: np.ndarray) -> dict[str, np.ndarray]:
    """A weight as int8 with a symmetric scale per output channel (a kernel's column, an embedding's
    row; vectors stay float16): half a float16 file, and within 0.2 CIDEr of it on Flickr8k dev
    (models/NOTES.md), so two decoders fit in the model directory's 30 MB."""
    a = np.asarray(array, np.float32)
    if a.ndim < 2:
        return {key: a.astype(np.float16)}
    axis = 1 if key.startswith("embedding") else 0  # the row a word looks up / the column a unit reads
    scale = np.maximum(np.abs(a).max(axis=axis, keepdims=True), 1e-12) / 127.0
    return {key: np.round(a / scale).astype(np.int8), key + SCALE_SUFFIX: scale.astype(np.float32)}


def _stored_arrays(arrays: dict[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
    if dtype == "int8":
        return {k: v for key, a in arrays.items() for k, v in quantise_int8(key, a).items()}
    return {key: np.asarray(a, dtype=dtype) for key, a in arrays.items()}


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """A weights file's arrays as float32, int8 ones multiplied back by their scales."""
    with np.load(path) as data:
        stored = dict(data)
    out = {}
    for key, a in stored.items():
        if key.endswith(SCALE_SUFFIX):
            continue
        scale = stored.get(key + SCALE_SUFFIX)
        out[key] = a.astype(np.float32) * scale if scale is not None else a.astype(np.float32)
    return out


def _write_arrays(arrays: dict[str, np.ndarray], path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
    with os.fdopen(fd, "wb") as fp:
        np.savez(fp, **arrays)
    os.replace(tmp, path)


def save_weights(decoder: CaptionDecoder, path: Path, dtype: str = "float16") -> None:
    """`dtype` float16 (what shipping writes), float32 (training's checkpoints) or int8, which keeps a
    scale per channel (quantise_int8, as `python -m ml compress` rewrites a file)."""
    arrays = {_weight_key(w.path): w.numpy() for w in decoder.weights}
    _write_arrays(_stored_arrays(arrays, dtype), path)


def compress_weights(path: Path) -> tuple[int, int]:
    """Rewrite a decoder's weights file as int8 in place; (bytes before, bytes after)."""
    before = path.stat().st_size
    _write_arrays(_stored_arrays(_read_arrays(path), "int8"), path)
    return before, path.stat().st_size


def load_weights(decoder: CaptionDecoder, path: Path) -> None:
    stored = _read_arrays(path)
    for w in decoder.weights:
        key = _weight_key(w.path)
        if key not in stored:
            raise ModelError(f"{path}: no weights for {key}")
        if tuple(stored[key].shape) != tuple(w.shape):
            raise ModelError(
                f"{path}: {key} has shape {stored[key].shape}, the model expects {tuple(w.shape)}"
            )
        w.assign(stored.pop(key))
    if stored:
        raise ModelError(f"{path}: unexpected weights {sorted(stored)[:5]}")


def save_model(
    directory: str | os.PathLike,
    decoder: CaptionDecoder,
    vocab: Vocabulary,
    config: dict[str, Any],
    metrics: dict[str, Any] | None = None,
    card: str | None = None,
    top: TunedTop | None = None,
) -> Path:
    """Write (or overwrite) a model directory. `config` holds encoder/decoding/training sections;
    `top` is a fine-tuned encoder top (float32: the features must come back identical)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    full = {
        "format": FORMAT_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": versions(),
        **config,
        "decoder": decoder.config.to_dict(),
    }
    save_weights(decoder, out / WEIGHTS)
    if top is not None:
        top.save(out / TOP_WEIGHTS)
    vocab.save(out / VOCAB)
    _write_atomic(out / CONFIG, (json.dumps(full, indent=2) + "\n").encode())
    if metrics is not None:
        _write_atomic(out / METRICS, (json.dumps(metrics, indent=2) + "\n").encode())
    if card is not None:
        _write_atomic(out / CARD, card.encode())
    return out


def read_config(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise ModelError(f"{directory}: not a model directory (no {CONFIG})")
    config = json.loads(path.read_text())
    if config.get("format") != FORMAT_VERSION:
        raise ModelError(
            f"{directory}: model format {config.get('format')!r}, this code reads {FORMAT_VERSION}"
        )
    return config


def write_config(directory: str | os.PathLike, config: dict[str, Any]) -> None:
    """Replace the model directory's config.json (e.g. its decoding defaults), atomically."""
    _write_atomic(Path(directory) / CONFIG, (json.dumps(config, indent=2) + "\n").encode())


def model_version(directory: str | os.PathLike) -> str:
    """'<name>-<first 10 hex of the weights' sha256>': changes whenever the weights change
    (a fine-tuned encoder top's included; models without one keep their version)."""
    directory = Path(directory)
    digest = hashlib.sha256((directory / WEIGHTS).read_bytes())
    if (directory / TOP_WEIGHTS).is_file():
        digest.update((directory / TOP_WEIGHTS).read_bytes())
    digest = digest.hexdigest()[:10]
    return f"{read_config(directory).get('name', directory.name)}-{digest}"


def load_decoder(directory: str | os.PathLike) -> tuple[dict[str, Any], CaptionDecoder, Vocabulary]:
    directory = Path(directory)
    config = read_config(directory)
    for name in (VOCAB, WEIGHTS):
        if not (directory / name).is_file():
            raise ModelError(f"{directory}: missing {name}")
    vocab = Vocabulary.load(directory / VOCAB)
    decoder = CaptionDecoder(DecoderConfig.from_dict(config["decoder"]))
    h, w, _ = config["encoder"]["feature_shape"]
    decoder.build_for(h * w)
    load_weights(decoder, directory / WEIGHTS)
    return config, decoder, vocab
