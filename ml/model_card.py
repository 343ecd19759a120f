"""The README.md written into every model directory."""

from __future__ import annotations

from typing import Any

CITATIONS = {
    "flickr8k": (
        'Flickr8k: research use only. Hodosh, Young and Hockenmaier, "Framing Image Description as a '
        'Ranking Task: Data, Models and Evaluation Metrics", JAIR 47, 2013.'
    ),
    "coco": "MS-COCO captions: annotations CC BY 4.0; images under their Flickr licences (see the JSON).",
}


def _metrics_table(rows: dict[str, Any]) -> str:
    rows = {k: v for k, v in rows.items() if isinstance(v, dict) and v}
    if not rows:
        return "_No dev evaluation recorded._\n"
    names = list(next(iter(rows.values())))
    lines = ["| decoding | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, values in rows.items():
        lines.append(f"| {label} | " + " | ".join(f"{values.get(n, float('nan')):.2f}" for n in names) + " |")
    return "\n".join(lines) + "\n"


def render_model_card(config: dict[str, Any], metrics: dict[str, Any], notes: str = "") -> str:
    """Markdown: encoder and weights, data and licence, decoding, dev metrics, training set-up."""
    enc, train = config["encoder"], config.get("training", {})
    data = config.get("data", {})
    rnn = str(train.get("rnn", "gru")).upper()
    source = enc.get("weight_source") or "n/a"
    epoch = metrics.get("best_epoch", metrics.get("epoch", "?"))
    rows = metrics.get("decoding") or {k: v for k, v in metrics.items() if k.startswith("dev")}
    scored = (
        f"{metrics.get('images', '?')} `{metrics.get('split', 'dev')}` images"
        if "decoding" in metrics
        else "dev"
    )
    training = metrics.get("training", {})
    took = (
        f"{training['epochs_run']} epochs in {training['train_seconds'] / 60:.0f} min on this project's "
        f"2-core CPU machine ({training['tokens_per_s']} tokens/s)"
        if training
        else "see log.csv"
    )
    return f"""# Model card: {config.get("name", "imgcap model")}

Show, Attend and Tell captioner (additive attention + {rnn}) trained with imgcap's `ml/`.

## Encoder
- `{enc["name"]}` at {enc["image_size"]} px, feature grid {" x ".join(map(str, enc["feature_shape"]))}
- weights: {source} (not stored here; loaded from the installed package on first use)

## Data
- {data.get("dataset", "?")} `{data.get("train_split", "?")}` split: {data.get("train_images", "?")} images,
  {data.get("train_captions", "?")} captions; everything chosen on `{data.get("dev_split")}`.
- {CITATIONS.get(str(data.get("dataset", "")).split("_")[0], "See the dataset's own licence.")}

## Decoding defaults
{config.get("decoding", {})}

## Metrics (coco-caption definitions, 0-100, on {scored}; best epoch {epoch})

{_metrics_table(rows)}
## Training
- {took}.
```
{_format(train)}
```
{notes}"""


def _format(values: dict[str, Any]) -> str:
    return "\n".join(f"{k} = {v!r}" for k, v in values.items())
