"""Training speed: the TensorFlow tutorial's train_step against ours, on the same synthetic batch.

    .venv/bin/python -m bench.bench_train [--steps N] [--warmup N] [--batch B] [--length L] [--quick]

Every implementation is traced and warmed up first, then the timed steps go round-robin over all
of them, so a machine whose load changes during the run slows every row alike instead of
whichever happened to be running. Speed is non-padding target tokens per second (both
implementations compute the padded positions too, so padding is paid for but not counted).
Results: a table on stdout and bench/results/train_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "train_speed.json"
SEED = 1234
VOCAB = 5000
START, END = 1, 2  # padding is 0; words are 3..VOCAB-1


@dataclass
class Row:
    """One implementation under test; `step(features, tokens)` returns its loss."""

    name: str
    positions: int
    channels: int
    step: Callable[[Any, Any], float]
    check: bool = False  # run the does-it-train sanity check on this one
    trace_s: float = 0.0
    times: dict[str, list[float]] = field(default_factory=dict)
    losses: dict[str, list[float]] = field(default_factory=dict)


def make_tokens(batch: int, length: int, full: bool, rng: np.random.Generator) -> np.ndarray:
    """[batch, length+1] int32: <start>, words, <end>, then padding 0.

    `length` counts target tokens (words + <end>); mixed batches draw it from 8..length.
    """
    tokens = np.zeros((batch, length + 1), np.int32)
    lo = min(8, length)
    lengths = np.full(batch, length) if full else rng.integers(lo, length + 1, size=batch)
    for i, n in enumerate(lengths):
        tokens[i, 0] = START
        tokens[i, 1:n] = rng.integers(3, VOCAB, size=n - 1)
        tokens[i, n] = END
    return tokens


def make_features(batch: int, positions: int, channels: int, seed: int) -> np.ndarray:
    # Non-negative and sparse-ish like post-ReLU CNN features; the values do not affect speed.
    rng = np.random.default_rng(seed)
    return np.maximum(rng.standard_normal((batch, positions, channels), np.float32), 0.0)


def flickr8k_lengths(limit: int) -> np.ndarray | None:
    """Target-token counts (words + <end>) of `limit` random real Flickr8k training captions."""
    from ml.data import load_dataset
    from ml.vocab import tokenize

    root = Path(__file__).resolve().parents[2] / "shared" / "data" / "flickr8k"
    if not root.is_dir():
        return None
    records = load_dataset("flickr8k", root, split="train").records
    picked = np.random.default_rng(SEED).choice(len(records), size=limit, replace=False)
    return np.asarray([len(tokenize(records[i].caption)) + 1 for i in picked])


def epoch_sample(rows: list[Row], args: argparse.Namespace, features: dict) -> list[dict[str, Any]]:
    """The same real captions through both trainers, each batching them its own way.

    The tutorial pads every caption to `length` positions; ours groups similar lengths and
    pads each batch only to its longest caption (what ml.train does). Captions longer than
    `length` are cut for both, so both learn exactly the same tokens.
    """
    import tensorflow as tf

    lengths = flickr8k_lengths(args.batch * args.epoch_batches)
    if lengths is None:
        return []
    lengths = np.minimum(lengths, args.length)
    rng = np.random.default_rng(SEED)
    words = [rng.integers(3, VOCAB, size=n - 1) for n in lengths]

    def batch_of(idx: np.ndarray, width: int) -> tf.Tensor:
        out = np.zeros((len(idx), width + 1), np.int32)
        for row, i in enumerate(idx):
            out[row, 0], out[row, 1 : lengths[i]], out[row, lengths[i]] = START, words[i], END
        return tf.constant(out)

    shuffled = rng.permutation(len(lengths)).reshape(args.epoch_batches, args.batch)
    tutorial_batches = [batch_of(idx, args.length) for idx in shuffled]
    by_length = np.argsort(lengths, kind="stable").reshape(args.epoch_batches, args.batch)
    our_batches = [batch_of(idx, int(lengths[idx].max())) for idx in by_length]
    real_tokens = int(lengths.sum())
    out = []
    for row in rows:
        if row.positions != 64 or "eager" in row.name:
            continue
        batches = tutorial_batches if row.name.startswith("tutorial") else our_batches
        feats = features[(row.positions, row.channels)]
        start = time.perf_counter()
        for tokens in batches:
            row.step(feats, tokens)
        seconds = time.perf_counter() - start
        out.append(
            {
                "name": row.name,
                "captions": len(lengths),
                "real_tokens": real_tokens,
                "padded_positions": int(sum(int(np.prod(b.shape)) - b.shape[0] for b in batches)),
                "seconds": round(seconds, 2),
                "tokens_per_s": round(real_tokens / seconds, 1),
                "flickr8k_epoch_min": round(30000 / len(lengths) * seconds / 60, 1),
            }
        )
    base = out[0]["tokens_per_s"] if out else 1.0
    for r in out:
        r["speedup_vs_tutorial"] = round(r["tokens_per_s"] / base, 2)
    return out


def build_rows(args: argparse.Namespace) -> list[Row]:
    import keras

    from bench.tutorial_baseline import make_tutorial_train_step
    from ml.model import CaptionDecoder, DecoderConfig
    from ml.train_step import make_train_step

    def tutorial(eager: bool) -> Callable:
        keras.utils.set_random_seed(SEED)
        fn = make_tutorial_train_step(
            vocab_size=VOCAB, embedding_dim=256, units=512, start_id=START, eager=eager
        )
        return lambda f, t: float(fn(f, t))

    def ours(positions: int, channels: int, proj: int, penalty: float) -> Callable:
        keras.utils.set_random_seed(SEED)
        cfg = DecoderConfig(
            vocab_size=VOCAB,
            feature_dim=channels,
            embed_dim=256,
            units=512,
            feature_proj_dim=proj,
            attention_dim=512,
        )
        decoder = CaptionDecoder(cfg)
        decoder.build_for(positions)
        fn = make_train_step(decoder, keras.optimizers.Adam(1e-3), penalty=penalty, label_smoothing=0.0)
        return lambda f, t: float(fn(f, t)["loss"])

    rows = [Row("tutorial train_step (tf.function)", 64, 2048, tutorial(False), check=True)]
    if args.eager:
        rows.append(Row("tutorial train_step (eager)", 64, 2048, tutorial(True)))
    rows += [
        Row("ours (penalty=0)", 64, 2048, ours(64, 2048, 256, 0.0), check=True),
        Row("ours (penalty=1)", 64, 2048, ours(64, 2048, 256, 1.0)),
        # The project's default encoder grid (EfficientNet-Lite 7x7x1280) and projection size.
        Row("ours 49x1280, proj 512 (penalty=0)", 49, 1280, ours(49, 1280, 512, 0.0)),
    ]
    return rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    import tensorflow as tf

    rng = np.random.default_rng(SEED)
    variants = {
        "mixed": make_tokens(args.batch, args.length, full=False, rng=rng),
        "full": make_tokens(args.batch, args.length, full=True, rng=rng),
    }
    counts = {k: int(np.count_nonzero(v[:, 1:])) for k, v in variants.items()}
    tokens = {k: tf.constant(v) for k, v in variants.items()}
    features: dict[tuple[int, int], tf.Tensor] = {}

    rows = build_rows(args)
    for row in rows:
        key = (row.positions, row.channels)
        if key not in features:
            features[key] = tf.constant(make_features(args.batch, *key, seed=SEED))

    # 1. Trace + warm up (both variants share one shape, so one trace serves both).
    for row in rows:
        feats = features[(row.positions, row.channels)]
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            row.step(feats, tokens["mixed"])
        row.trace_s = time.perf_counter() - t0
        print(f"warmed up {row.name}: {row.trace_s:.1f}s for {args.warmup} step(s)", flush=True)

    # 2. Sanity check, not timed: repeated steps on one batch must lower the loss.
    checks = []
    for row in (r for r in rows if r.check and args.check_steps > 1):
        feats = features[(row.positions, row.channels)]
        losses = [row.step(feats, tokens["mixed"]) for _ in range(args.check_steps)]
        ok = bool(np.all(np.isfinite(losses)) and losses[-1] < losses[0])
        checks.append({"name": row.name, "losses": [round(x, 4) for x in losses], "ok": ok})
        verdict = "ok" if ok else "FAILED"
        print(f"check {row.name}: loss {losses[0]:.4f} -> {losses[-1]:.4f} {verdict}", flush=True)

    # 3. Timed steps, round-robin over rows and both batches (see the module docstring).
    for row in rows:
        row.times = {v: [] for v in variants}
        row.losses = {v: [] for v in variants}
    for i in range(args.steps):
        for variant in variants:
            for row in rows:
                feats = features[(row.positions, row.channels)]
                t0 = time.perf_counter()
                loss = row.step(feats, tokens[variant])  # float(): waits for the step to finish
                row.times[variant].append(time.perf_counter() - t0)
                row.losses[variant].append(loss)
        print(f"round {i + 1}/{args.steps} done", flush=True)

    # 4. Real caption lengths, each trainer batching its own way (see epoch_sample).
    print("timing a sample of real Flickr8k captions ...", flush=True)
    epoch = epoch_sample(rows, args, features)

    results = []
    for variant in variants:
        base = None
        for row in rows:
            median = statistics.median(row.times[variant])
            rate = counts[variant] / median
            if base is None:
                base = rate  # the first row is the compiled tutorial step
            results.append(
                {
                    "name": row.name,
                    "variant": variant,
                    "positions": row.positions,
                    "channels": row.channels,
                    "batch": args.batch,
                    "length": args.length,
                    "target_tokens": counts[variant],
                    "s_per_step_median": round(median, 4),
                    "s_per_step_min": round(min(row.times[variant]), 4),
                    "s_per_step_mean": round(statistics.fmean(row.times[variant]), 4),
                    "tokens_per_s": round(rate, 1),
                    "speedup_vs_tutorial": round(rate / base, 2),
                    "warmup_s": round(row.trace_s, 1),
                    "step_times": [round(t, 4) for t in row.times[variant]],
                }
            )
    return {
        "meta": {
            "command": " ".join([Path(sys.executable).name, "-m", "bench.bench_train", *sys.argv[1:]]),
            "args": vars(args),
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "note": "speed-up = tokens/s over the compiled tutorial step on the same variant; s/step is "
            "the median of the timed steps; warm-up (tracing) excluded",
        },
        "checks": checks,
        "results": results,
        "flickr8k_sample": epoch,
    }


def print_table(report: dict[str, Any]) -> None:
    head = (
        f"{'implementation':<38} {'BxL':>7} {'grid':>8} {'s/step':>7} {'min s':>6} "
        f"{'tokens/s':>9} {'speed-up':>8}"
    )
    for variant in ("mixed", "full"):
        rows = [r for r in report["results"] if r["variant"] == variant]
        what = "lengths 8..L, padded" if variant == "mixed" else "every caption full length"
        print(f"\n{variant} ({what}; {rows[0]['target_tokens']} target tokens/step)")
        print(head)
        print("-" * len(head))
        for r in rows:
            shape = f"{r['batch']:>4}x{r['length']:<2} {r['positions']:>3}x{r['channels']:<4}"
            print(
                f"{r['name']:<38} {shape} {r['s_per_step_median']:>7.3f} {r['s_per_step_min']:>6.3f} "
                f"{r['tokens_per_s']:>9,.0f} {r['speedup_vs_tutorial']:>7.2f}x"
            )
    print("\ns/step: median of the timed steps (tokens/s and speed-up use it); min s: the fastest one")
    sample = report.get("flickr8k_sample") or []
    if sample:
        print(
            f"\nreal Flickr8k captions ({sample[0]['captions']} of them, {sample[0]['real_tokens']} tokens), "
            "each trainer batching its own way"
        )
        columns = ("positions", "seconds", "tokens/s", "speed-up", "epoch min")
        print(f"{'implementation':<38} " + " ".join(f"{c:>9}" for c in columns))
        for r in sample:
            print(
                f"{r['name']:<38} {r['padded_positions']:>9} {r['seconds']:>8.2f} {r['tokens_per_s']:>9,.0f} "
                f"{r['speedup_vs_tutorial']:>7.2f}x {r['flickr8k_epoch_min']:>9.1f}"
            )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=None, help="timed steps per row and variant (10)")
    p.add_argument("--warmup", type=int, default=None, help="untimed first steps, tracing included (2)")
    p.add_argument("--batch", type=int, default=None, help="batch size (64)")
    p.add_argument("--length", type=int, default=None, help="max target tokens per caption, <end> in (22)")
    p.add_argument("--check-steps", type=int, default=None, help="steps of the loss-goes-down check (5)")
    p.add_argument("--epoch-batches", type=int, default=None, help="batches of real captions timed (8)")
    p.add_argument("--quick", action="store_true", help="a fast smoke run: batch 16, length 10, few steps")
    p.add_argument("--eager", action="store_true", help="also time the tutorial step run eagerly")
    p.add_argument("--threads", type=int, default=0, help="TF intra-op threads (0: TF's default)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    quick = {"steps": 2, "warmup": 1, "batch": 16, "length": 10, "check_steps": 3, "epoch_batches": 2}
    standard = {"steps": 10, "warmup": 2, "batch": 64, "length": 22, "check_steps": 5, "epoch_batches": 8}
    for key, value in (quick if args.quick else standard).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.length < 2 or args.batch < 1 or args.steps < 1 or args.warmup < 1:
        p.error("need --length >= 2, --batch >= 1, --steps >= 1 and --warmup >= 1 (the first call traces)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    report = run(args)
    print_table(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report["meta"]["args"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    failed = [c["name"] for c in report["checks"] if not c["ok"]]
    if failed:
        print(f"loss did not go down for: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
