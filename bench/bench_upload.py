"""Upload API latency: concurrent clients POSTing real JPEGs to /api/v1/images/ served by gunicorn.

    .venv/bin/python -m bench.bench_upload                     # 8 clients, 400 timed uploads
    .venv/bin/python -m bench.bench_upload --requests 48       # smoke run (well under a minute)
    .venv/bin/python -m bench.bench_upload --busy-worker       # a worker captioning all the while
    .venv/bin/python -m bench.bench_upload --rate 30           # 30 uploads/s offered, not as fast as possible

The web side only: gunicorn (`-w 4` sync workers by default: the (2 x cores) rule of thumb on
2 cores) with the production settings on a fresh Postgres database and Redis as the broker; no
Celery worker runs, so the images stay pending and the queue just fills. Each client is a thread
that POSTs one image per request (multipart field `image`, `Authorization: Token ...`) on a new
connection. Every request sends different bytes (Flickr8k dev images, each with a JPEG comment
naming the request), so the per-owner dedupe never short-circuits one. Request bodies are built
before the clock starts.

`--busy-worker` starts a Celery worker (`models/default`, solo pool, the default IMGCAP_WORKER_NICE)
on the same machine, gives it a backlog of `--backlog` images first and times the uploads while it
captions them: the worker shares the two cores with gunicorn and the clients, as in `make run`.

By default each client sends its next upload as soon as the last is answered (closed loop: the
figures are the server's capacity, and latency is clients / throughput by Little's law). `--rate R`
offers R uploads a second in all instead, evenly spaced, whatever the answers (open loop: latency
at a given load); each latency then counts from when its upload was due, so a server falling
behind shows its queue (no "coordinated omission").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from bench import platform_env as pe
from bench.timing import write_results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (threads)")
    parser.add_argument("--requests", type=int, default=400, help="timed uploads in all")
    parser.add_argument("--warmup", type=int, default=16, help="untimed uploads first")
    parser.add_argument("--web-workers", type=int, default=4, help="gunicorn sync workers")
    parser.add_argument("--db", default="imgcap_bench", help="Postgres database (dropped and recreated)")
    parser.add_argument("--redis-db", type=int, default=pe.BENCH_REDIS_DB)
    parser.add_argument("--keep", action="store_true", help="keep the database and files afterwards")
    parser.add_argument("--busy-worker", action="store_true", help="a Celery worker captions meanwhile")
    parser.add_argument("--backlog", type=int, default=300, help="images queued before timing (busy worker)")
    parser.add_argument("--rate", type=float, default=0, help="uploads/s offered in all (0: closed loop)")
    args = parser.parse_args(argv)

    env_start, work, env = pe.fresh_platform("upload", db_name=args.db, redis_db=args.redis_db)
    user, token = pe.make_user("bench-upload")

    backlog = args.backlog if args.busy_worker else 0
    total = backlog + args.warmup + args.requests
    sources = pe.dev_images(min(total, 1000))
    run = uuid.uuid4().hex[:8]
    bodies = []
    for i in range(total):
        source = sources[i % len(sources)]
        data = pe.tagged_jpeg(source.read_bytes(), f"imgcap bench upload {run} {i}")
        bodies.append(pe.multipart([("image", source.name, data)]))
    mean_kb = sum(len(b) for b, _ in bodies) / len(bodies) / 1024
    print(
        f"{args.requests} timed uploads (+{args.warmup} warm-up) from {args.clients} clients, "
        f"{len(sources)} distinct Flickr8k dev images, {mean_kb:.1f} KB per request",
        flush=True,
    )

    captioned = None
    try:
        with contextlib.ExitStack() as running:
            web = running.enter_context(pe.Gunicorn(env, work / "gunicorn.log", workers=args.web_workers))
            if args.busy_worker:
                running.enter_context(pe.CeleryWorker(env, work / "worker.log"))
                _run(web.port, token, bodies[:backlog], args.clients)
            warm = _run(web.port, token, bodies[backlog : backlog + args.warmup], args.clients)
            before = _done_count(user) if args.busy_worker else 0
            timed = _run(web.port, token, bodies[backlog + args.warmup :], args.clients, rate=args.rate)
            if args.busy_worker:
                captioned = _done_count(user) - before
                busy = _done_count(user, pending=True)
                print(
                    f"the worker captioned {captioned} images while the uploads were timed; {busy} still wait"
                )
        from captions.models import Image

        stored = Image.objects.filter(owner=user).count()
    finally:
        if not args.keep:
            pe.drop_database(args.db)
            pe.flush_redis(args.redis_db)
            shutil.rmtree(work, ignore_errors=True)

    latency = pe.summarize(timed["seconds"])
    rate = len(timed["seconds"]) / timed["wall_s"] if timed["wall_s"] else 0.0
    print(f"upload latency: {pe.fmt_latency(latency)}")
    print(
        f"throughput: {rate:.1f} requests/s over {timed['wall_s']:.1f} s; errors: {timed['errors']}; "
        f"statuses {dict(timed['statuses'])}; duplicates reported: {timed['duplicates']}; "
        f"images stored: {stored} (expected {total - warm['errors'] - timed['errors']})"
    )
    env_end = pe.environment()
    name = "upload" + ("_busy_worker" if args.busy_worker else "")
    name += f"_rate{args.rate:g}" if args.rate else ""
    path = write_results(
        name,
        {
            "what": "POST /api/v1/images/ (one JPEG per request), gunicorn sync workers, "
            + ("a Celery worker captioning a backlog meanwhile" if args.busy_worker else "no Celery worker")
            + (f", {args.rate:g} uploads/s offered" if args.rate else ", closed loop"),
            "args": vars(args),
            "environment_start": env_start,
            "environment_end": env_end,
            "request_kb_mean": round(mean_kb, 1),
            "latency": latency,
            "requests_per_s": round(rate, 2),
            "wall_s": round(timed["wall_s"], 2),
            "errors": timed["errors"],
            "error_samples": timed["error_samples"],
            "statuses": dict(timed["statuses"]),
            "duplicates": timed["duplicates"],
            "images_stored": stored,
            "warmup_errors": warm["errors"],
            "captioned_while_timed": captioned,
        },
    )
    print(f"-> {path}")
    return 0 if timed["errors"] == 0 else 1


def _done_count(user, *, pending: bool = False) -> int:
    from captions.models import Image

    statuses = ["pending", "processing"] if pending else ["done", "failed"]
    return Image.objects.filter(owner=user, status__in=statuses).count()


def _run(port: int, token: str, bodies: list[tuple[bytes, str]], clients: int, rate: float = 0) -> dict:
    """POST every body to /api/v1/images/ from `clients` threads; latencies of the successful ones.
    With `rate`, upload i is due at i / rate seconds and its latency counts from then."""
    lock = threading.Lock()
    started = time.perf_counter()
    next_index = iter(range(len(bodies)))
    seconds: list[float] = []
    statuses: Counter[int | str] = Counter()
    error_samples: list[str] = []
    duplicates = 0

    def client() -> None:
        nonlocal duplicates
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            body, content_type = bodies[i]
            headers = {"Authorization": f"Token {token}", "Content-Type": content_type}
            due = started + i / rate if rate else None
            if due is not None:
                time.sleep(max(0.0, due - time.perf_counter()))
            try:
                status, _, answer, elapsed = pe.request(
                    port, "POST", "/api/v1/images/", body=body, headers=headers
                )
                if due is not None:
                    elapsed = time.perf_counter() - due
            except OSError as exc:
                with lock:
                    statuses[type(exc).__name__] += 1
                    error_samples.append(repr(exc))
                continue
            with lock:
                statuses[status] += 1
                if status == 202:
                    seconds.append(elapsed)
                    duplicates += bool(json.loads(answer).get("duplicate"))
                elif len(error_samples) < 5:
                    error_samples.append(f"{status}: {answer[:300]!r}")

    with ThreadPoolExecutor(max_workers=clients) as pool:
        futures = [pool.submit(client) for _ in range(clients)]
    for future in futures:
        future.result()  # a bug in the client itself surfaces here
    wall = time.perf_counter() - started
    errors = sum(n for status, n in statuses.items() if status != 202)
    return {
        "seconds": seconds,
        "wall_s": wall,
        "statuses": statuses,
        "errors": errors,
        "error_samples": error_samples,
        "duplicates": duplicates,
    }


if __name__ == "__main__":
    raise SystemExit(main())
