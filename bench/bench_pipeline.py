"""Pipeline throughput: REST upload -> Redis -> Celery worker -> captions in Postgres, against the bare
captioner loop on the same images in the same run.

    .venv/bin/python -m bench.bench_pipeline                   # 256 Flickr8k dev images
    .venv/bin/python -m bench.bench_pipeline --images 32       # smoke run

Platform: gunicorn (`-w 2` sync workers) and one real worker process
(`celery -A imgcap_site worker -Q caption,default --pool solo`) with the production settings, a fresh
Postgres database, Redis db 12 as the broker and a temporary media folder; the model is the worker's
(IMGCAP_MODEL_DIR, default models/default). The client uploads the images the way a client with a
folder of photos would: `--chunk` files per POST to /api/v1/batches/ (32; `--chunk 1` posts each image
to /api/v1/images/ instead), one request after another. Pipeline time runs from the first upload
request to the moment the last image is stored as done (the newest `updated_at` of the images), with
the worker already warm: its model is loaded and `--warmup` other images went through it first.

Bare loop: `load_captioner(...).caption(paths, batch_size=IMGCAP_MICRO_BATCH_MAX, n_best=IMGCAP_N_BEST,
beam_size=IMGCAP_BEAM_SIZE)` in this process, the same work per image as the worker's, timed once
before the platform starts and once after it has stopped (never sharing the cores with the worker),
each after a warm-up call. The ratio is pipeline images/s over the mean of the two bare runs.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import time
from pathlib import Path

from bench import platform_env as pe
from bench.timing import write_results

# The worker's summary of each micro-batch: "imgcap micro-batch: 16 images in one model call,
# 16 captioned, 0 failed, 2.31s, ..." (or "1 image ...", "5 images claimed, 4 of them in one model
# call, ...").
BATCH_LINE = re.compile(r"imgcap micro-batch: (\d+) images? .*?(\d+) captioned, (\d+) failed, ([\d.]+)s")
GOAL = 0.9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256, help="the first N Flickr8k dev images")
    parser.add_argument(
        "--warmup",
        type=int,
        help="other dev images captioned first, untimed (default: two full batches, so that both "
        "contenders have run the model on a full batch's shape before the timed run)",
    )
    parser.add_argument("--chunk", type=int, default=32, help="files per batch POST (1: /api/v1/images/)")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn sync workers")
    parser.add_argument("--batch-max", type=int, help="IMGCAP_MICRO_BATCH_MAX (default: the settings' 16)")
    parser.add_argument(
        "--batch-wait-ms", type=int, help="IMGCAP_MICRO_BATCH_WAIT_MS (default: the settings')"
    )
    parser.add_argument("--model", help="IMGCAP_MODEL_DIR (default: models/default)")
    parser.add_argument("--db", default="imgcap_bench", help="Postgres database (dropped and recreated)")
    parser.add_argument("--redis-db", type=int, default=pe.BENCH_REDIS_DB)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the captions")
    parser.add_argument("--keep", action="store_true", help="keep the database and files afterwards")
    args = parser.parse_args(argv)
    if args.warmup is None:
        args.warmup = 2 * (args.batch_max or int(os.environ.get("IMGCAP_MICRO_BATCH_MAX", "16")))

    paths = pe.dev_images(args.images + args.warmup)
    images, warm_images = paths[: args.images], paths[args.images :]
    blobs = [p.read_bytes() for p in paths]  # also puts the files in the page cache for both contenders

    extra = {}
    if args.batch_max:
        extra["IMGCAP_MICRO_BATCH_MAX"] = str(args.batch_max)
    if args.batch_wait_ms is not None:
        extra["IMGCAP_MICRO_BATCH_WAIT_MS"] = str(args.batch_wait_ms)
    if args.model:
        extra["IMGCAP_MODEL_DIR"] = str(Path(args.model).resolve())
    env_start, work, env = pe.fresh_platform("pipeline", db_name=args.db, redis_db=args.redis_db, **extra)
    from django.conf import settings

    decode = {
        "batch_size": settings.IMGCAP_MICRO_BATCH_MAX,
        "n_best": settings.IMGCAP_N_BEST,
        "beam_size": settings.IMGCAP_BEAM_SIZE,
    }
    print(
        f"{args.images} images (+{args.warmup} warm-up); worker batches of up to {decode['batch_size']}, "
        f"wait {settings.IMGCAP_MICRO_BATCH_WAIT_MS} ms, n_best {decode['n_best']}, "
        f"beam {decode['beam_size'] or 'model default'}; upload: "
        + (
            f"{args.chunk} files per POST /api/v1/batches/" if args.chunk > 1 else "POST /api/v1/images/ each"
        ),
        flush=True,
    )

    try:
        captioner = _load_captioner(settings.IMGCAP_MODEL_DIR)
        bare_before, bare_captions = _bare(captioner, images, warm_images, decode)
        print(
            f"bare loop (before): {args.images / bare_before:.2f} images/s ({bare_before:.1f} s)", flush=True
        )

        warm_user, warm_token = pe.make_user("bench-warmup")
        user, token = pe.make_user("bench-pipeline")
        with (
            pe.CeleryWorker(env, work / "worker.log") as worker,
            pe.Gunicorn(env, work / "gunicorn.log", workers=args.web_workers) as web,
        ):
            warm_items = list(zip(warm_images, blobs[args.images :], strict=True))
            pe.upload_images(web.port, warm_token, warm_items, args.warmup)
            pe.wait_done(warm_user, len(warm_images), args.timeout, worker)
            log_offset = len(worker.log.read_text(errors="replace"))

            started_wall, started = time.time(), time.perf_counter()
            requests = pe.upload_images(
                web.port, token, list(zip(images, blobs[: args.images], strict=True)), args.chunk
            )
            uploaded_s = time.perf_counter() - started
            print(f"uploaded in {uploaded_s:.1f} s ({len(requests)} requests)", flush=True)
            finished = pe.wait_done(user, args.images, args.timeout, worker)
            worker_memory = pe.memory_mb(worker.pid)
            batches = _logged_batches(worker, log_offset, args.images)
        pipeline_s = finished["last_update"].timestamp() - started_wall
        pipeline_captions = _stored_captions(user)

        bare_after, _ = _bare(captioner, images, warm_images, decode)
        print(f"bare loop (after): {args.images / bare_after:.2f} images/s ({bare_after:.1f} s)", flush=True)
    finally:
        if not args.keep:
            pe.drop_database(args.db)
            pe.flush_redis(args.redis_db)
            shutil.rmtree(work, ignore_errors=True)

    bare_rates = [args.images / bare_before, args.images / bare_after]
    bare_rate = sum(bare_rates) / 2
    pipeline_rate = args.images / pipeline_s
    ratio = pipeline_rate / bare_rate
    same = sum(pipeline_captions.get(p.name) == c for p, c in zip(images, bare_captions, strict=True))
    worker_busy = sum(b[3] for b in batches)
    sizes = [int(b[0]) for b in batches]
    print(
        f"pipeline: {pipeline_rate:.2f} images/s ({pipeline_s:.1f} s; {finished['done']} done, "
        f"{finished['failed']} failed); worker batches {len(batches)} (sizes {min(sizes, default=0)}-"
        f"{max(sizes, default=0)}), captioning {worker_busy:.1f} s of it"
    )
    print(
        f"bare loop: {bare_rate:.2f} images/s (before {bare_rates[0]:.2f}, after {bare_rates[1]:.2f})\n"
        f"pipeline / bare = {ratio:.1%} (goal >= {GOAL:.0%}: {'met' if ratio >= GOAL else 'NOT met'}); "
        f"same best caption as the bare loop for {same}/{args.images} images; "
        f"worker RSS {worker_memory.get('VmRSS')} MB (peak {worker_memory.get('VmHWM')} MB)"
    )
    env_end = pe.environment()
    path = write_results(
        "pipeline",
        {
            "what": "REST upload -> Redis -> celery worker (solo) -> Postgres, vs bare caption() loop",
            "args": vars(args),
            "decode": decode,
            "environment_start": env_start,
            "environment_end": env_end,
            "upload_requests": len(requests),
            "upload_s": round(uploaded_s, 2),
            "pipeline_s": round(pipeline_s, 2),
            "pipeline_images_per_s": round(pipeline_rate, 3),
            "bare_s": [round(bare_before, 2), round(bare_after, 2)],
            "bare_images_per_s": [round(r, 3) for r in bare_rates],
            "ratio": round(ratio, 4),
            "goal": GOAL,
            "done": finished["done"],
            "failed": finished["failed"],
            "worker_batches": sizes,
            "worker_captioning_s": round(worker_busy, 2),
            "worker_memory_mb": worker_memory,
            "same_best_caption": same,
        },
    )
    print(f"-> {path}")
    return 0 if finished["failed"] == 0 else 1


def _load_captioner(model_dir: str | None):
    from ml.captioner import load_captioner  # TensorFlow: this process only, never the web's

    return load_captioner(model_dir)


def _bare(captioner, images: list[Path], warm: list[Path], decode: dict) -> tuple[float, list[str]]:
    """Seconds to caption `images` with one bare `caption` call (after an untimed one on `warm`)."""
    captioner.caption([str(p) for p in warm], **decode)
    started = time.perf_counter()
    results = captioner.caption([str(p) for p in images], **decode)
    seconds = time.perf_counter() - started
    errors = [r.error for r in results if r.error]
    if errors:
        raise SystemExit(f"the bare loop could not caption {len(errors)} images: {errors[:3]}")
    return seconds, [r.caption for r in results]


def _logged_batches(worker: pe.CeleryWorker, offset: int, count: int) -> list[tuple[float, ...]]:
    """(images, captioned, failed, seconds) of each batch the worker logged after `offset`. The worker
    logs a batch after storing it, so the last line may come a moment after the database says done."""
    deadline = time.monotonic() + 10
    while True:
        text = worker.log.read_text(errors="replace")[offset:]
        batches = [tuple(float(x) for x in m.groups()) for m in BATCH_LINE.finditer(text)]
        if sum(b[0] for b in batches) >= count or time.monotonic() > deadline:
            return batches
        time.sleep(0.1)


def _stored_captions(user) -> dict[str, str]:
    """original_name -> the rank-0 model caption stored for it."""
    from captions.models import Caption

    rows = Caption.objects.filter(image__owner=user, rank=0, source="model").values_list(
        "image__original_name", "text"
    )
    return dict(rows)


if __name__ == "__main__":
    raise SystemExit(main())
