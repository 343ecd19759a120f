"""Encoder outputs cached on disk (float16), keyed by encoder fingerprint and image content hash.

One .npy file per image, written atomically, so an interrupted run resumes where it stopped
and any number of experiments reuse the same features.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ml.encoders.base import Encoder
from ml.paths import cache_dir


def content_hash(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fp:
        for chunk in iter(lambda: fp.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class FeatureCache:
    """`get(paths)` -> float16 [N, P, C], encoding only the images not cached yet.

    Subclasses cache another array per image by overriding `key`, `shape` and `encode_readable`
    (BlockInputCache in ml/encoder_top.py: the input of an encoder's last blocks)."""

    def __init__(self, encoder: Encoder, root: str | os.PathLike | None = None) -> None:
        self.encoder = encoder
        base = Path(root) if root else cache_dir() / "features"
        self.root = base / self.key()
        self.root.mkdir(parents=True, exist_ok=True)

    def key(self) -> str:
        """The cache's directory name: what produced the arrays (changes with any weight)."""
        return self.encoder.fingerprint()

    @property
    def shape(self) -> tuple[int, int, int]:
        """(h, w, C) of one image's array."""
        return self.encoder.feature_shape

    def encode_readable(self, paths: Sequence[str | os.PathLike]) -> tuple[np.ndarray, list[int], dict]:
        """(float32 [M, h*w, C] of the readable images, their indices, index -> error)."""
        return self.encoder.encode_readable(paths)

    def _file(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def get(
        self, paths: Sequence[str | os.PathLike], batch_size: int = 32, progress: bool = True
    ) -> tuple[np.ndarray, list[str]]:
        """Arrays for `paths` in order, and the paths that could not be read (their rows are zero)."""
        keys = [content_hash(p) for p in tqdm(paths, desc="hashing", unit="img", disable=not progress)]
        missing = [i for i, k in enumerate(keys) if not self._file(k).exists()]
        failed: list[str] = []
        bar = tqdm(
            total=len(missing), desc=f"encoding ({self.encoder.name})", unit="img", disable=not progress
        )
        for start in range(0, len(missing), batch_size):
            chunk = missing[start : start + batch_size]
            feats, readable, errors = self.encode_readable([paths[i] for i in chunk])
            failed.extend(str(paths[chunk[j]]) for j in errors)
            for j, f in zip(readable, feats, strict=True):
                self._save(keys[chunk[j]], f.astype(np.float16))
            bar.update(len(chunk))
        bar.close()
        h, w, c = self.shape
        out = np.zeros((len(paths), h * w, c), np.float16)
        bad = set(failed)
        for i, key in enumerate(keys):
            if str(paths[i]) not in bad:
                out[i] = np.load(self._file(key))
        return out, failed

    def _save(self, key: str, array: np.ndarray) -> None:
        save_npy_atomic(self._file(key), array)


def save_npy_atomic(target: Path, array: np.ndarray) -> None:
    """np.save beside `target`, then a rename: a crash or a concurrent reader never sees half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as fp:
        np.save(fp, array)
    os.replace(tmp, target)
