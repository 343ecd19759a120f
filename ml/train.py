"""Training: cached features in memory, length-bucketed batches, a compiled step, per-epoch
checkpoints (resumable), dev evaluation with early stopping, CSV and TensorBoard logs.

The objective is cross-entropy on the references ("xe"), or, to fine-tune a trained model,
self-critical training on CIDEr-D ("cider", ml/scst.py), whose steps take batches of images.

`runs/NAME/` is itself a model directory (the best epoch so far), plus `checkpoints/`,
`log.csv` and `tensorboard/`.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from ml.artifact import load_weights, save_model, save_weights
from ml.config import TrainConfig
from ml.data import load_dataset
from ml.decode import Decoder
from ml.encoder_top import TOP_FILE, FineTunedEncoder, fine_tuned
from ml.encoders import Encoder, get_encoder
from ml.features import FeatureCache
from ml.metrics import CaptionScorer, score_captions
from ml.model import CaptionDecoder, DecoderConfig
from ml.model_card import render_model_card
from ml.scst import SelfCritical
from ml.train_step import make_eval_step, make_train_step
from ml.vocab import Vocabulary, detokenize

LOG_FIELDS = ["epoch", "step", "loss", "ce", "reward", "dev_ce", "lr", "tokens_per_s", "seconds", "metrics"]


@dataclass
class Split:
    """Features of a split's images plus their captions as token arrays."""

    images: list[str]
    features: np.ndarray  # float16 [N, P, C]; a tuned top's block inputs [N, P, C_in] (ml/encoder_top.py)
    image_index: np.ndarray  # caption -> row in features
    tokens: list[np.ndarray]  # each <start> (or a style token) ... <end>
    references: dict[str, list[str]]  # image path -> raw captions
    concepts: np.ndarray  # float16 [N, K]: the encoder's class probabilities (K = 0 without)


@dataclass
class Source:
    """One dataset split captions are read from; `style` names its style token (if styles are on)."""

    dataset: str
    root: str
    split: str
    style: str
    limit_images: int | None = None
    captions_per_image: int | None = None


def train_sources(cfg: TrainConfig) -> list[Source]:
    """The main dataset's train split first (its style is the default one), then `cfg.extra`."""
    main = Source(
        cfg.dataset,
        cfg.root,
        cfg.train_split,
        cfg.style or cfg.dataset,
        cfg.limit_images,
        cfg.captions_per_image,
    )
    extra = [
        Source(
            e["dataset"],
            e["root"],
            e.get("split", "train"),
            e.get("style", e["dataset"]),
            e.get("limit_images"),
            e.get("captions_per_image"),
        )
        for e in cfg.extra or []
    ]
    return [main, *extra]


def _read_source(
    source: Source, cache: FeatureCache, skip_bad: bool, progress: bool
) -> tuple[list[str], np.ndarray, dict[str, list[str]]]:
    """(readable images, their float16 features, image -> captions) of one source."""
    data = load_dataset(source.dataset, Path(source.root).expanduser(), split=source.split, skip_bad=skip_bad)
    by_image = data.captions_by_image()
    images = list(by_image)[: source.limit_images] if source.limit_images else list(by_image)
    features, failed = cache.get(images, progress=progress)
    if failed:
        print(f"skipping {len(failed)} unreadable image(s) in {source.split}, e.g. {failed[0]}")
        bad = set(failed)
        keep = [i for i, p in enumerate(images) if p not in bad]
        images, features = [images[i] for i in keep], features[keep]
    return images, features, {p: by_image[p][: source.captions_per_image] for p in images}


def _concepts(encoder: Encoder, features: np.ndarray, wanted: bool) -> np.ndarray:
    """The encoder's class probabilities of every feature grid (float16 [N, 1000]), or [N, 0].

    For a fine-tuned top the "features" are block inputs, and the concepts the frozen top's."""
    if not wanted:
        return np.zeros((len(features), 0), np.float16)
    probs = encoder.frozen_concepts if isinstance(encoder, FineTunedEncoder) else encoder.concept_probs
    chunks = [probs(features[i : i + 512].astype(np.float32)) for i in range(0, len(features), 512)]
    return np.concatenate(chunks).astype(np.float16) if chunks else np.zeros((0, 1000), np.float16)


