"""Fit a model's reranking weights (ml/rerank_score.py) for one caption style on captioned images:
`python -m ml fit-rerank`."""

from __future__ import annotations

from typing import Any

import numpy as np

from ml.captioner import Captioner
from ml.data import load_dataset
from ml.evaluate import _concepts
from ml.features import FeatureCache
from ml.metrics import per_image_cider
from ml.rerank_score import SIGNALS, combined, cross_validated_gain, fit_weights


def fit_rerank(
    captioner: Captioner,
    dataset: str,
    root: str,
    split: str,
    style: str | None = None,
    limit: int | None = None,
    batch_size: int = 50,
    progress: bool = True,
) -> dict[str, Any]:
    """Decode the split's images routed to `style` (default: the model's own), all the beam's
    candidates, score every candidate against the image's references (per-image CIDEr-D) and fit
    the weights whose first candidates score best. Returns {"style", "weights", "images", "cider":
    {"consensus", "fitted", "cross_validated", "best_of_candidates"}} (mean per-image CIDEr-D x 100,
    as the metrics print CIDEr). The captioner's weights for the style are left as fitted."""
    style = captioner.default_style if style is None else style
    if captioner.neighbours is None:
        raise ValueError("this model does not rerank (no neighbours.npz): run `python -m ml neighbours`")
    refs = load_dataset(dataset, root, split=split).captions_by_image()
    images = list(refs)[:limit] if limit else list(refs)
    features, failed = FeatureCache(captioner.encoder).get(images, progress=progress)
    if failed:
        raise ValueError(f"{len(failed)} unreadable image(s) in {split}, e.g. {failed[0]}")
    captioner.rerank_weights[style] = dict.fromkeys(SIGNALS, 0.0)  # signals computed, order: consensus
    kept: list[str] = []
    candidates: list[list] = []
    for start in range(0, len(images), batch_size):
        chunk = features[start : start + batch_size].astype(np.float32)
        routed = (
            captioner.router.route(chunk) if captioner.router is not None else [captioner.style] * len(chunk)
        )
        cands = captioner.caption_features(
            chunk, concepts=_concepts(captioner, images[start : start + batch_size], chunk)
        )
        for path, route, per_image in zip(images[start : start + batch_size], routed, cands, strict=True):
            if (route or captioner.default_style) == style:
                kept.append(path)
                candidates.append(per_image)
    if not kept:
        raise ValueError(f"no image of {split} is captioned in style {style!r}")
    width = max(len(c) for c in candidates)
    gains = np.zeros((len(kept), width))
    for k in range(width):  # CIDEr-D's document frequencies come from the references alone
        hyps = {p: c[min(k, len(c) - 1)].text for p, c in zip(kept, candidates, strict=True)}
        scores = per_image_cider({p: refs[p] for p in kept}, hyps)
        gains[:, k] = [scores[p] for p in kept]
    consensus = [np.asarray([c.consensus for c in cs]) for cs in candidates]
    # A judge may abstain on some images (ml/second_opinion.py): those are ranked without it.
    names = [n for n in SIGNALS if any(n in cs[0].signals for cs in candidates)]
    signals = [
        {n: np.asarray([c.signals[n] for c in cs]) for n in names if n in cs[0].signals} for cs in candidates
    ]
    gain_rows = [gains[i, : len(cs)] for i, cs in enumerate(candidates)]
    weights = fit_weights(consensus, signals, gain_rows, names)
    captioner.rerank_weights[style] = weights

    def mean_picked(order_by: list[np.ndarray]) -> float:
        return 100.0 * float(
            np.mean([g[int(np.argmax(o))] for g, o in zip(gain_rows, order_by, strict=True)])
        )

    return {
        "style": style,
        "weights": weights,
        "images": len(kept),
        "cider": {
            "consensus": round(mean_picked(consensus), 2),
            "fitted": round(
                mean_picked([combined(c, s, weights) for c, s in zip(consensus, signals, strict=True)]), 2
            ),
            "cross_validated": round(100.0 * cross_validated_gain(consensus, signals, gain_rows, names), 2),
            "best_of_candidates": round(100.0 * float(np.mean([g.max() for g in gain_rows])), 2),
        },
    }
