"""`python -m ml {train,evaluate,sweep,average,caption,attention,ship,features,calibrate,route,align}`:
ml/ without Django.

TensorFlow is imported inside each command, so `--help` is instant.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from dataclasses import fields
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from ml.config import TrainConfig
from ml.data import DATASET_FORMATS

ENCODER_CHOICES = ("inception_v3", "inception_v3_offline", "efficientnet_lite0", "efficientnet_lite2")


def _flag_type(hint: Any):
    if get_origin(hint) in (Union, types.UnionType):
        hint = next(a for a in get_args(hint) if a is not type(None))
    return hint


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="JSON or TOML file of training options (flags override it)")
    p.add_argument("--out", required=True, help="run directory; it becomes a model directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--stop-after", type=int, help="end this invocation after N epochs (resume later)")
    hints = get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        kind = _flag_type(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        if kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        elif get_origin(kind) in (dict, list):
            p.add_argument(
                flag, type=json.loads, default=None, help=f"JSON (see ml/config.py), default: {f.default!r}"
            )
        else:
            p.add_argument(flag, type=kind, default=None, help=f"default: {f.default!r}")


def _train(args: argparse.Namespace) -> int:
    from ml.train import train

    cfg = TrainConfig.from_file(args.config) if args.config else TrainConfig()
    overrides = {
        f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name) is not None
    }
    cfg = TrainConfig.from_dict({**cfg.to_dict(), **overrides})
    state = train(cfg, args.out, resume=args.resume, progress=not args.quiet)
    print(json.dumps({"out": args.out, **state}))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from ml.captioner import load_captioner
    from ml.evaluate import evaluate_model

    captioner = load_captioner(args.model, args.style)
    result = evaluate_model(
        captioner,
        args.dataset,
        args.root,
        args.split,
        args.beam_size,
        args.length_penalty,
        args.limit,
        progress=not args.quiet,
    )
    captions = result.pop("captions")
    if args.captions:
        Path(args.captions).write_text(
            "".join(json.dumps({"image": k, "caption": v}) + "\n" for k, v in captions.items())
        )
    for name, value in result["metrics"].items():
        print(f"{name:8s} {value:6.2f}", file=sys.stderr)
    print(json.dumps(result))
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from ml.captioner import load_captioner
    from ml.evaluate import sweep_decoding

    captioner = load_captioner(args.model, args.style)
    rows = sweep_decoding(
        captioner,
        args.dataset,
        args.root,
        args.split,
        tuple(args.beams),
        tuple(args.length_penalties),
        args.limit,
        progress=not args.quiet,
    )
    names = list(rows[0]["metrics"])
    print("| beam | length penalty | " + " | ".join(names) + " |", file=sys.stderr)
    print("|---" * (len(names) + 2) + "|", file=sys.stderr)
    for row in rows:
        scores = [f"{row['metrics'][n]:.2f}" for n in names]
        cells = [str(row["beam_size"]), f"{row['length_penalty']:g}", *scores]
        print("| " + " | ".join(cells) + " |", file=sys.stderr)
    print(json.dumps(rows))
    return 0


def _average(args: argparse.Namespace) -> int:
    from ml.averaging import average_run

    out = average_run(args.run, args.weights, args.out)
    print(json.dumps({"out": str(out), "averaged": args.weights}))
    return 0


def _caption(args: argparse.Namespace) -> int:
    from ml.captioner import CaptionResult, load_captioner
    from ml.images import expand_paths

    paths = expand_paths(args.paths)
    captioner = load_captioner(args.model, args.style)
    failed = 0
    for start in range(0, len(paths), args.batch_size):
        chunk = paths[start : start + args.batch_size]
        results: list[CaptionResult] = captioner.caption(chunk, beam_size=args.beam_size, n_best=args.n_best)
        for r in results:
            failed += r.error is not None
            if args.jsonl:
                print(json.dumps(r.to_json()), flush=True)
            elif r.error is not None:
                print(f"{r.image}\tERROR: {r.error}", flush=True)
            else:
                print(f"{r.image}\t{r.caption}\t{r.score:.3f}", flush=True)
    if failed:
        print(f"{failed} of {len(paths)} image(s) could not be captioned", file=sys.stderr)
    return 1 if failed else 0


def _attention(args: argparse.Namespace) -> int:
    from ml.attention_plot import render_attention
    from ml.captioner import load_captioner
    from ml.images import load_image

    captioner = load_captioner(args.model, args.style)
    image = load_image(args.image)
    result = captioner.caption([image], beam_size=args.beam_size, n_best=1)[0]
    best = result.candidates[0]
    render_attention(image, best.words, best.attention).save(args.out)
    print(f"{best.text}\n-> {args.out}")
    return 0


def _features(args: argparse.Namespace) -> int:
    from ml.data import load_dataset
    from ml.encoders import get_encoder
    from ml.features import FeatureCache

    encoder = get_encoder(args.encoder, image_size=args.image_size, **(args.encoder_options or {}))
    cache = FeatureCache(encoder)
    if args.tune_blocks:  # what fine-tuning the top reads (ml/encoder_top.py), not the features
        from ml.encoder_top import fine_tuned

        cache = fine_tuned(encoder, args.tune_blocks).block_cache
    for split in args.split:
        images = load_dataset(args.dataset, args.root, split=split).images()
        _, failed = cache.get(images, batch_size=args.batch_size)
        print(f"{split}: {len(images) - len(failed)} images cached in {cache.root}, {len(failed)} unreadable")
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from ml.calibrate import PLOT_FILE, calibrate, plot, score_out_of_domain, score_set
    from ml.captioner import load_captioner
    from ml.confidence import CONFIDENCE_FILE
    from ml.model_card import refresh_model_card
    from ml.paths import default_model_dir

    directory = Path(args.model) if args.model else default_model_dir()
    # Refitting replaces the old calibration, which may not even fit this code's features.
    (directory / CONFIDENCE_FILE).unlink(missing_ok=True)
    captioner = load_captioner(directory)
    sets = []
    for spec in args.set:
        name, fmt, root, split, *limit = spec.split(":")
        sets.append(
            score_set(captioner, name, fmt, root, split, int(limit[0]) if limit else None, not args.quiet)
        )
    if args.out_of_domain:
        sets.append(score_out_of_domain(captioner, args.out_of_domain, seed=0))
    model, trial, report = calibrate(sets, args.threshold)
    model.save(directory)
    plot(trial, sets, directory / PLOT_FILE, f"{captioner.version}: held-out halves", args.threshold)
    refresh_model_card(directory)
    print(json.dumps(report))
    return 0


def _compress(args: argparse.Namespace) -> int:
    from ml.artifact import WEIGHTS, compress_weights
    from ml.paths import default_model_dir

    directory = Path(args.model) if args.model else default_model_dir()
    before, after = compress_weights(directory / WEIGHTS)
    print(json.dumps({"weights": str(directory / WEIGHTS), "bytes_before": before, "bytes_after": after}))
    return 0


def _second_opinion(args: argparse.Namespace) -> int:
    from ml.model_card import refresh_model_card
    from ml.paths import default_model_dir
    from ml.second_opinion import add_second_opinion

    directory = Path(args.model) if args.model else default_model_dir()
    out = add_second_opinion(directory, args.source)
    refresh_model_card(directory)
    print(json.dumps({"second_opinion": str(out), "from": args.source}))
    return 0


def _fit_rerank(args: argparse.Namespace) -> int:
    from ml.artifact import read_config, write_config
    from ml.captioner import load_captioner
    from ml.model_card import refresh_model_card
    from ml.paths import default_model_dir
    from ml.rerank_fit import fit_rerank
    from ml.second_opinion import SecondOpinion
    from ml.word_vectors import WordVectors

    directory = Path(args.model) if args.model else default_model_dir()
    captioner = load_captioner(directory)
    # The judges load only for a model that has weights: give them to this one before it has any.
    captioner.second_opinion = SecondOpinion.load(directory)
    captioner.word_vectors = WordVectors.load(directory)
    report = fit_rerank(
        captioner, args.dataset, args.root, args.split, args.style, args.limit, progress=not args.quiet
    )
    config = read_config(directory)
    config.setdefault("decoding", {}).setdefault("rerank_weights", {})[report["style"]] = report["weights"]
    write_config(directory, config)
    if args.record:
        report["dev"] = _record_dev_metrics(
            directory, f"beam{captioner.beam_size} reranked, judged", args.root, args.quiet
        )
    refresh_model_card(directory)
    print(json.dumps(report))
    return 0


def _pooled_source(cache, src: dict, limit: int | None, progress: bool) -> tuple[list[str], dict, object]:
    """(readable images, image -> captions, pooled features float32 [N, C]) of one training source."""
    import numpy as np

    from ml.data import load_dataset

    dataset = load_dataset(src["dataset"], Path(src["root"]).expanduser(), split=src["split"])
    captions = dataset.captions_by_image()
    images = list(captions)
    limit = limit or src.get("limit_images")
    if limit:
        images = images[:limit]
    features, failed = cache.get(images, progress=progress)
    bad = set(failed)
    keep = [i for i, p in enumerate(images) if p not in bad]
    return [images[i] for i in keep], captions, features[keep].astype(np.float32).mean(axis=1)


def _training_photos(
    captioner, limit: int | None, progress: bool, style: str | None = None
) -> tuple[list[tuple], list[str]]:
    """Per training source of the model found on this machine (of caption style `style` only, if
    given): (source, readable images, image -> captions, pooled features [N, C]); and what was used,
    in words. ValueError: none is here."""
    from ml.features import FeatureCache

    cache = FeatureCache(captioner.encoder)
    found, used = [], []
    sources = captioner.config.get("data", {}).get("sources") or []
    if style is not None:
        known = sorted({src.get("style") or "" for src in sources})
        sources = [src for src in sources if src.get("style") == style]
        if not sources:
            raise ValueError(f"the model has no training source of style {style!r} (it has: {known})")
    for src in sources:
        if not Path(src["root"]).expanduser().exists():
            # The broad data is fetched by hand (make data-cc): what is fitted comes from what is here.
            print(f"skipping {src['dataset']} at {src['root']}: not found", file=sys.stderr)
            continue
        images, captions, features = _pooled_source(cache, src, limit, progress)
        found.append((src, images, captions, features))
        used.append(f"{src['dataset']}:{src['split']} ({len(images)} images)")
    if not found:
        raise ValueError("none of the model's training data is on this machine")
    return found, used


def _word_vectors(args: argparse.Namespace) -> int:
    import numpy as np

    from ml.captioner import load_captioner
    from ml.image_text import embed_texts_cached
    from ml.model_card import refresh_model_card
    from ml.paths import default_model_dir
    from ml.word_vectors import fit_word_vectors

    directory = Path(args.model) if args.model else default_model_dir()
    captioner = load_captioner(directory)
    found, used = _training_photos(captioner, args.limit, not args.quiet, args.style)
    pooled = [features for *_, features in found]
    texts = [captions[image] for _, images, captions, _ in found for image in images]
    # Every caption's sentence embedding (cached on disk, as `ml align` uses them), photo by photo.
    flat = embed_texts_cached([t for caps in texts for t in caps], progress=not args.quiet)
    ends = np.cumsum([len(caps) for caps in texts])
    vectors = fit_word_vectors(
        np.concatenate(pooled),
        texts,
        dims=args.dims,
        min_photos=args.min_photos,
        penalty=args.penalty,
        caption_embeddings=np.split(flat, ends[:-1]),
    )
    vectors.info["sources"] = used
    vectors.save(directory)
    refresh_model_card(directory)
    print(json.dumps(vectors.info))
    return 0


def _record_dev_metrics(directory: Path, key: str, root: str, quiet: bool) -> dict:
    """Score the model as it now decodes on its dev split; record it in metrics.json under `key` and
    as the subset a quick re-evaluation checks against. Returns the dev metrics."""
    from ml.captioner import load_captioner
    from ml.evaluate import evaluate_model
    from ml.metrics import CaptionScorer
    from ml.ship import SUBSET_IMAGES

    captioner = load_captioner(directory)
    data = captioner.config.get("data", {})
    split = data.get("dev_split") or "dev"
    with CaptionScorer() as scorer:
        result = evaluate_model(captioner, data["dataset"], root, split, progress=not quiet, scorer=scorer)
        subset = evaluate_model(
            captioner, data["dataset"], root, split, limit=SUBSET_IMAGES, progress=not quiet, scorer=scorer
        )
    metrics_file = directory / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    metrics.setdefault("decoding", {})[key] = result["metrics"]
    metrics["subset"] = {k: subset[k] for k in ("images", "beam_size", "length_penalty", "metrics")}
    metrics_file.write_text(json.dumps(metrics, indent=2) + "\n")
    return result["metrics"]


def _neighbours(args: argparse.Namespace) -> int:
    import numpy as np

    from ml.artifact import read_config, write_config
    from ml.captioner import load_captioner
    from ml.model_card import refresh_model_card
    from ml.paths import default_model_dir
    from ml.rerank import fit_neighbours

    directory = Path(args.model) if args.model else default_model_dir()
    captioner = load_captioner(directory)
    found, used = _training_photos(captioner, args.limit, not args.quiet)
    pooled = [features for *_, features in found]
    encode = captioner.vocab.encode
    captions = [[encode(c)[1:-1] for c in by_image[im]] for _, images, by_image, _ in found for im in images]
    styles = [src.get("style") or captioner.style or "" for src, images, *_ in found for _ in images]
    neighbours = fit_neighbours(np.concatenate(pooled), captions, styles, dims=args.dims)
    neighbours.info["sources"] = used
    neighbours.save(directory)
    config = read_config(directory)
    config.setdefault("decoding", {}).update(
        {"beam_size": args.beam_size, "consensus_neighbours": args.neighbours}
    )
    write_config(directory, config)
    if args.root:  # the shipped decoding scored on dev, beside what `ml ship` recorded
        neighbours.info["dev"] = _record_dev_metrics(
            directory, f"beam{args.beam_size} reranked", args.root, args.quiet
        )
    refresh_model_card(directory)
    print(json.dumps(neighbours.info))
    return 0


def _route(args: argparse.Namespace) -> int:
    import numpy as np

    from ml.captioner import load_captioner
    from ml.features import FeatureCache
    from ml.paths import default_model_dir
    from ml.style_router import fit_style_router

    directory = Path(args.model) if args.model else default_model_dir()
    captioner = load_captioner(directory)
    sources = captioner.config.get("data", {}).get("sources") or []
    if len({s.get("style") for s in sources}) < 2:
        raise ValueError(f"{directory} was not trained on several styles: nothing to route")
    cache = FeatureCache(captioner.encoder)
    pooled: dict[str, list] = {}
    for src in sources:
        _, _, features = _pooled_source(cache, src, args.limit, not args.quiet)
        pooled.setdefault(src["style"], []).append(features)
    router = fit_style_router({style: np.concatenate(parts) for style, parts in pooled.items()})
    router.save(directory)
    print(json.dumps(router.info))
    return 0


def _align(args: argparse.Namespace) -> int:
    import numpy as np

    from ml.captioner import load_captioner
    from ml.features import FeatureCache
    from ml.image_text import embed_texts_cached, fit_image_text_projection, short_queries
    from ml.model_card import refresh_model_card
    from ml.paths import default_model_dir

    directory = Path(args.model) if args.model else default_model_dir()
    captioner = load_captioner(directory)
    data = captioner.config.get("data", {})
    sources = data.get("sources") or []
    if not sources:
        raise ValueError(f"{directory} does not say what it was trained on (config.json: data.sources)")
    cache = FeatureCache(captioner.encoder)

    rng = np.random.default_rng(0)

    def read(srcs: list[dict], per_image: int | None, limit: int | None, short: int = 0):
        pooled, texts, owner, extra, extra_owner = [], [], [], [], []
        offset = 0  # images read so far: text t describes image owner[t] of all sources together
        for src in srcs:
            images, captions, features = _pooled_source(cache, src, limit, not args.quiet)
            for j, image in enumerate(images):
                chosen = captions[image][:per_image] if per_image else captions[image]
                texts += chosen
                owner += [offset + j] * len(chosen)
                queries = short_queries(chosen[0], short, rng) if short and chosen else []
                extra += queries
                extra_owner += [offset + j] * len(queries)
            pooled.append(features)
            offset += len(images)
        # Short queries after the captions: the captions' cached embeddings stay valid.
        vectors = embed_texts_cached(texts + extra, not args.quiet)
        return np.concatenate(pooled), vectors, np.asarray(owner + extra_owner)

    train = read(sources, args.captions_per_image, args.limit, args.short_queries)
    dev = None
    if data.get("dev_split"):
        main = {**sources[0], "split": data["dev_split"], "limit_images": None}
        dev = read([main], None, args.dev_limit)
    projection = fit_image_text_projection(
        *train,
        dev,
        epochs=args.epochs,
        hidden=args.hidden,
        batch_size=args.batch_size,
        progress=not args.quiet,
    )
    projection.save(directory)
    refresh_model_card(directory)
    print(json.dumps({k: v for k, v in projection.info.items() if k != "history"}))
    return 0


def _ship(args: argparse.Namespace) -> int:
    from ml.ship import ship_model

    notes = Path(args.notes).read_text() if args.notes else ""
    defaults = {
        key: value
        for key, value in (
            ("beam_size", args.beam_size),
            ("length_penalty", args.length_penalty),
            ("block_repeats", args.block_repeats),
            ("tag_boost", args.tag_boost),
        )
        if value is not None
    }
    metrics = ship_model(
        args.run, args.out, args.root, tuple(args.beams), notes, not args.quiet, decoding_defaults=defaults
    )
    print(json.dumps(metrics))
    return 0


def _add_style(p: argparse.ArgumentParser) -> None:
    p.add_argument("--style", help="caption style of a model trained on several sources (default: its own)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ml", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a captioner (features are cached on the way)")
    _add_train_args(p)
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="BLEU-1..4, METEOR, ROUGE-L, CIDEr on a dataset split")
    p.add_argument("--model", help="model directory (default: the shipped default model)")
    p.add_argument("--dataset", choices=DATASET_FORMATS, default="flickr8k")
    p.add_argument("--root", default="../shared/data/flickr8k")
    p.add_argument("--split", default="dev")
    p.add_argument("--beam-size", type=int, help="default: the model's own (1 = greedy)")
    p.add_argument("--length-penalty", type=float)
    p.add_argument("--limit", type=int, help="score only the first N images of the split")
    p.add_argument("--captions", help="also write the generated captions to this JSONL file")
    p.add_argument("--quiet", action="store_true")
    _add_style(p)
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("sweep", help="score beam widths x length penalties on a split (no training needed)")
    p.add_argument("--model", help="model directory (default: the shipped default model)")
    p.add_argument("--dataset", choices=DATASET_FORMATS, default="flickr8k")
    p.add_argument("--root", default="../shared/data/flickr8k")
    p.add_argument("--split", default="dev")
    p.add_argument("--beams", nargs="+", type=int, default=[1, 3, 5])
    p.add_argument("--length-penalties", nargs="+", type=float, default=[0.0, 0.5, 1.0])
    p.add_argument("--limit", type=int, help="score only the first N images of the split")
    p.add_argument("--quiet", action="store_true")
    _add_style(p)
    p.set_defaults(func=_sweep)

    p = sub.add_parser("average", help="a model directory with the mean of several epochs' weights")
    p.add_argument("--run", required=True, help="the training run (its config and vocabulary are kept)")
    p.add_argument("--weights", nargs="+", required=True, help="decoder.npz files of that run's epochs")
    p.add_argument("--out", required=True, help="model directory to write")
    p.set_defaults(func=_average)

    p = sub.add_parser("caption", help="caption image files or folders")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--model", help="model directory (default: the shipped default model)")
    p.add_argument("--beam-size", type=int, help="default: the model's own (1 = greedy)")
    p.add_argument("--n-best", type=int, help="candidates per image (default: beam size)")
    p.add_argument("--jsonl", action="store_true", help="one JSON object per image per line")
    p.add_argument("--batch-size", type=int, default=32)
    _add_style(p)
    p.set_defaults(func=_caption)

    p = sub.add_parser("attention", help="draw where the model looked for each word")
    p.add_argument("image")
    p.add_argument("--model")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--beam-size", type=int)
    _add_style(p)
    p.set_defaults(func=_attention)

    p = sub.add_parser("ship", help="copy a run's best model into a model directory, scored on dev")
    p.add_argument("--run", required=True, help="training run directory")
    p.add_argument("--out", required=True, help="model directory to write (e.g. models/default)")
    p.add_argument("--root", default="../shared/data/flickr8k", help="the dataset root, for scoring")
    p.add_argument("--beams", nargs="+", type=int, default=[1, 3, 5], help="beam widths to score")
    p.add_argument("--notes", help="a markdown file appended to the model card")
    p.add_argument("--beam-size", type=int, help="the shipped decoding default (default: the run's)")
    p.add_argument("--length-penalty", type=float, help="the shipped decoding default (default: the run's)")
    p.add_argument("--block-repeats", action=argparse.BooleanOptionalAction, help="rule out repeated words")
    p.add_argument("--tag-boost", type=float, help="favour concept words by this x P(label) (default: 0)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_ship)

    p = sub.add_parser("calibrate", help="fit a model's caption confidence on held-out images (+ plot)")
    p.add_argument("--model", help="model directory (default: the shipped default model)")
    p.add_argument(
        "--set",
        nargs="+",
        required=True,
        metavar="NAME:FORMAT:ROOT:SPLIT[:LIMIT]",
        help="captioned sets to fit on, e.g. flickr8k:flickr8k:../shared/data/flickr8k:dev",
    )
    p.add_argument(
        "--threshold", type=float, default=0.5, help="per-image CIDEr-D from which a caption is right"
    )
    p.add_argument(
        "--out-of-domain", type=int, default=40, help="blank/pixel/noise/text/chart images of each kind"
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_calibrate)

    p = sub.add_parser(
        "route", help="fit which caption style each image gets, from the model's training sources"
    )
    p.add_argument("--model", help="model directory (default: the shipped default model)")
    p.add_argument("--limit", type=int, help="the first N training images of each source only")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_route)

    p = sub.add_parser(
        "align",
        help="train the projection of photos into the sentence-embedding space (search by meaning)",
    )
    p.add_argument("--model", help="model directory (default: the shipped default model)")
    p.add_argument("--limit", type=int, help="the first N training images of each source only")
    p.add_argument("--captions-per-image", type=int, default=3, help="training captions of each image")
    # The shipped projection's dev recall peaked at epoch 4 of 40 (models/NOTES.md): more only overfits.
    p.add_argument("--epochs", type=int, default=10, help="the best epoch on dev is kept")
    p.add_argument("--hidden", type=int, default=1024, help="width of the projection's hidden layer")
    p.add_argument("--batch-size", type=int, default=512, help="images per contrastive step")
    p.add_argument(
        "--short-queries", type=int, default=1, help="keyword queries (1-3 words of a caption) per image, too"
    )
    p.add_argument("--dev-limit", type=int, help="score on the first N dev images only")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_align)

    p = sub.add_parser(
        "word-vectors",
        help="place the training captions' words in the photo and sentence spaces (keyword search)",
    )
    p.add_argument("--model", help="model directory (default: the shipped default model)")
    p.add_argument("--limit", type=int, help="the first N training images of each source only")
    p.add_argument("--dims", type=int, default=256, help="PCA directions kept")
    p.add_argument("--min-photos", type=int, default=2, help="a word needs this many photos")
    p.add_argument(
        "--penalty", type=float, default=10.0, help="ridge penalty; 0: each word's mean photo (prototypes)"
    )
    p.add_argument("--style", help="only the training sources of this caption style (e.g. flickr8k)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_word_vectors)

    p = sub.add_parser(
        "neighbours", help="rerank the beam's captions by what people said of similar training photos"
    )
    p.add_argument("--model", help="model directory (default: the shipped default model)")
    p.add_argument("--limit", type=int, help="the first N training images of each source only")
    p.add_argument("--dims", type=int, default=128, help="PCA directions kept for finding neighbours")
    p.add_argument(
        "--root", default="../shared/data/flickr8k", help="the dev set's root, for scoring ('' skips it)"
    )
    # Chosen on Flickr8k dev (models/NOTES.md): 10 candidates and 30 neighbours; 20 candidates no better.
    p.add_argument("--beam-size", type=int, default=10, help="candidates decoded, then reranked")
    p.add_argument(
        "--neighbours", type=int, default=30, help="training photos each caption is checked against"
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_neighbours)

    p = sub.add_parser("compress", help="rewrite a model's decoder weights as int8 (half the size)")
    p.add_argument("--model", help="model directory (default: the shipped default model)")
    p.set_defaults(func=_compress)

    p = sub.add_parser(
        "second-opinion",
        help="copy another model's decoder in, to judge the beam's candidates when reranking",
    )
    p.add_argument("--model", help="model directory (default: the shipped default model)")
    p.add_argument("--from", dest="source", required=True, help="the model directory whose decoder judges")
    p.set_defaults(func=_second_opinion)

    p = sub.add_parser(
        "fit-rerank", help="fit how much each signal beside consensus counts when reranking, for one style"
    )
    p.add_argument("--model", help="model directory (default: the shipped default model)")
    p.add_argument("--dataset", choices=DATASET_FORMATS, default="flickr8k")
    p.add_argument("--root", default="../shared/data/flickr8k")
    p.add_argument("--split", default="dev")
    p.add_argument(
        "--style", help="the caption style whose images the weights are fitted on (default: the model's own)"
    )
    p.add_argument("--limit", type=int, help="the first N images of the split only")
    p.add_argument(
        "--record", action="store_true", help="then score the model's dev split and record it in metrics.json"
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_fit_rerank)

    p = sub.add_parser("features", help="pre-compute and cache encoder features for dataset splits")
    p.add_argument("--dataset", choices=DATASET_FORMATS, default="flickr8k")
    p.add_argument("--root", default="../shared/data/flickr8k")
    p.add_argument("--split", nargs="+", default=["train", "dev"])
    p.add_argument("--encoder", choices=ENCODER_CHOICES, default="efficientnet_lite0")
    p.add_argument("--image-size", type=int)
    p.add_argument("--encoder-options", type=json.loads, help='a JSON object, e.g. \'{"scaling": "unit"}\'')
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--tune-blocks",
        type=int,
        default=0,
        help="cache the input of the last N blocks instead (fine-tuning)",
    )
    p.set_defaults(func=_features)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - the user gets one clear line, not a traceback
        from ml.errors import USER_ERRORS

        if isinstance(exc, USER_ERRORS):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise
