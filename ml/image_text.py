"""Photos and sentences in one space: the encoder's pooled features projected into the space of the
sentence embeddings (ml/text_embedding.py), so that a search query can meet the photo itself and not
only the words of its caption.

Both encoders stay frozen: a small MLP maps the pooled EfficientNet features [C] to 384 dimensions,
trained contrastively (CLIP's symmetric InfoNCE loss with a learned temperature) on the training
images and their captions, each caption embedded once by all-MiniLM-L6-v2. It is stored in the
model directory as `image_text.npz` (`python -m ml align`) and applied in numpy by the captioner,
from the same forward pass that captions the image.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ml.paths import cache_dir

IMAGE_TEXT_FILE = "image_text.npz"
_EMBED_CHUNK = 1024  # captions embedded (and cached) together: the unit of resuming
_ARRAYS = ("mean", "scale", "w1", "b1", "w2", "b2")


@dataclass
class ImageTextProjection:
    """Pooled features [N, C] -> unit vectors [N, 384] in the sentence-embedding space."""

    mean: np.ndarray  # [C] standardisation of the pooled features, from the training images
    scale: np.ndarray  # [C]
    w1: np.ndarray  # [C, H]
    b1: np.ndarray  # [H]
    w2: np.ndarray  # [H, D]
    b2: np.ndarray  # [D]
    info: dict = field(default_factory=dict)  # how it was trained and how well it retrieves

    def embed(self, pooled: np.ndarray) -> np.ndarray:
        x = (np.asarray(pooled, np.float32) - self.mean) / self.scale
        h = np.maximum(x @ self.w1 + self.b1, 0.0)  # [N, H]
        out = h @ self.w2 + self.b2  # [N, D]
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def save(self, directory: str | os.PathLike) -> Path:
        path = Path(directory) / IMAGE_TEXT_FILE
        # float16 weights: half the size in the model directory, well within the projection's noise.
        arrays = {
            k: getattr(self, k).astype(np.float16 if k in ("w1", "w2") else np.float32) for k in _ARRAYS
        }
        with open(path, "wb") as fp:
            np.savez(fp, info=np.array(json.dumps(self.info)), **arrays)
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike) -> ImageTextProjection | None:
        path = Path(directory) / IMAGE_TEXT_FILE
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k].astype(np.float32) for k in _ARRAYS}
            info = json.loads(str(data["info"]))
        return cls(**arrays, info=info)


def embed_texts_cached(texts: Sequence[str], progress: bool = True) -> np.ndarray:
    """Sentence embeddings of `texts` [N, 384], cached on disk a chunk at a time (keyed by the chunk's
    texts), so that a long run resumes and every experiment embeds each caption once."""
    from tqdm import tqdm

    from ml.features import save_npy_atomic
    from ml.text_embedding import DIMENSIONS, shared_embedder

    root = cache_dir() / "text_embeddings"
    root.mkdir(parents=True, exist_ok=True)
    out = np.zeros((len(texts), DIMENSIONS), np.float32)
    bar = tqdm(total=len(texts), desc="embedding captions", unit="text", disable=not progress)
    for start in range(0, len(texts), _EMBED_CHUNK):
        chunk = list(texts[start : start + _EMBED_CHUNK])
        key = hashlib.sha256("\n".join(chunk).encode()).hexdigest()[:24]
        path = root / f"{key}.npy"
        try:
            vectors = np.load(path)
        except (OSError, ValueError):
            vectors = shared_embedder().embed(chunk)
            save_npy_atomic(path, vectors)
        out[start : start + len(chunk)] = vectors
        bar.update(len(chunk))
    bar.close()
    return out


# Words a search query leaves out; the rest of a caption is what short queries are drawn from.
_STOP_WORDS = frozenset(
    "a an and are as at be but by for from has have he her his in into is it its of on or she that the "  # noqa: SIM905
    "their them there they this to was were will with while who which".split()
)


def short_queries(caption: str, count: int, rng: np.random.Generator) -> list[str]:
    """`count` queries as people type them, from one caption: 1-3 of its content words, in order
    ("a brown dog runs on the beach" -> "dog beach"). Training on them too keeps the projection
    good at keywords, not only at whole sentences."""
    words = [w for w in re.findall(r"[a-z]+", caption.lower()) if w not in _STOP_WORDS and len(w) > 1]
    if not words:
        return []
    out = []
    for _ in range(count):
        k = int(rng.integers(1, min(3, len(words)) + 1))
        chosen = sorted(rng.choice(len(words), size=k, replace=False))
        out.append(" ".join(words[i] for i in chosen))
    return out


def recall_at(image_vectors: np.ndarray, query_vectors: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Text-to-image recall@1/5/10 (%): query i should find image truth[i] among the most similar."""
    similarity = query_vectors @ image_vectors.T  # [Q, I]
    target = similarity[np.arange(len(truth)), truth][:, None]
    rank = (similarity > target).sum(axis=1)  # 0 = first
    return {f"R@{k}": round(float((rank < k).mean() * 100), 2) for k in (1, 5, 10)}


