"""Checkpoint averaging: the mean of a few late epochs' weights, often a little better than any one.

`python -m ml average --run runs/default --weights ep5.npz ep6.npz --out runs/default-avg` writes a
model directory (the run's config and vocabulary, the averaged weights) that `evaluate` and `ship`
take like a run.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ml.artifact import CONFIG, METRICS, VOCAB, WEIGHTS, ModelError, read_config


def average_weights(files: Sequence[str | os.PathLike]) -> dict[str, np.ndarray]:
    """The element-wise float32 mean of weight files that hold the same names and shapes."""
    if not files:
        raise ModelError("no weight files to average")
    total: dict[str, np.ndarray] = {}
    for path in files:
        with np.load(path) as data:
            arrays = {key: data[key].astype(np.float32) for key in data.files}
        if total and (set(arrays) != set(total) or any(arrays[k].shape != total[k].shape for k in total)):
            raise ModelError(f"{path}: its weights do not match {files[0]}'s (another model?)")
        for key, value in arrays.items():
            total[key] = total[key] + value if key in total else value
    return {key: value / len(files) for key, value in total.items()}


def average_run(
    run: str | os.PathLike, weight_files: Sequence[str | os.PathLike], out: str | os.PathLike
) -> Path:
    """A model directory in `out`: the run's config and vocabulary with the averaged weights."""
    run, out = Path(run), Path(out)
    read_config(run)  # a model directory, in a format this code reads
    out.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG, VOCAB, "log.csv"):
        if (run / name).is_file():
            shutil.copyfile(run / name, out / name)
    mean = average_weights(weight_files)
    with (out / WEIGHTS).open("wb") as fp:
        np.savez(fp, **{key: value.astype(np.float16) for key, value in mean.items()})
    metrics = json.loads((run / METRICS).read_text()) if (run / METRICS).is_file() else {}
    metrics["averaged"] = [str(f) for f in weight_files]
    (out / METRICS).write_text(json.dumps(metrics, indent=2) + "\n")
    return out
