"""Score a saved model on a dataset split with the coco-caption metrics."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ml.captioner import Captioner
from ml.data import load_dataset
from ml.features import FeatureCache
from ml.metrics import CaptionScorer, score_captions


def _concepts(captioner: Captioner, images: list[str], features: np.ndarray) -> np.ndarray | None:
    """The concepts of a chunk of cached images (a fine-tuned top's come from the frozen one)."""
    return captioner.encoder.cached_concepts(images, features, False) if captioner.needs_concepts else None


def evaluate_model(
    captioner: Captioner,
    dataset: str,
    root: str,
    split: str = "dev",
    beam_size: int | None = None,
    length_penalty: float | None = None,
    limit: int | None = None,
    batch_size: int = 50,
    progress: bool = True,
    scorer: CaptionScorer | None = None,
) -> dict[str, Any]:
    """Caption every image of the split (first `limit` images if given) and score against its references.

    `scorer` keeps one METEOR JVM across several evaluations (its start is 10-20 s); without one,
    this call starts and stops its own.
    Returns {"metrics": {...}, "images": N, "beam_size": k, "seconds": s, "captions": {path: text}}.
    """
    ds = load_dataset(dataset, root, split=split)
    refs = ds.captions_by_image()
    images = list(refs)[:limit] if limit else list(refs)
    features, failed = FeatureCache(captioner.encoder).get(images, progress=progress)
    if failed:
        raise ValueError(f"{len(failed)} unreadable image(s) in {split}, e.g. {failed[0]}")
    k = captioner.beam_size if beam_size is None else beam_size
    started = time.time()
    hyps: dict[str, str] = {}
    for start in range(0, len(images), batch_size):
        chunk = features[start : start + batch_size].astype(np.float32)
        best = captioner.caption_features(
            chunk,
            beam_size=k,
            n_best=1,
            length_penalty=length_penalty,
            concepts=_concepts(captioner, images[start : start + batch_size], chunk),
        )
        for path, cands in zip(images[start : start + batch_size], best, strict=True):
            hyps[path] = cands[0].text
    decode_seconds = time.time() - started
    references = {p: refs[p] for p in images}
    metrics = scorer.score(references, hyps) if scorer is not None else score_captions(references, hyps)
    return {
        "dataset": dataset,
        "split": split,
        "images": len(images),
        "beam_size": k,
        "length_penalty": captioner.length_penalty if length_penalty is None else length_penalty,
        "metrics": {name: round(v, 2) for name, v in metrics.items()},
        "decode_seconds": round(decode_seconds, 2),
        "captions": hyps,
    }


def sweep_decoding(
    captioner: Captioner,
    dataset: str,
    root: str,
    split: str = "dev",
    beams: tuple[int, ...] = (1, 3, 5),
    length_penalties: tuple[float, ...] = (0.0,),
    limit: int | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Score every (beam width, length penalty) pair on the split: the decoding knobs need no training.

    Returns rows {"beam_size", "length_penalty", "metrics", "decode_seconds"}, in the order asked.
    """
    rows = []
    with CaptionScorer() as scorer:
        for k in beams:
            # Greedy search ignores the length penalty: score it once.
            for lp in length_penalties if k > 1 else length_penalties[:1]:
                result = evaluate_model(
                    captioner, dataset, root, split, k, lp, limit, progress=progress, scorer=scorer
                )
                keys = ("beam_size", "length_penalty", "metrics", "decode_seconds")
                rows.append({key: result[key] for key in keys})
    return rows
