"""Training configuration: defaults, a JSON/TOML file form, and command-line overrides."""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any


@dataclass
class TrainConfig:
    # data
    dataset: str = "flickr8k"
    root: str = "../shared/data/flickr8k"
    train_split: str = "train"
    dev_split: str = "dev"
    limit_images: int | None = None  # train on the first N images only (smoke runs, tests)
    captions_per_image: int | None = None  # use the first K captions of each image
    skip_bad: bool = False
    # More training data: a list of {"dataset", "root", "split" (default "train"), "style",
    # "limit_images", "captions_per_image"}; dev (choosing, early stopping) stays the main dataset's.
    extra: list[dict[str, Any]] | None = None
    styles: bool = False  # each source's captions start with its own style token (see Vocabulary)
    style: str = ""  # the main dataset's style name (default: its format name); decoding uses it
    concepts: bool = False  # feed the encoder's ImageNet class probabilities to the decoder
    # A model directory to start from: its vocabulary and decoder weights (fine-tuning on other
    # data; the decoder options must match it).
    init_from: str | None = None
    # encoder
    encoder: str = "efficientnet_lite0"
    image_size: int | None = None
    encoder_weights: str | None = None
    encoder_options: dict[str, str] | None = None  # e.g. {"scaling": "unit"} for inception_v3_offline
    # Fine-tune the encoder's last N blocks + head with the decoder (ml/encoder_top.py; 0: frozen),
    # at `top_learning_rate` (same schedule as the decoder's). Starts from `init_from`'s tuned top
    # if it has one, else from the ImageNet weights.
    tune_blocks: int = 0
    top_learning_rate: float = 1e-5
    # vocabulary
    vocab_size: int = 5000
    min_count: int = 1
    max_len: int = 30  # words per caption (longer captions are cut in training)
    # decoder
    embed_dim: int = 256
    units: int = 512
    feature_proj_dim: int = 512
    attention_dim: int = 512
    rnn: str = "gru"
    dropout: float = 0.3
    tie_embeddings: bool = False
    # optimisation
    # "xe": cross-entropy on the references (teacher forcing); "cider": self-critical training
    # (ml/scst.py), which samples `samples_per_image` captions per image and rewards their
    # CIDEr-D; it fine-tunes a model trained with "xe" (`init_from`).
    objective: str = "xe"
    samples_per_image: int = 5
    batch_size: int = 64  # captions per step ("xe") or images per step ("cider")
    epochs: int = 20
    learning_rate: float = 1e-3  # 0 with tune_blocks: the decoder stays frozen, only the top trains
    lr_schedule: str = "cosine"  # "constant" or "cosine" (with linear warm-up)
    warmup_steps: int = 200
    penalty: float = 1.0  # doubly-stochastic attention regulariser (lambda)
    label_smoothing: float = 0.0
    clip_norm: float = 5.0
    seed: int = 42
    # evaluation, early stopping, decoding defaults stored with the model
    eval_every: int = 1  # epochs between dev evaluations; 0 = never (no early stopping)
    eval_images: int | None = None  # dev images scored per evaluation (None = all)
    early_stop_metric: str = "CIDEr"
    patience: int = 4
    beam_size: int = 3
    length_penalty: float = 0.0
    block_repeats: bool = True  # decoding never repeats a word or phrase (see ml/decode.py)
    name: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """A .json or .toml file of options (the same names as the command-line flags, with _)."""
        path = Path(path)
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        return cls.from_dict(data)
