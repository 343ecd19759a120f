"""Sentence embeddings (ml/text_embedding.py): a search query's latency in the web process, and
captions embedded per second in the worker.

    .venv/bin/python -m bench.bench_text_embedding [--queries 200]

Queries are one to three words and whole Flickr8k-style sentences (the issue's target: under
20 ms for a short query); the caption rate is for batches of 64 real Flickr8k captions.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from bench.timing import best_rate, write_results

CAPTIONS = Path(__file__).resolve().parents[2] / "shared" / "data" / "flickr8k" / "captions.txt"
QUERIES = ["puppy", "kids", "red car", "food on a table", "dog in snow", "beach sunset"]
SENTENCES = ["a black dog runs through the snow", "two children play football on a grassy field"]


def _captions(n: int) -> list[str]:
    if CAPTIONS.is_file():
        lines = [line.split(",", 1)[-1].strip() for line in CAPTIONS.read_text().splitlines()[1 : n + 1]]
        if len(lines) >= n:
            return lines
    return [f"{SENTENCES[i % 2]} number {i}" for i in range(n)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=200, help="timed queries of each kind")
    args = parser.parse_args(argv)
    from ml.text_embedding import TextEmbedder

    started = time.perf_counter()
    embedder = TextEmbedder()
    load_s = time.perf_counter() - started
    embedder.embed(["warm up"])
    latency = {}
    for kind, texts in (("short query", QUERIES), ("sentence query", SENTENCES)):
        times = []
        for i in range(args.queries):
            t0 = time.perf_counter()
            embedder.embed([texts[i % len(texts)]])
            times.append(1000 * (time.perf_counter() - t0))
        latency[kind] = {
            "p50_ms": round(float(np.median(times)), 2),
            "p95_ms": round(float(np.percentile(times, 95)), 2),
        }
    captions = _captions(64)
    rate = best_rate(lambda: embedder.embed(captions), len(captions))
    result = {"load_s": round(load_s, 2), "latency": latency, "captions_per_s_batch_64": round(rate, 1)}
    print(result)
    write_results("text_embedding", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
