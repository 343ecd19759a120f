"""Turn a training run into a shippable model directory, with dev metrics and a model card."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

from ml.artifact import CARD, METRICS, TOP_WEIGHTS, VOCAB, WEIGHTS, read_config, write_config
from ml.captioner import load_captioner
from ml.evaluate import evaluate_model
from ml.metrics import CaptionScorer
from ml.model_card import render_model_card
from ml.rerank import NEIGHBOURS_FILE
from ml.style_router import ROUTER_FILE

# The fixed subset whose scores tests re-compute: the first N images of the dev split.
SUBSET_IMAGES = 100


def _training_summary(run: Path) -> dict[str, Any]:
    log = run / "log.csv"
    if not log.is_file():
        return {}
    with log.open() as fp:
        rows = list(csv.DictReader(fp))
    return {
        "epochs_run": len(rows),
        "train_seconds": round(sum(float(r["seconds"]) for r in rows)),
        "tokens_per_s": round(sum(float(r["tokens_per_s"]) for r in rows) / max(len(rows), 1)),
    }


def ship_model(
    run: str | Path,
    out: str | Path,
    root: str,
    beams: tuple[int, ...] = (1, 3, 5),
    notes: str = "",
    progress: bool = True,
    limit: int | None = None,
    decoding_defaults: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Copy the run's best model to `out`, score it on the dev split with each beam width, write the card.

    `limit` scores only the first N dev images (quick checks; a shipped model uses all).
    `decoding_defaults` (beam_size, length_penalty, max_len, block_repeats, tag_boost) replace the
    run's, e.g. after `ml sweep`.
    """
    run, out = Path(run), Path(out)
    config = read_config(run)
    config["decoding"] = {**config.get("decoding", {}), **(decoding_defaults or {})}
    out.mkdir(parents=True, exist_ok=True)
    for name in (VOCAB, WEIGHTS):
        shutil.copyfile(run / name, out / name)
    if (run / TOP_WEIGHTS).is_file():  # a fine-tuned encoder top (ml/encoder_top.py)
        shutil.copyfile(run / TOP_WEIGHTS, out / TOP_WEIGHTS)
    # Fitted on the run's model (`ml route`): the style of every image it scores here.
    if (run / ROUTER_FILE).is_file():
        shutil.copyfile(run / ROUTER_FILE, out / ROUTER_FILE)
    # An older model's neighbours hold its vocabulary's token ids: `ml neighbours` makes new ones.
    (out / NEIGHBOURS_FILE).unlink(missing_ok=True)
    write_config(out, config)
    captioner = load_captioner(out)
    data = config["data"]
    dataset, split = data["dataset"], data.get("dev_split") or "dev"
    decoding: dict[str, Any] = {}
    subset_size = min(SUBSET_IMAGES, limit) if limit else SUBSET_IMAGES
    with CaptionScorer() as scorer:  # one METEOR JVM for every evaluation below
        for k in beams:
            result = evaluate_model(
                captioner, dataset, root, split, beam_size=k, limit=limit, progress=progress, scorer=scorer
            )
            decoding["greedy" if k == 1 else f"beam{k}"] = result["metrics"]
            images = result["images"]
        subset = evaluate_model(
            captioner, dataset, root, split, limit=subset_size, progress=progress, scorer=scorer
        )
    metrics = {
        "dataset": dataset,
        "split": split,
        "images": images,
        "decoding": decoding,
        "subset": {k: subset[k] for k in ("images", "beam_size", "length_penalty", "metrics")},
        "best_epoch": json.loads((run / METRICS).read_text()).get("epoch"),
        "training": _training_summary(run),
    }
    (out / METRICS).write_text(json.dumps(metrics, indent=2) + "\n")
    (out / CARD).write_text(render_model_card(config, metrics, notes))
    return metrics
