"""Encoder throughput: images/s at batch 1, 16 and 64 for every encoder, on this machine.

    .venv/bin/python -m bench.bench_encoders [--encoders NAME ...] [--batches 1 16 64]

The network alone (scaled input already in memory), then the full path from JPEG files
(decode, resize, scale, network) at the largest batch. `inception_v3` runs with random
weights: the same arithmetic as the ImageNet weights, which cannot be downloaded here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench.timing import best_rate, write_results
from ml.encoders import ENCODER_NAMES, get_encoder

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "flickr8k" / "images"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoders", nargs="+", default=list(ENCODER_NAMES))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16, 64])
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each timed window")
    args = parser.parse_args(argv)

    files = sorted(SAMPLE_DIR.iterdir())[: max(args.batches)] if SAMPLE_DIR.is_dir() else []
    rows = []
    for name in args.encoders:
        encoder = get_encoder(name, weights="random" if name == "inception_v3" else None)
        h, w, c = encoder.feature_shape
        size = encoder.image_size
        row = {"encoder": name, "image_size": size, "grid": f"{h}x{w}x{c}"}
        for batch in args.batches:
            x = np.random.default_rng(0).uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
            row[f"net_b{batch}"] = round(
                best_rate(lambda x=x, e=encoder: e.encode_batch(x), batch, min_seconds=args.seconds), 1
            )
        if files:
            batch = len(files)
            row[f"files_b{batch}"] = round(
                best_rate(
                    lambda e=encoder, b=batch: e.encode(files, batch_size=b), batch, min_seconds=args.seconds
                ),
                1,
            )
        rows.append(row)
        print("  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    path = write_results("encoders", {"unit": "images/s", "rows": rows})
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
