"""Decoder throughput: captions/s at batch 1, 16 and 64, greedy and beam search, on this machine.

    .venv/bin/python -m bench.bench_decoder [--model DIR] [--batches 1 16 64] [--beams 1 3 5]

On a trained model (default: `models/default` if present) the features are real Flickr8k dev
images, so captions stop where the model ends them. Without one, a randomly initialised
decoder of the default size (vocabulary 5000, 7x7x1280 features) decodes to `--max-len`
words: the worst case.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench.timing import best_rate, write_results
from ml.paths import default_model_dir

DEV_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "flickr8k" / "images"


def _random_decoder(max_len: int):
    from ml.decode import Decoder
    from ml.model import CaptionDecoder, DecoderConfig
    from ml.vocab import Vocabulary

    vocab = Vocabulary(f"w{i}" for i in range(4996))
    model = CaptionDecoder(DecoderConfig(vocab_size=len(vocab), feature_dim=1280))
    model.build_for(49)
    # Without <end> ever winning, every caption runs to max_len: a fixed, worst-case amount of work.
    model.get_layer("logits").bias.assign(np.where(np.arange(len(vocab)) == vocab.end_id, -1e4, 0.0))
    return Decoder(model, vocab), np.random.default_rng(0).uniform(0, 6, (64, 49, 1280)).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory (default: models/default if present)")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16, 64])
    parser.add_argument("--beams", nargs="+", type=int, default=[1, 3, 5])
    parser.add_argument("--max-len", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args(argv)

    model_dir = Path(args.model) if args.model else default_model_dir()
    if (model_dir / "config.json").is_file():
        from ml.captioner import load_captioner

        captioner = load_captioner(model_dir)
        decoder, source = captioner.decoder, str(model_dir)
        files = sorted(DEV_IMAGES.iterdir())[: max(args.batches)]
        features = captioner.encoder.encode(files)
    else:
        decoder, features = _random_decoder(args.max_len)
        source = "random decoder (worst case: always max_len words)"
    rows = []
    for beam in args.beams:
        row: dict[str, object] = {"beam": beam}
        for batch in args.batches:
            x = features[:batch]
            if beam == 1:
                fn = lambda x=x: decoder.greedy(x, args.max_len)  # noqa: E731
            else:
                fn = lambda x=x, k=beam: decoder.beam(x, k, args.max_len)  # noqa: E731
            row[f"b{batch}"] = round(best_rate(fn, batch, min_seconds=args.seconds), 1)
        rows.append(row)
        print("  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    path = write_results(
        "decoder", {"unit": "captions/s", "model": source, "max_len": args.max_len, "rows": rows}
    )
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