def training_cache(encoder: Encoder) -> FeatureCache:
    """What training reads per image: the features, or a fine-tuned top's block inputs."""
    return encoder.block_cache if isinstance(encoder, FineTunedEncoder) else FeatureCache(encoder)


def _split(
    parts: list[tuple[list[str], np.ndarray, dict[str, list[str]], str | None]],
    vocab: Vocabulary,
    max_len: int,
    encoder: Encoder,
    concepts: bool,
) -> Split:
    """One Split from (images, features, references, style) parts, captions tokenised."""
    images: list[str] = []
    refs: dict[str, list[str]] = {}
    index, tokens = [], []
    for part_images, _, part_refs, style in parts:
        for path in part_images:
            for caption in part_refs[path]:
                index.append(len(images))
                tokens.append(np.asarray(vocab.encode(caption, max_len, style), np.int32))
            images.append(path)
            refs[path] = part_refs[path]
    features = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    return Split(
        images, features, np.asarray(index, np.int64), tokens, refs, _concepts(encoder, features, concepts)
    )


def prepare_data(
    cfg: TrainConfig, encoder: Encoder, progress: bool = True, vocab: Vocabulary | None = None
) -> tuple[Vocabulary, Split, Split | None]:
    """Train split of every source (and the vocabulary over all of them) and, when evaluating,
    the main dataset's dev split with all its references."""
    cache = training_cache(encoder)
    sources = train_sources(cfg)
    read = [_read_source(src, cache, cfg.skip_bad, progress) for src in sources]
    styles = [src.style for src in sources] if cfg.styles else []
    captions = (c for _, _, refs in read for cs in refs.values() for c in cs)
    if vocab is None:
        vocab = Vocabulary.build(captions, cfg.vocab_size, cfg.min_count, styles)
    elif cfg.styles and not set(styles) <= set(vocab.styles):
        raise ValueError(f"styles {styles} are not all in the starting model's {vocab.styles}")
    parts = [(*r, src.style if cfg.styles else None) for r, src in zip(read, sources, strict=True)]
    train = _split(parts, vocab, cfg.max_len, encoder, cfg.concepts)
    dev = None
    if cfg.eval_every and cfg.dev_split:
        main = Source(cfg.dataset, cfg.root, cfg.dev_split, "", cfg.eval_images)
        dev_part = (*_read_source(main, cache, cfg.skip_bad, progress), None)
        dev = _split([dev_part], vocab, cfg.max_len, encoder, cfg.concepts)
    return vocab, train, dev


def bucketed_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator, drop_last: bool = True):
    """Shuffled batches of similar lengths (less padding), in shuffled order."""
    order = rng.permutation(len(lengths))
    pool = batch_size * 50
    batches = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    if drop_last and len(lengths) >= batch_size:
        batches = [b for b in batches if len(b) == batch_size]
    rng.shuffle(batches)
    return batches


def pad_batch(tokens: list[np.ndarray]) -> np.ndarray:
    """[B, T] int32, padded with 0 to the longest caption of the batch."""
    out = np.zeros((len(tokens), max(len(t) for t in tokens)), np.int32)
    for i, t in enumerate(tokens):
        out[i, : len(t)] = t
    return out


def _learning_rate(cfg: TrainConfig, total_steps: int, peak: float | None = None):
    """The schedule of `cfg` peaking at `peak` (default: the decoder's learning rate)."""
    rate = cfg.learning_rate if peak is None else peak
    if cfg.lr_schedule == "constant":
        return rate
    if cfg.lr_schedule != "cosine":
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine', not {cfg.lr_schedule!r}")
    warmup = min(cfg.warmup_steps, total_steps // 2)
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else rate,
        max(1, total_steps - warmup),
        alpha=0.05,
        warmup_target=rate if warmup else None,
        warmup_steps=warmup,
    )


