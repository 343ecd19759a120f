"""The README.md written into every model directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ml.image_text import ImageTextProjection
from ml.rerank import Neighbours
from ml.word_vectors import WordVectors

NOTES_MARK = "<!-- notes: everything below comes from the --notes file of `ml ship` -->"
_OLD_NOTES_MARK = "<!-- notes: everything below comes from the --notes file of `ml export` -->"

CITATIONS = {
    "flickr8k": (
        'Flickr8k: research use only. Hodosh, Young and Hockenmaier, "Framing Image Description as a '
        'Ranking Task: Data, Models and Evaluation Metrics", JAIR 47, 2013.'
    ),
    "coco": "MS-COCO captions: annotations CC BY 4.0; images under their Flickr licences (see the JSON).",
    "img2dataset": (
        "Conceptual Captions (Sharma et al., ACL 2018), images fetched from their URLs with img2dataset: "
        "the dataset's terms (captions by Google, free to use with attribution); each image belongs to "
        "its owner; research use."
    ),
}


def _sources(data: dict[str, Any]) -> str:
    """One line per training source (older models name one dataset)."""
    sources = data.get("sources") or [{"dataset": data.get("dataset", "?"), "split": data.get("train_split")}]
    lines = []
    for src in sources:
        style = f", style token `{src['style']}`" if src.get("style") else ""
        root = f" from `{src['root']}`" if src.get("root") else ""
        lines.append(f"- {src['dataset']} `{src.get('split', '?')}`{root}{style}")
    dataset_names = dict.fromkeys(str(src["dataset"]).split("_")[0] for src in sources)
    lines += [f"- {CITATIONS.get(name, f'{name}: see the dataset licence.')}" for name in dataset_names]
    return "\n".join(lines)


def _confidence(confidence: dict[str, Any] | None) -> str:
    if not confidence:
        return "Not calibrated: captions carry no confidence (`python -m ml calibrate`)."
    report = confidence.get("calibration", {})
    lines = [
        f"Logistic model on {', '.join(confidence['features'])}; a caption counts as right at "
        f"per-image CIDEr-D >= {report.get('threshold_cider')}. Fitted on even halves, judged on odd halves:",
        "",
        "| held-out set | images | share right | mean confidence | Spearman vs CIDEr | AUROC |",
        "|---|---|---|---|---|---|",
    ]
    for name, e in report.get("held_out", {}).items():
        lines.append(
            f"| {name} | {e['images']} | {e['share_right']} | {e['mean_confidence']} | "
            f"{e.get('spearman', 'n/a')} | {e.get('auroc', 'n/a')} |"
        )
    return "\n".join(lines) + "\n\n![confidence against per-image CIDEr](confidence.png)"


def _metrics_table(rows: dict[str, Any]) -> str:
    rows = {k: v for k, v in rows.items() if isinstance(v, dict) and v}
    if not rows:
        return "_No dev evaluation recorded._\n"
    names = list(next(iter(rows.values())))
    lines = ["| decoding | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, values in rows.items():
        lines.append(f"| {label} | " + " | ".join(f"{values.get(n, float('nan')):.2f}" for n in names) + " |")
    return "\n".join(lines) + "\n"


def _image_text(info: dict[str, Any] | None) -> str:
    if not info:
        return "No photo projection: search finds photos by their captions only (`python -m ml align`)."
    dev = info.get("dev", {})
    recall = ", ".join(f"{k} {dev[k]}" for k in ("R@1", "R@5", "R@10") if k in dev)
    return (
        f"`image_text.npz`: the pooled encoder features projected into all-MiniLM-L6-v2's sentence space "
        f"(an MLP, hidden width {info.get('hidden')}, trained contrastively on {info.get('images')} training "
        f"images and {info.get('captions')} texts (captions, and 1-3-word queries drawn from them), best of "
        f"{info.get('epochs')} epochs: epoch "
        f"{info.get('epoch')}). Text-to-photo retrieval with it alone on the dev images (each human caption "
        f"a query): {recall or 'not scored'}."
    )


def _fitted_on(info: dict[str, Any]) -> str:
    """The training sources a model-directory file was fitted on, in words."""
    return ", ".join(info.get("sources", [])) or f"{info.get('photos')} training images"


def _word_vectors(info: dict[str, Any] | None) -> str:
    if not info:
        return ""
    sources = _fitted_on(info)
    # Files from before ridge have no penalty: their vectors are the photos' means.
    how = (
        f"a ridge regression, penalty {info['penalty']:g}, from the standardised pooled features to the "
        "word's share of each photo's captions"
        if info.get("penalty")
        else "each the mean of the standardised pooled features of the photos whose captions use it"
    )
    sentences = (
        "; and in the sentence-embedding space (the mean all-MiniLM-L6-v2 embedding of the captions using "
        "each word), added to a short query's own embedding before it meets the photos' projections"
        if info.get("sentence_vectors")
        else ""
    )
    return (
        f"\n\n`word_vectors.npz`: {info.get('words')} words of the training captions placed in the photo "
        f"feature space ({how}, {info.get('dims')} PCA directions; from {sources}): the keyword list of "
        f"search{sentences} (`python -m ml word-vectors`, models/NOTES.md)."
    )


def _reranking(info: dict[str, Any] | None, weights: dict[str, Any], judge: str | None) -> str:
    if not info:
        return ""
    sources = _fitted_on(info)
    judged = ""
    if weights:
        per_style = "; ".join(
            f"{style or 'the one style'}: " + ", ".join(f"{name} {w:g}" for name, w in ws.items())
            for style, ws in weights.items()
        )
        opinion = f"`second_opinion/`: {judge}, int8" if judge else "none in this directory"
        judged = (
            f" For the styles with weights the consensus is joined by other judges of each candidate, "
            f"standardised per image and weighted ({per_style}; `python -m ml fit-rerank`, "
            f"ml/rerank_score.py): a second decoder's mean log-probability per word ({opinion}); "
            f"the fit of its words to the photo (`word_vectors.npz`); and of their sentence "
            f"vectors to the photo's projection (`image_text.npz`)."
        )
    return (
        f"\n\nReranking (`neighbours.npz`, `python -m ml neighbours`): the beam's candidates are reordered "
        f"by their CIDEr-D consensus with the captions of the image's nearest training photos of its style "
        f"({info.get('photos')} photos, {info.get('captions')} captions, {info.get('dims')} PCA directions; "
        f"from {sources}).{judged} See models/NOTES.md."
    )


def render_model_card(
    config: dict[str, Any],
    metrics: dict[str, Any],
    notes: str = "",
    confidence: dict[str, Any] | None = None,
    image_text: dict[str, Any] | None = None,
    word_vectors: dict[str, Any] | None = None,
    reranking: dict[str, Any] | None = None,
    judge: str | None = None,
) -> str:
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
    decoding = config.get("decoding", {})
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
{data.get("train_images", "?")} images, {data.get("train_captions", "?")} captions; everything chosen on
{data.get("dataset", "?")} `{data.get("dev_split")}`.
{_sources(data)}

## Decoding defaults
{decoding}{_reranking(reranking, decoding.get("rerank_weights", {}), judge)}

## Metrics (coco-caption definitions, 0-100, on {scored}; best epoch {epoch})

{_metrics_table(rows)}
## Confidence
{_confidence(confidence)}

## Search by meaning
{_image_text(image_text)}{_word_vectors(word_vectors)}

## Training
- {took}.
```
{_format(train)}
```
{NOTES_MARK}
{notes}"""


