"""Fit a model's confidence (ml/confidence.py) on held-out captioned images and show how well it ranks.

"Right" is a per-image CIDEr-D of at least `threshold` against the image's references.
Pictures no caption describes (blank, a single pixel, noise, a page of text, a chart) are
added as wrong: the captioner must learn to doubt itself there, and the datasets hold none.
Every set is split in two by position: the model is fitted on the even half and judged on
the odd half (Spearman's rank correlation with per-image CIDEr, AUROC of right/wrong), then
refitted on everything for shipping.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ml.captioner import Captioner
from ml.confidence import ConfidenceModel, confidence_features
from ml.data import load_dataset
from ml.features import FeatureCache
from ml.metrics import per_image_cider

PLOT_FILE = "confidence.png"
OUT_OF_DOMAIN_KINDS = ("blank", "pixel", "noise", "text", "chart")
# Words for the "text" pictures (a screenshot of a document).
_WORDS = (
    *("the", "of", "and", "to", "in", "is", "for", "on", "that", "by", "this", "with", "report"),
    *("you", "it", "not", "or", "be", "are", "from", "at", "as", "your", "all", "have", "new", "more"),
)


@dataclass
class Scored:
    """One set's images: confidence features, per-image CIDEr, and which set they came from."""

    name: str
    rows: np.ndarray  # [N, F]
    cider: np.ndarray  # [N]


def out_of_domain_image(kind: str, rng: random.Random) -> Image.Image:
    """A picture no photo caption describes: `kind` is one of OUT_OF_DOMAIN_KINDS."""
    colour = tuple(rng.randrange(256) for _ in range(3))
    if kind == "blank":
        return Image.new("RGB", (rng.choice([64, 224, 640]),) * 2, colour)
    if kind == "pixel":
        return Image.new("RGB", (1, 1), colour)
    if kind == "noise":
        size = rng.choice([32, 224])
        data = np.random.default_rng(rng.randrange(1 << 30)).integers(0, 256, (size, size, 3), np.uint8)
        return Image.fromarray(data)
    image = Image.new("RGB", (rng.choice([480, 800]), rng.choice([320, 600])), "white")
    draw = ImageDraw.Draw(image)
    if kind == "text":  # a screenshot of a document
        for y in range(12, image.height - 16, rng.choice([14, 18, 24])):
            line = " ".join(rng.choice(_WORDS) for _ in range(rng.randrange(4, 14)))
            draw.text((12, y), line, fill=(rng.randrange(60), rng.randrange(60), rng.randrange(60)))
        return image
    if kind == "chart":  # a bar chart with axes
        left, bottom = 40, image.height - 30
        draw.line([(left, 10), (left, bottom), (image.width - 10, bottom)], fill="black", width=2)
        bars = rng.randrange(3, 12)
        width = (image.width - left - 20) // bars
        for b in range(bars):
            top = rng.randrange(20, bottom - 10)
            x = left + 5 + b * width
            draw.rectangle([x, top, x + width - 8, bottom - 1], fill=colour)
        return image
    raise ValueError(f"unknown kind {kind!r}; choose from {', '.join(OUT_OF_DOMAIN_KINDS)}")


def _score_images(
    captioner: Captioner,
    features: np.ndarray,
    concepts_of: Callable[[int, int], np.ndarray | None],
    batch: int = 50,
):
    """(confidence feature rows, best captions) of feature grids, decoded as the captioner ships;
    `concepts_of(start, stop)` gives those rows' concepts (None without)."""
    rows, texts = [], []
    for start in range(0, len(features), batch):
        feats = features[start : start + batch].astype(np.float32)
        concepts = concepts_of(start, start + batch)
        cands = captioner.caption_features(feats, concepts=concepts)
        rows.append(confidence_features(cands, concepts, feats))
        texts.extend(c[0].text for c in cands)
    return np.concatenate(rows), texts


def score_set(
    captioner: Captioner, name: str, dataset: str, root: str, split: str, limit: int | None, progress: bool
) -> Scored:
    refs = load_dataset(dataset, root, split=split).captions_by_image()
    images = list(refs)[:limit] if limit else list(refs)
    features, failed = FeatureCache(captioner.encoder).get(images, progress=progress)
    keep = [i for i, p in enumerate(images) if p not in set(failed)]
    images, features = [images[i] for i in keep], features[keep]

    def concepts_of(start: int, stop: int) -> np.ndarray | None:
        if not captioner.encoder.has_concepts:
            return None
        chunk = features[start:stop].astype(np.float32)
        return captioner.encoder.cached_concepts(images[start:stop], chunk, progress=False)

    rows, texts = _score_images(captioner, features, concepts_of)
    cider = per_image_cider({p: refs[p] for p in images}, dict(zip(images, texts, strict=True)))
    return Scored(name, rows, np.asarray([cider[p] for p in images]))


