"""A caption's confidence in [0, 1]: how likely it is to be right, from what decoding already knows.

The raw beam score does not warn (nonsense scores like sense), so confidence combines
several cheap signals of one forward pass into a logistic model fitted on held-out images
(`python -m ml calibrate`, stored as `confidence.json` in the model directory):

- how sure the decoder was of its words, and how far the best caption is ahead of the next;
- whether the N-best candidates agree with each other;
- how sure the encoder's ImageNet classifier is (its best label, its entropy) and whether the
  caption names what the classifier sees;
- how much the feature grid varies across the picture (a blank or 1x1 image varies not at all);
- whether the classifier sees a page, a chart or a screen capture rather than a photo: a caption
  of a scene is not what such a picture needs (its text is).
- whether the caption says what people said of the most similar training photos (its consensus,
  from reranking: ml/rerank.py).

The file names the features it was fitted on, so a calibration made before a feature existed keeps
predicting from its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ml.concepts import label_probs
from ml.vocab import FUNCTION_WORDS

if TYPE_CHECKING:
    from ml.captioner import Candidate

CONFIDENCE_FILE = "confidence.json"
# ImageNet classes that pages of text, charts and screenshots fall into.
DOCUMENT_CLASSES = ("web site", "menu", "crossword puzzle", "book jacket", "comic book", "envelope", "packet")
FEATURES = (
    "mean_log_prob",  # log-probability per word (and <end>) of the best caption
    "margin",  # its score minus the second candidate's
    "nbest_agreement",  # mean share of its content words that the other candidates also say
    "tag_max",  # probability of the classifier's best label
    "tag_entropy",  # entropy of the label distribution (nats)
    "tag_in_caption",  # probability mass of the labels the caption names
    "spatial_spread",  # log(1 + mean over channels of the features' spread over the grid)
    "document",  # probability of the classes a page of text, a chart or a screenshot falls into
    "length",  # words in the best caption
    "consensus",  # its agreement with the captions of the nearest training photos (0 without reranking)
)
# Candidates the agreement feature compares: the platform's N-best (IMGCAP_N_BEST), whatever a caller
# asks for, so calibration and every caller see the same feature.
NBEST = 3


def _content(words: list[str]) -> set[str]:
    """Content words, plurals folded ("dogs" -> "dog"), for comparing captions and labels."""
    out = set()
    for w in words:
        if w in FUNCTION_WORDS:
            continue
        out.add(w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w)
    return out


def confidence_features(
    candidates: list[list[Candidate]], concepts: np.ndarray | None, features: np.ndarray
) -> np.ndarray:
    """Per image the FEATURES row [N, len(FEATURES)] (float64); `concepts` may be None (no classifier)."""
    n = len(candidates)
    if concepts is not None:
        labels, per_label = label_probs(concepts)
    else:
        labels, per_label = (), np.zeros((n, 0), np.float32)
    spread = np.log1p(np.asarray(features, np.float32).std(axis=1).mean(axis=1))
    document = np.zeros(n)
    if concepts is not None:
        document = np.asarray(concepts, np.float64)[:, _document_columns()].sum(axis=1)
    rows = np.zeros((n, len(FEATURES)))
    for i, cands in enumerate(candidates):
        if not cands:
            continue
        best = cands[0]
        words = _content(best.words)
        others = [_content(c.words) for c in cands[1:NBEST]]
        agreement = np.mean([len(words & o) / max(len(words), 1) for o in others]) if others else 1.0
        p = per_label[i] if len(labels) else np.zeros(0)
        named = sum(
            float(p[j]) for j, label in enumerate(labels) if p[j] > 0.01 and _content(label.split()) <= words
        )
        rows[i] = (
            best.log_prob / (len(best.words) + 1),
            best.score - cands[1].score if len(cands) > 1 else 0.0,
            agreement,
            float(p.max()) if len(p) else 0.0,
            float(-(p * np.log(np.clip(p, 1e-12, None))).sum()) if len(p) else 0.0,
            named,
            spread[i],
            document[i],
            len(best.words),
            best.consensus or 0.0,
        )
    return rows


def _document_columns() -> list[int]:
    from ml.encoders.imagenet import imagenet_classes

    classes = imagenet_classes()
    return [classes.index(name) for name in DOCUMENT_CLASSES]


@dataclass
class ConfidenceModel:
    """Standardised features -> logistic regression: P(the caption is right)."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    info: dict  # how it was fitted and how well it ranks (written to the file and the model card)
    features: tuple[str, ...] = FEATURES  # the FEATURES it was fitted on (older files: fewer)

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """P(right) from confidence_features rows [N, len(FEATURES)]."""
        rows = np.asarray(rows)[:, [FEATURES.index(f) for f in self.features]]
        z = ((rows - self.mean) / self.scale) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / CONFIDENCE_FILE
        data = {
            "features": list(self.features),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept,
            **self.info,
        }
        path.write_text(json.dumps(data, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> ConfidenceModel | None:
        """The model directory's calibration, or None if it has none (confidence is then unknown)."""
        path = Path(directory) / CONFIDENCE_FILE
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        features = tuple(data.get("features") or ())
        if not features or not set(features) <= set(FEATURES):
            raise ValueError(f"{path}: fitted on features {list(features)}, this code computes {FEATURES}")
        info = {k: v for k, v in data.items() if k not in ("features", "mean", "scale", "coef", "intercept")}
        arrays = (np.asarray(data[k], np.float64) for k in ("mean", "scale", "coef"))
        return cls(*arrays, float(data["intercept"]), info, features)