def refresh_model_card(directory: str | Path, notes: str | None = None) -> Path:
    """Re-render a model directory's README.md from its files, with `notes` or the notes it has."""
    directory = Path(directory)
    card = directory / "README.md"
    old = card.read_text() if card.is_file() else ""
    if notes is None:
        old = old.replace(_OLD_NOTES_MARK, NOTES_MARK)  # cards shipped before `ml export` was renamed
        notes = old.split(NOTES_MARK, 1)[1].lstrip("\n") if NOTES_MARK in old else ""
    config = json.loads((directory / "config.json").read_text())
    metrics_file, confidence_file = directory / "metrics.json", directory / "confidence.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    confidence = json.loads(confidence_file.read_text()) if confidence_file.is_file() else None
    projection = ImageTextProjection.load(directory)
    info = projection.info if projection is not None else None
    words, neighbours = WordVectors.load(directory), Neighbours.load(directory)
    from ml.second_opinion import SECOND_OPINION_DIR  # (TensorFlow: only when a card is refreshed)

    judge_config = directory / SECOND_OPINION_DIR / "config.json"
    judge = json.loads(judge_config.read_text()).get("name") if judge_config.is_file() else None
    card.write_text(
        render_model_card(
            config,
            metrics,
            notes,
            confidence,
            info,
            words.info if words is not None else None,
            neighbours.info if neighbours is not None else None,
            judge,
        )
    )
    return card


def _format(values: dict[str, Any]) -> str:
    return "\n".join(f"{k} = {v!r}" for k, v in values.items())