def score_out_of_domain(captioner: Captioner, per_kind: int, seed: int) -> Scored:
    rng = random.Random(seed)
    images = [out_of_domain_image(kind, rng) for kind in OUT_OF_DOMAIN_KINDS for _ in range(per_kind)]
    # 32 at a time: memory stays flat
    parts = [
        captioner.encoder.encode_readable_with_concepts(images[i : i + 32]) for i in range(0, len(images), 32)
    ]
    features = np.concatenate([p[0] for p in parts])
    concepts = np.concatenate([p[1] for p in parts]) if captioner.encoder.has_concepts else None
    rows, _ = _score_images(captioner, features, lambda a, b: None if concepts is None else concepts[a:b])
    return Scored("out-of-domain", rows, np.zeros(len(rows)))


def _fit(rows: np.ndarray, right: np.ndarray, info: dict[str, Any]) -> ConfidenceModel:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(rows)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    reg = LogisticRegression(C=1.0, max_iter=1000).fit((rows - scaler.mean_) / scale, right)
    return ConfidenceModel(scaler.mean_, scale, reg.coef_[0], float(reg.intercept_[0]), info)


def calibrate(
    sets: list[Scored], threshold: float
) -> tuple[ConfidenceModel, ConfidenceModel, dict[str, Any]]:
    """Fit on the even half of every set, judge on the odd half, refit on all.

    Returns (the model to ship, the even-half model the report and plot judge, the report)."""
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    def halves(parity: int) -> tuple[np.ndarray, np.ndarray]:
        return (
            np.concatenate([s.rows[parity::2] for s in sets]),
            np.concatenate([s.cider[parity::2] for s in sets]),
        )

    rows, cider = halves(0)
    right = int((cider >= threshold).sum())
    if right in (0, len(cider)):
        state = "no" if right == 0 else "every"
        raise ValueError(f"{state} caption reaches per-image CIDEr {threshold}: choose another --threshold")
    trial = _fit(rows, cider >= threshold, {})
    report: dict[str, Any] = {"threshold_cider": threshold, "held_out": {}}
    for s in sets:
        conf, target = trial.predict(s.rows[1::2]), s.cider[1::2]
        entry: dict[str, Any] = {"images": len(target), "mean_confidence": round(float(conf.mean()), 3)}
        if target.std() > 0:
            entry["spearman"] = round(float(spearmanr(conf, target).statistic), 3)
        right = target >= threshold
        if 0 < right.sum() < len(right):
            entry["auroc"] = round(float(roc_auc_score(right, conf)), 3)
        entry["share_right"] = round(float(right.mean()), 3)
        report["held_out"][s.name] = entry
    all_rows = np.concatenate([s.rows for s in sets])
    all_cider = np.concatenate([s.cider for s in sets])
    model = _fit(all_rows, all_cider >= threshold, {"calibration": report})
    return model, trial, report


def plot(trial: ConfidenceModel, sets: list[Scored], path: Path, title: str, threshold: float) -> Path:
    """Left: per-image CIDEr against confidence on the odd halves, a colour per set. Right: the
    share of right captions per confidence bin against the bin's mean confidence (calibration)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=100)
    confs, rights = [], []
    for s in sets:
        conf = trial.predict(s.rows[1::2])
        left.scatter(conf, s.cider[1::2], s=8, alpha=0.45, label=s.name)
        confs.append(conf)
        rights.append(s.cider[1::2] >= threshold)
    left.set(xlabel="confidence", ylabel="per-image CIDEr-D", xlim=(0, 1))
    left.legend(fontsize=8, loc="upper left")
    conf, ok = np.concatenate(confs), np.concatenate(rights)
    edges = np.linspace(0, 1, 11)
    bins = np.clip(np.digitize(conf, edges) - 1, 0, 9)
    used = [b for b in range(10) if (bins == b).sum() >= 5]
    right.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    right.plot(
        [conf[bins == b].mean() for b in used],
        [ok[bins == b].mean() for b in used],
        marker="o",
        label="all sets",
    )
    right.set(xlabel="confidence (bin mean)", ylabel=f"share right (CIDEr-D >= {threshold})", xlim=(0, 1))
    right.set_ylim(0, 1)
    right.legend(fontsize=8, loc="upper left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
