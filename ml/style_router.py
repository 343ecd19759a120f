"""Pick each image's caption style from the image: Flickr8k's for its kind of photo, another
source's for the rest.

A model trained on several sources (see Vocabulary) can describe a photo in each source's
style. Flickr8k's style names people and what they do, and is right for that kind of photo; on
a bowl of noodles it still puts people in. Conceptual Captions' style names objects and scenes.
The router is a logistic model on the pooled encoder features, fitted to tell the training
images of each source apart (`python -m ml route`), stored as `style_router.json`; the
captioner asks it for every image unless a style is given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROUTER_FILE = "style_router.json"


@dataclass
class StyleRouter:
    styles: list[str]  # index 0 is the model's main style
    mean: np.ndarray  # [C] of the pooled features
    scale: np.ndarray
    coef: np.ndarray  # [len(styles), C] (one row for two styles: the second style's log-odds)
    intercept: np.ndarray
    info: dict

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """Feature grids [N, P, C] -> P(style) [N, len(styles)]."""
        pooled = (np.asarray(features, np.float32).mean(axis=1) - self.mean) / self.scale
        z = pooled @ self.coef.T + self.intercept
        if len(self.styles) == 2:
            p = 1.0 / (1.0 + np.exp(-z[:, 0]))
            return np.stack([1.0 - p, p], axis=1)
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def route(self, features: np.ndarray) -> list[str]:
        return [self.styles[i] for i in self.probabilities(features).argmax(axis=1)]

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / ROUTER_FILE
        data = {
            "styles": self.styles,
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept.tolist(),
            **self.info,
        }
        path.write_text(json.dumps(data) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> StyleRouter | None:
        path = Path(directory) / ROUTER_FILE
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        info = {k: v for k, v in data.items() if k not in ("styles", "mean", "scale", "coef", "intercept")}
        arrays = (np.asarray(data[k], np.float64) for k in ("mean", "scale", "coef", "intercept"))
        return cls(list(data["styles"]), *arrays, info)


def fit_style_router(pooled: dict[str, np.ndarray], seed: int = 0) -> StyleRouter:
    """Logistic regression telling the sources apart, from pooled features [N, C] per style
    (the first style first); reports accuracy on a held-out fifth, then refits on everything."""
    from sklearn.linear_model import LogisticRegression

    styles = list(pooled)
    x = np.concatenate([pooled[s] for s in styles]).astype(np.float64)
    y = np.concatenate([np.full(len(pooled[s]), i) for i, s in enumerate(styles)])
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    x = (x - mean) / scale
    held = np.random.default_rng(seed).random(len(y)) < 0.2
    # Balanced: the sources differ in size, and the router must not favour the bigger one.
    trial = LogisticRegression(C=0.1, max_iter=2000, class_weight="balanced").fit(x[~held], y[~held])
    accuracy = {
        s: round(float((trial.predict(x[held & (y == i)]) == i).mean()), 3) for i, s in enumerate(styles)
    }
    final = LogisticRegression(C=0.1, max_iter=2000, class_weight="balanced").fit(x, y)
    info = {"held_out_accuracy": accuracy, "images": {s: len(pooled[s]) for s in styles}}
    return StyleRouter(styles, mean, scale, final.coef_, final.intercept_, info)