def fit_image_text_projection(
    pooled: np.ndarray,
    texts: np.ndarray,
    owner: np.ndarray,
    dev: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    *,
    hidden: int = 1024,
    epochs: int = 30,
    batch_size: int = 512,
    learning_rate: float = 1e-3,
    weight_decay: float = 1e-4,
    dropout: float = 0.2,
    seed: int = 0,
    progress: bool = True,
) -> ImageTextProjection:
    """Train on images `pooled` [I, C] and caption embeddings `texts` [T, 384], caption t describing
    image owner[t]. Each step pairs `batch_size` distinct images with one of their captions each;
    `dev` (pooled, texts, owner) is scored after every epoch and the best epoch kept."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    mean = pooled.mean(axis=0).astype(np.float32)
    scale = (pooled.std(axis=0) + 1e-3).astype(np.float32)
    x_all = ((pooled - mean) / scale).astype(np.float32)
    dim = texts.shape[1]
    w1 = tf.Variable(tf.keras.initializers.GlorotUniform(seed)((pooled.shape[1], hidden)), name="w1")
    b1 = tf.Variable(tf.zeros([hidden]), name="b1")
    w2 = tf.Variable(tf.keras.initializers.GlorotUniform(seed + 1)((hidden, dim)), name="w2")
    b2 = tf.Variable(tf.zeros([dim]), name="b2")
    log_scale = tf.Variable(np.log(1 / 0.07), dtype=tf.float32, name="log_scale")  # CLIP's start
    variables = [w1, b1, w2, b2, log_scale]
    optimizer = tf.keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay)
    optimizer.exclude_from_weight_decay(var_list=[b1, b2, log_scale])

    @tf.function
    def step(x: tf.Tensor, t: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            h = tf.nn.dropout(tf.nn.relu(x @ w1 + b1), dropout)  # [B, H]
            v = tf.math.l2_normalize(h @ w2 + b2, axis=1)  # [B, D]
            logits = tf.exp(tf.minimum(log_scale, np.log(100.0))) * (v @ tf.transpose(t))  # [B, B]
            labels = tf.range(tf.shape(x)[0])
            loss = 0.5 * (
                tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
                + tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, tf.transpose(logits)))
            )
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return loss

    captions_of: list[list[int]] = [[] for _ in range(len(pooled))]
    for t, i in enumerate(owner):
        captions_of[int(i)].append(t)
    trainable = np.array([i for i, c in enumerate(captions_of) if c])

    def snapshot(info: dict) -> ImageTextProjection:
        arrays = [v.numpy().astype(np.float32) for v in (w1, b1, w2, b2)]
        return ImageTextProjection(mean, scale, *arrays, info=info)

    best: ImageTextProjection | None = None
    history = []
    for epoch in range(1, epochs + 1):
        order = rng.permutation(trainable)
        losses = []
        for start in range(0, len(order) - batch_size + 1, batch_size):
            images = order[start : start + batch_size]
            chosen = [captions_of[i][rng.integers(len(captions_of[i]))] for i in images]
            losses.append(float(step(tf.constant(x_all[images]), tf.constant(texts[chosen]))))
        row = {"epoch": epoch, "loss": round(float(np.mean(losses)), 4)}
        if dev is not None:
            candidate = snapshot({})
            row.update(recall_at(candidate.embed(dev[0]), dev[1], dev[2]))
        history.append(row)
        if progress:
            print(json.dumps(row), flush=True)
        score = row.get("R@10", epoch)  # without dev: the last epoch
        if best is None or score >= best.info["score"]:
            best = snapshot({"score": score, "epoch": epoch})
    assert best is not None, "no training step: fewer images than batch_size"
    best.info = {
        "epoch": best.info["epoch"],
        "dev": next(r for r in history if r["epoch"] == best.info["epoch"]),
        "history": history,
        "images": int(len(trainable)),
        "captions": int(len(texts)),
        "hidden": hidden,
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
    }
    return best
