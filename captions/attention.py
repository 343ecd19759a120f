"""Compact storage of per-word attention maps: uint8 per cell, one float32 scale per word.

Layout: b"AT1", uint16 L, h, w (little-endian), L float32 per-word maxima, then L*h*w uint8 cells,
each the cell's value divided by its word's maximum, times 255. A 14x14 map costs 200 bytes instead of 784,
and the error (≤ max/510 per cell) is invisible in a heat map.
"""

from __future__ import annotations

import struct

import numpy as np

MAGIC = b"AT1"
_HEADER = struct.Struct("<3sHHH")


class AttentionFormatError(ValueError):
    """Bytes that are not an encoding written by `encode_attention`."""


def encode_attention(attention: np.ndarray) -> bytes:
    """float [L, h, w] (non-negative weights) → bytes; see the module docstring for the layout."""
    array = np.asarray(attention, dtype=np.float32)
    if array.ndim != 3:
        raise ValueError(f"attention must have shape [words, h, w], got {array.shape}")
    length, height, width = array.shape
    if max(array.shape) > 0xFFFF:
        raise ValueError(f"attention shape {array.shape} is too large to encode")
    array = np.nan_to_num(np.clip(array, 0.0, None), nan=0.0, posinf=0.0)
    maxima = array.reshape(length, -1).max(axis=1) if array.size else np.zeros(length, np.float32)
    scale = np.where(maxima > 0, maxima, 1.0).astype(np.float32)
    cells = np.rint(array / scale[:, None, None] * 255.0).astype(np.uint8)
    return _HEADER.pack(MAGIC, length, height, width) + maxima.astype("<f4").tobytes() + cells.tobytes()


def decode_attention(data: bytes | memoryview) -> np.ndarray:
    """bytes from `encode_attention` → float32 [L, h, w]."""
    raw = bytes(data)
    if len(raw) < _HEADER.size:
        raise AttentionFormatError("attention data is too short")
    magic, length, height, width = _HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise AttentionFormatError("attention data has an unknown format")
    expected = _HEADER.size + 4 * length + length * height * width
    if len(raw) != expected:
        raise AttentionFormatError(f"attention data has {len(raw)} bytes, expected {expected}")
    maxima = np.frombuffer(raw, dtype="<f4", count=length, offset=_HEADER.size).astype(np.float32)
    cells = np.frombuffer(raw, dtype=np.uint8, offset=_HEADER.size + 4 * length)
    cells = cells.reshape(length, height, width).astype(np.float32)
    return cells / 255.0 * maxima[:, None, None]