class Checkpoint:
    """Decoder + optimizer state + loop state in `checkpoints/last.npz` and `state.json`, atomically;
    a fine-tuned encoder top's weights and optimizer state beside them."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory / "checkpoints"
        self.dir.mkdir(parents=True, exist_ok=True)

    @property
    def exists(self) -> bool:
        return (self.dir / "state.json").is_file()

    def save(
        self, decoder: CaptionDecoder, optimizer, state: dict[str, Any], top=None, top_optimizer=None
    ) -> None:
        save_weights(decoder, self.dir / "decoder.npz", dtype="float32")
        arrays = {f"v{i}": np.asarray(v.numpy()) for i, v in enumerate(optimizer.variables)}
        arrays.update({f"rng{i}": np.asarray(v.numpy()) for i, v in enumerate(_rng_state(decoder))})
        if top is not None:
            top.save(self.dir / TOP_FILE)
            arrays.update({f"top{i}": np.asarray(v.numpy()) for i, v in enumerate(top_optimizer.variables)})
        fd, tmp = tempfile.mkstemp(dir=self.dir, suffix=".npz")
        with os.fdopen(fd, "wb") as fp:
            np.savez(fp, **arrays)
        os.replace(tmp, self.dir / "optimizer.npz")
        # state.json last: it marks the checkpoint complete.
        fd, tmp = tempfile.mkstemp(dir=self.dir, suffix=".json")
        with os.fdopen(fd, "w") as fp:
            json.dump(state, fp, indent=2)
        os.replace(tmp, self.dir / "state.json")

    def restore(self, decoder: CaptionDecoder, optimizer, top=None, top_optimizer=None) -> dict[str, Any]:
        load_weights(decoder, self.dir / "decoder.npz")
        optimizer.build(decoder.trainable_variables)
        if top is not None:
            top.load(self.dir / TOP_FILE)
            top_optimizer.build(top.trainable_variables)
        with np.load(self.dir / "optimizer.npz") as data:
            for i, v in enumerate(optimizer.variables):
                v.assign(data[f"v{i}"])
            for i, v in enumerate(_rng_state(decoder)):
                v.assign(data[f"rng{i}"])
            for i, v in enumerate(top_optimizer.variables if top is not None else []):
                v.assign(data[f"top{i}"])
        return json.loads((self.dir / "state.json").read_text())


def _rng_state(decoder: CaptionDecoder) -> list:
    """Variables that are not weights: the dropout layers' seed-generator states."""
    weights = {id(w) for w in decoder.weights}
    return [v for v in decoder.variables if id(v) not in weights]


