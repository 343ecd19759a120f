"""The README.md written into every model directory."""

from __future__ import annotations

from typing import Any


def _metrics_table(metrics: dict[str, dict[str, float]]) -> str:
    rows = {k: v for k, v in metrics.items() if isinstance(v, dict) and v}
    if not rows:
        return "_No dev evaluation recorded._\n"
    names = list(next(iter(rows.values())))
    lines = ["| decoding | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, values in rows.items():
        lines.append(f"| {label} | " + " | ".join(f"{values.get(n, float('nan')):.2f}" for n in names) + " |")
    return "\n".join(lines) + "\n"


def render_model_card(config: dict[str, Any], metrics: dict[str, Any], notes: str = "") -> str:
    enc, dec = config["encoder"], config.get("training", {})
    data = config.get("data", {})
    rnn = str(dec.get("rnn", "gru")).upper()
    source = enc.get("weight_source") or "n/a"
    return f"""# Model card: {config.get("name", "imgcap model")}

Show, Attend and Tell captioner (additive attention + {rnn}) trained with imgcap's `ml/`.

## Encoder
- `{enc["name"]}` at {enc["image_size"]} px, feature grid {" x ".join(map(str, enc["feature_shape"]))}
- weights: {source} (not stored here; loaded from the installed package on first use)

## Data
- {data.get("dataset", "?")} `{data.get("train_split", "?")}` split: {data.get("train_images", "?")} images,
  {data.get("train_captions", "?")} captions; selection on `{data.get("dev_split")}`.

## Decoding defaults
{config.get("decoding", {})}

## Dev metrics (coco-caption, 0-100)
Epoch {metrics.get("epoch", "?")}.

{_metrics_table(metrics)}
## Training configuration
```
{_format(dec)}
```
{notes}"""


def _format(values: dict[str, Any]) -> str:
    return "\n".join(f"{k} = {v!r}" for k, v in values.items())
