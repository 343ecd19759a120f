"""Read a PyTorch `state_dict` file into numpy arrays without importing torch.

Both on-disk layouts written by `torch.save` are understood:

* legacy (torch < 1.6): a run of pickles in one stream -- magic number, protocol
  version, sys info, the object itself (storages referenced by persistent ids),
  the list of storage keys -- followed by each storage's raw bytes, each prefixed
  by its element count as a little-endian int64;
* zip (torch >= 1.6): `<archive>/data.pkl` plus one raw file per storage under
  `<archive>/data/<key>`.

Only the few globals a state_dict needs are resolvable; anything else is refused, so
a hostile file cannot make the unpickler import arbitrary code.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# torch storage class name -> numpy dtype (all little-endian on disk).
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class TorchPickleError(ValueError):
    """The file is not a state_dict this reader understands."""


class _StorageType:
    """Stands in for `torch.FloatStorage` etc.: only its dtype matters."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name]).newbyteorder("<")


class _Storage:
    """A storage whose bytes are filled in after the object pickle (legacy) or on demand (zip)."""

    def __init__(self, dtype: np.dtype, numel: int) -> None:
        self.dtype = dtype
        self.numel = numel
        self.data: np.ndarray | None = None


class _PendingTensor:
    """A tensor view on a storage; materialised once all storage bytes are known."""

    def __init__(self, storage: Any, offset: int, size: tuple, stride: tuple) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def to_numpy(self) -> np.ndarray:
        storage, offset = self.storage, self.offset
        if isinstance(storage, _StorageView):  # legacy views share a base storage
            storage, offset = storage.base, storage.offset + offset
        base = storage.data
        if base is None:
            raise TorchPickleError("tensor refers to a storage that was never read")
        if not self.size:
            return base[offset].copy()
        item = base.itemsize
        view = np.lib.stride_tricks.as_strided(
            base[offset:], shape=self.size, strides=[s * item for s in self.stride], writeable=False
        )
        return np.array(view)  # copy: detach from the shared storage buffer


class _StorageView:
    def __init__(self, base: _Storage, offset: int) -> None:
        self.base, self.offset = base, offset


def _rebuild_tensor(storage, storage_offset, size, stride, *_rest) -> _PendingTensor:
    # Signature of torch._utils._rebuild_tensor_v2 (requires_grad, hooks, metadata ignored).
    return _PendingTensor(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, *_rest) -> Any:
    return data  # torch._utils._rebuild_parameter: a Parameter is just its tensor here


_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, fp: io.BufferedIOBase, persistent_load: Callable[[Any], Any]) -> None:
        super().__init__(fp)
        self._persistent = persistent_load

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        try:
            return _GLOBALS[(module, name)]
        except KeyError:
            raise TorchPickleError(f"refusing to load {module}.{name} from a weights file") from None

    def persistent_load(self, pid: Any) -> Any:
        return self._persistent(pid)


def _storage_dtype(storage_type: Any) -> np.dtype:
    if not isinstance(storage_type, _StorageType):
        raise TorchPickleError(f"unsupported storage type {storage_type!r}")
    return storage_type.dtype


def _materialise(obj: Any) -> Any:
    if isinstance(obj, _PendingTensor):
        return obj.to_numpy()
    if isinstance(obj, dict):
        return collections.OrderedDict((k, _materialise(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialise(v) for v in obj)
    return obj


def _load_legacy(fp: io.BufferedIOBase) -> Any:
    storages: dict[str, _Storage] = {}

    def persistent_load(pid: Any) -> Any:
        kind, storage_type, key, _location, numel, view = pid
        if kind != "storage":
            raise TorchPickleError(f"unsupported persistent id {kind!r}")
        if key not in storages:
            storages[key] = _Storage(_storage_dtype(storage_type), int(numel))
        if view is not None:
            _view_key, offset, _view_size = view
            return _StorageView(storages[key], int(offset))
        return storages[key]

    def plain() -> Any:
        return _Unpickler(fp, lambda pid: None).load()

    if plain() != LEGACY_MAGIC:
        raise TorchPickleError("not a torch file (bad magic number)")
    if plain() != LEGACY_PROTOCOL:
        raise TorchPickleError("unsupported torch legacy protocol version")
    sys_info = plain()
    if not sys_info.get("little_endian", True):
        raise TorchPickleError("big-endian torch files are not supported")
    result = _Unpickler(fp, persistent_load).load()
    for key in plain():
        storage = storages[key]
        (numel,) = np.frombuffer(fp.read(8), "<i8")
        raw = fp.read(int(numel) * storage.dtype.itemsize)
        if len(raw) != numel * storage.dtype.itemsize:
            raise TorchPickleError(f"truncated storage {key}")
        storage.data = np.frombuffer(raw, storage.dtype)
    return _materialise(result)


def _load_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl is None:
            raise TorchPickleError(f"{path}: zip without data.pkl")
        prefix = pkl[: -len("data.pkl")]
        storages: dict[str, _Storage] = {}

        def persistent_load(pid: Any) -> Any:
            kind, storage_type, key, _location, numel = pid
            if kind != "storage":
                raise TorchPickleError(f"unsupported persistent id {kind!r}")
            if key not in storages:
                # torch still records the legacy typed class (FloatStorage...) as the dtype tag.
                dtype = _storage_dtype(storage_type)
                storage = _Storage(dtype, int(numel))
                storage.data = np.frombuffer(archive.read(f"{prefix}data/{key}"), dtype)
                storages[key] = storage
            return storages[key]

        with archive.open(pkl) as fp:
            result = _Unpickler(io.BufferedReader(fp), persistent_load).load()
    return _materialise(result)


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """`torch.load(path)` for a plain state_dict, returning numpy arrays (no torch needed)."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        state = _load_zip(path)
    else:
        with open(path, "rb") as fp:
            state = _load_legacy(io.BufferedReader(io.BytesIO(fp.read())))
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # training checkpoints wrap the weights
    if not isinstance(state, dict):
        raise TorchPickleError(f"{path}: expected a state_dict, got {type(state).__name__}")
    return dict(state)