def _append_log(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as fp:
        writer = csv.DictWriter(fp, fieldnames=LOG_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow({k: row.get(k, "") for k in LOG_FIELDS})


def evaluate_split(
    decoder: Decoder,
    split: Split,
    max_len: int,
    beam_size: int = 1,
    length_penalty: float = 0.0,
    batch_size: int = 100,
    scorer: CaptionScorer | None = None,
) -> dict[str, float]:
    """Decode every image of `split` and score against its references."""
    hyps = decode_split(decoder, split, max_len, beam_size, length_penalty, batch_size)
    if scorer is not None:
        return scorer.score(split.references, hyps)
    return score_captions(split.references, hyps)


def decode_split(
    decoder: Decoder,
    split: Split,
    max_len: int,
    beam_size: int = 1,
    length_penalty: float = 0.0,
    batch_size: int = 100,
) -> dict[str, str]:
    """The best caption of every image of `split`, keyed by image path."""
    hyps: dict[str, str] = {}
    for start in range(0, len(split.images), batch_size):
        feats = split.features[start : start + batch_size].astype(np.float32)
        concepts = split.concepts[start : start + batch_size].astype(np.float32)
        if beam_size == 1:
            best = decoder.greedy(feats, max_len, length_penalty, concepts)
        else:
            best = [h[0] for h in decoder.beam(feats, beam_size, max_len, length_penalty, 1, concepts)]
        for path, h in zip(split.images[start : start + batch_size], best, strict=True):
            hyps[path] = detokenize(decoder.vocab.decode(h.ids))
    return hyps


def _model_config(
    cfg: TrainConfig, out: Path, encoder: Encoder, train: Split, has_dev: bool
) -> dict[str, Any]:
    """What a model directory records about its encoder, decoding defaults, data and training."""
    gh, gw, channels = encoder.feature_shape
    return {
        "name": cfg.name or out.name,
        "encoder": {
            "name": encoder.name,
            "image_size": encoder.image_size,
            "weights": cfg.encoder_weights,
            "options": encoder.options(),
            "weight_source": encoder.weight_source,
            "feature_shape": [gh, gw, channels],
            # Only fine-tuned models say it: theirs is in encoder_top.npz (ml/encoder_top.py).
            **({"tuned_blocks": cfg.tune_blocks} if cfg.tune_blocks else {}),
        },
        "decoding": {
            "beam_size": cfg.beam_size,
            "max_len": cfg.max_len,
            "length_penalty": cfg.length_penalty,
            "style": (cfg.style or cfg.dataset) if cfg.styles else None,
            "block_repeats": cfg.block_repeats,
        },
        "data": {
            "dataset": cfg.dataset,
            "train_split": cfg.train_split,
            "train_images": len(train.images),
            "train_captions": len(train.tokens),
            "dev_split": cfg.dev_split if has_dev else None,
            "sources": [asdict(src) for src in train_sources(cfg)],
        },
        "training": cfg.to_dict(),
    }


def saved_config(out: str | os.PathLike) -> TrainConfig | None:
    """The configuration a run in `out` was started with, if there is one."""
    path = Path(out) / "checkpoints" / "train_config.json"
    return TrainConfig.from_dict(json.loads(path.read_text())) if path.is_file() else None


def train(
    cfg: TrainConfig,
    out: str | os.PathLike,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train per `cfg` into `out`; returns the final state (best metric, epochs run, time).

    With `resume`, continue from the last checkpoint in `out` (`cfg` should be the saved one,
    see `saved_config`). `stop_after` ends this invocation after that many epochs, so a long
    run can be done in resumable chunks.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpoint(out)
    if ckpt.exists and not resume:
        raise FileExistsError(
            f"{out} already holds a run: pass --resume to continue it, or pick another --out"
        )
    (ckpt.dir / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    keras.utils.set_random_seed(cfg.seed)

    encoder = get_encoder(
        cfg.encoder, image_size=cfg.image_size, weights=cfg.encoder_weights, **(cfg.encoder_options or {})
    )
    if cfg.tune_blocks:
        start_top = Path(cfg.init_from) / TOP_FILE if cfg.init_from else None
        encoder = fine_tuned(
            encoder, cfg.tune_blocks, start_top if start_top and start_top.is_file() else None
        )
    top = encoder.top if isinstance(encoder, FineTunedEncoder) else None
    start_vocab = Vocabulary.load(Path(cfg.init_from) / "vocab.json") if cfg.init_from else None
    vocab, train_split, dev = prepare_data(cfg, encoder, progress, start_vocab)
    gh, gw, channels = encoder.feature_shape
    dcfg = DecoderConfig(
        vocab_size=len(vocab),
        feature_dim=channels,
        embed_dim=cfg.embed_dim,
        units=cfg.units,
        feature_proj_dim=cfg.feature_proj_dim,
        attention_dim=cfg.attention_dim,
        rnn=cfg.rnn,
        dropout=cfg.dropout,
        tie_embeddings=cfg.tie_embeddings,
        concept_dim=train_split.concepts.shape[1],
    )
    decoder = CaptionDecoder(dcfg)
    decoder.build_for(gh * gw)
    if cfg.init_from and not (resume and ckpt.exists):
        load_weights(decoder, Path(cfg.init_from) / "decoder.npz")
    if cfg.objective not in ("xe", "cider"):
        raise ValueError(f"objective must be 'xe' or 'cider', not {cfg.objective!r}")
    lengths = np.asarray([len(t) for t in train_split.tokens])
    batch_size = min(cfg.batch_size, len(lengths))
    if cfg.objective == "cider":
        steps_per_epoch = max(1, len(train_split.images) // min(batch_size, len(train_split.images)))
    else:
        steps_per_epoch = len(bucketed_batches(lengths, batch_size, np.random.default_rng(0)))
    optimizer = keras.optimizers.Adam(_learning_rate(cfg, steps_per_epoch * cfg.epochs))
    top_optimizer = (
        keras.optimizers.Adam(_learning_rate(cfg, steps_per_epoch * cfg.epochs, cfg.top_learning_rate))
        if top is not None
        else None
    )
    # With a tuned top, a decoder learning rate of 0 freezes the decoder: only the top trains. (Without
    # one it is a run that learns nothing, as a test of early stopping wants.)
    train_decoder = cfg.learning_rate > 0 or top is None
    step_fn = make_train_step(
        decoder, optimizer, cfg.penalty, cfg.label_smoothing, cfg.clip_norm, top, top_optimizer, train_decoder
    )
    critic = (
        SelfCritical(
            decoder,
            optimizer,
            vocab,
            train_split.tokens,
            train_split.image_index,
            cfg.samples_per_image,
            cfg.max_len,
            cfg.clip_norm,
            top,
            top_optimizer,
            train_decoder,
        )
        if cfg.objective == "cider"
        else None
    )
    eval_fn = make_eval_step(decoder)
    # Dev decoding is always given the concepts (computed once in prepare_data), so a fine-tuned
    # encoder's refusal to compute them from its own features never bites.
    inference = Decoder(
        decoder, vocab, encoder.concept_probs if cfg.concepts else None, block_repeats=cfg.block_repeats
    )

    state: dict[str, Any] = {"epoch": 0, "best": None, "best_epoch": 0, "bad_epochs": 0, "step": 0}
    if resume and ckpt.exists:
        state = ckpt.restore(decoder, optimizer, top, top_optimizer)
        print(f"resuming {out} after epoch {state['epoch']} (best {cfg.early_stop_metric} {state['best']})")
    model_config = _model_config(cfg, out, encoder, train_split, dev is not None)
    writer = tf.summary.create_file_writer(str(out / "tensorboard"))
    started = time.time()
    scorer = CaptionScorer() if dev is not None else None
    last_epoch = cfg.epochs if stop_after is None else min(cfg.epochs, state["epoch"] + stop_after)
    for epoch in range(state["epoch"] + 1, last_epoch + 1):
        # Batches are seeded per epoch and dropout's RNG state is checkpointed, so a resumed run
        # continues exactly as an uninterrupted one. (Re-seeding TF per epoch instead would
        # re-instantiate the compiled step: about a second per call.)
        rng = np.random.default_rng(cfg.seed + epoch)
        batches = critic.batches(batch_size, rng) if critic else bucketed_batches(lengths, batch_size, rng)
        bar = tqdm(
            batches,
            desc=f"epoch {epoch}/{cfg.epochs}",
            unit="batch",
            disable=not progress,
            dynamic_ncols=True,
        )
        # `fit` is the cross-entropy ("xe") or the mean CIDEr-D reward of the samples ("cider").
        fit_name = "reward" if critic else "ce"
        t0, n_tokens, loss_sum, fit_sum = time.time(), 0.0, 0.0, 0.0
        for i, batch in enumerate(bar, 1):
            if critic:  # a batch of images
                feats = train_split.features[batch].astype(np.float32)
                m = critic.step(batch, feats, train_split.concepts[batch].astype(np.float32))
            else:  # a batch of captions
                rows = train_split.image_index[batch]
                feats = train_split.features[rows].astype(np.float32)
                toks = pad_batch([train_split.tokens[j] for j in batch])
                m = step_fn(feats, toks, train_split.concepts[rows].astype(np.float32))
            loss, fit, count = float(m["loss"]), float(m[fit_name]), float(m["tokens"])
            loss_sum, fit_sum, n_tokens = loss_sum + loss, fit_sum + fit, n_tokens + count
            state["step"] += 1
            if i % 10 == 0 or i == len(batches):
                rate = n_tokens / max(time.time() - t0, 1e-9)
                bar.set_postfix(
                    loss=f"{loss_sum / i:.3f}", **{fit_name: f"{fit_sum / i:.3f}"}, tok_s=f"{rate:,.0f}"
                )
            if state["step"] % 50 == 0:
                with writer.as_default(step=state["step"]):
                    tf.summary.scalar("train/loss", loss)
                    tf.summary.scalar(f"train/{fit_name}", fit)
        bar.close()
        seconds = time.time() - t0
        row: dict[str, Any] = {
            "epoch": epoch,
            "step": state["step"],
            "loss": round(loss_sum / len(batches), 4),
            fit_name: round(fit_sum / len(batches), 4),
            "tokens_per_s": round(n_tokens / seconds),
            "seconds": round(seconds, 1),
            "lr": float(keras.ops.convert_to_numpy(optimizer.learning_rate)),
        }
        improved = True
        metrics: dict[str, float] = {}
        if dev is not None and epoch % cfg.eval_every == 0:
            # A tuned top: this epoch's features of the dev block inputs.
            dev_now = dev if top is None else replace(dev, features=encoder.tuned_features(dev.features))
            row["dev_ce"] = round(_dev_ce(eval_fn, dev_now, batch_size), 4)
            metrics = evaluate_split(inference, dev_now, cfg.max_len, scorer=scorer)
            row["metrics"] = json.dumps({k: round(v, 2) for k, v in metrics.items()})
            value = metrics[cfg.early_stop_metric]
            improved = state["best"] is None or value > state["best"]
            if improved:
                state.update(best=value, best_epoch=epoch, bad_epochs=0)
            else:
                state["bad_epochs"] += 1
            print(
                f"epoch {epoch}: dev ce {row['dev_ce']}  "
                + "  ".join(f"{k} {v:.2f}" for k, v in metrics.items())
            )
        with writer.as_default(step=epoch):
            for k in ("loss", "ce", "reward", "dev_ce", "tokens_per_s"):
                if k in row:
                    tf.summary.scalar(f"epoch/{k}", row[k])
            for k, v in metrics.items():
                tf.summary.scalar(f"dev/{k}", v)
        _append_log(out / "log.csv", row)
        state["epoch"] = epoch
        if improved:
            record = {"epoch": epoch, "dev_greedy": metrics} if metrics else {"epoch": epoch}
            save_model(
                out,
                decoder,
                vocab,
                model_config,
                metrics=record,
                card=render_model_card(model_config, record),
                top=top,
            )
        ckpt.save(decoder, optimizer, state, top, top_optimizer)
        if dev is not None and state["bad_epochs"] >= cfg.patience:
            print(f"early stop: {cfg.early_stop_metric} has not improved for {cfg.patience} evaluations")
            break
    writer.close()
    if scorer is not None:
        scorer.close()
    state["seconds"] = round(time.time() - started, 1)
    return state


def _dev_ce(eval_fn, dev: Split, batch_size: int) -> float:
    lengths = np.asarray([len(t) for t in dev.tokens])
    total, count = 0.0, 0.0
    for batch in bucketed_batches(lengths, batch_size, np.random.default_rng(0), drop_last=False):
        rows = dev.image_index[batch]
        m = eval_fn(
            dev.features[rows].astype(np.float32),
            pad_batch([dev.tokens[j] for j in batch]),
            dev.concepts[rows].astype(np.float32),
        )
        total += float(m["ce"]) * float(m["tokens"])
        count += float(m["tokens"])
    return total / max(count, 1.0)
