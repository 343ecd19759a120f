"""Web process memory: RSS of gunicorn serving imgcap, and proof that it never imports TensorFlow.

    .venv/bin/python -m bench.bench_web_memory                 # 5 rounds over every page and endpoint
    .venv/bin/python -m bench.bench_web_memory --rounds 1      # smoke run

Starts gunicorn (`-w 1`, production settings) on a fresh Postgres database with Redis as the broker and
some content (300 synthetic captions, a few real uploads, a batch), signs in through the login form
(session) and with a token, then `--rounds` times requests every HTML page and API endpoint (GETs,
plus one upload per round), then sends one batch of `--batch-files` photos (500: the most a batch
takes; each a Flickr8k dev image enlarged to 2048 px, ~0.35 MB, ~170 MB in all) and reads the
worker's peak again: what a batch costs the web process. No Celery worker runs. It reads VmRSS
(resident now) and VmHWM (peak) from /proc/<pid>/status of the gunicorn worker (and its master) after
start-up, after each round and around the batch, and checks /proc/<pid>/maps of the worker for
TensorFlow's shared libraries.

A request-independent check runs too: a fresh interpreter with the same settings imports the whole
URLconf, every `captions` module, the Celery app and `worker.tasks` (as Celery's autodiscovery in a
web process would), and reports whether any `tensorflow` module or `ml.captioner` got imported, and
its own RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.parse
import uuid
from http.cookies import SimpleCookie

from bench import platform_env as pe
from bench.timing import write_results

PROBE = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys
    from pathlib import Path
    import django
    django.setup()

    import captions
    from django.urls import get_resolver

    get_resolver().url_patterns  # the whole URLconf: API, HTML views, admin
    modules = [info.name for info in pkgutil.walk_packages(captions.__path__, "captions.")]
    for name in modules + ["imgcap_site.urls", "imgcap_site.wsgi", "worker.tasks"]:
        importlib.import_module(name)
    from imgcap_site.celery import app
    app.loader.import_default_modules()  # Celery's task autodiscovery

    status = dict(
        line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line
    )
    print(json.dumps({
        "tensorflow_modules": sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow"),
        "ml_captioner": "ml.captioner" in sys.modules,
        "modules_imported": len(modules) + 3,
        "VmRSS_mb": round(int(status["VmRSS"].split()[0]) / 1024, 1),
        "VmHWM_mb": round(int(status["VmHWM"].split()[0]) / 1024, 1),
    }))
    """
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="passes over every page and endpoint")
    parser.add_argument("--db", default="imgcap_bench", help="Postgres database (dropped and recreated)")
    parser.add_argument("--redis-db", type=int, default=pe.BENCH_REDIS_DB)
    parser.add_argument("--keep", action="store_true", help="keep the database and files afterwards")
    parser.add_argument("--batch-files", type=int, default=500, help="photos in the big batch (0: none)")
    args = parser.parse_args(argv)

    env_start, work, env = pe.fresh_platform("web-memory", db_name=args.db, redis_db=args.redis_db)
    password = uuid.uuid4().hex
    user, token = pe.make_user("bench-web", password)
    user.is_staff = user.is_superuser = True  # so the admin pages render too
    user.save()
    from bench.synthetic_captions import generate_captions

    generate_captions(owner=user, count=300)
    photos = [p.read_bytes() for p in pe.dev_images(8)]
    run = uuid.uuid4().hex[:8]
    counter = iter(range(10**6))

    def photo() -> bytes:
        i = next(counter)
        return pe.tagged_jpeg(photos[i % len(photos)], f"imgcap bench web {run} {i}")

    samples = []
    try:
        with pe.Gunicorn(env, work / "gunicorn.log", workers=1) as web:
            (worker_pid,) = web.worker_pids()
            samples.append(
                {
                    "after": "start",
                    "worker": pe.settled_memory_mb(worker_pid),
                    "master": pe.memory_mb(web.pid),
                }
            )
            client = Client(web.port, token)
            client.login("bench-web", password)
            image = client.upload(photo())
            batch = client.batch([photo(), photo()])
            paths = _paths(image, batch)
            statuses: dict[str, int] = {}
            for n in range(1, args.rounds + 1):
                for kind, path in paths:
                    statuses[path] = client.get(path, session=kind == "html")
                client.upload(photo())
                samples.append(
                    {
                        "after": f"round {n}",
                        "worker": pe.memory_mb(worker_pid),
                        "master": pe.memory_mb(web.pid),
                    }
                )
            big_batch = _big_batch(client, worker_pid, args.batch_files, run) if args.batch_files else None
            tf_libraries = pe.mapped_libraries(worker_pid, "tensorflow")
            requests_made = client.count
        probe = _probe(env)
    finally:
        if not args.keep:
            pe.drop_database(args.db)
            pe.flush_redis(args.redis_db)
            shutil.rmtree(work, ignore_errors=True)

    failures = {path: code for path, code in statuses.items() if code >= 400}
    print(f"{requests_made} requests over {len(paths)} pages/endpoints x {args.rounds} rounds (+uploads)")
    if failures:
        print(f"failed: {failures}")
    for sample in samples:
        w, m = sample["worker"], sample["master"]
        print(
            f"  after {sample['after']:<8}: gunicorn worker VmRSS {w['VmRSS']:.1f} MB "
            f"(VmHWM {w['VmHWM']:.1f}); master VmRSS {m['VmRSS']:.1f} MB"
        )
    last = samples[-1]["worker"]
    print(
        f"web worker: {last['VmRSS']:.1f} MB resident, peak {last['VmHWM']:.1f} MB; "
        f"TensorFlow libraries mapped: {tf_libraries or 'none'}"
    )
    if big_batch:
        before, after = big_batch["before"], big_batch["after"]
        print(
            f"a batch of {big_batch['files']} photos ({big_batch['request_mb']} MB) answered "
            f"{big_batch['status']} in {big_batch['seconds']} s: worker peak {before['VmHWM']} -> "
            f"{after['VmHWM']} MB (+{big_batch['peak_growth_mb']} MB), resident after {after['VmRSS']} MB"
        )
    print(
        f"import probe ({probe['modules_imported']} modules, URLconf, Celery autodiscovery): "
        f"tensorflow modules {probe['tensorflow_modules'] or 'none'}, ml.captioner imported: "
        f"{probe['ml_captioner']}, RSS {probe['VmRSS_mb']} MB"
    )
    clean = not tf_libraries and not probe["tensorflow_modules"] and not probe["ml_captioner"]
    path = write_results(
        "web_memory",
        {
            "what": "gunicorn -w 1 (production settings) serving every page and endpoint; no Celery worker",
            "args": vars(args),
            "environment_start": env_start,
            "environment_end": pe.environment(),
            "requests": requests_made,
            "statuses": statuses,
            "samples_mb": samples,
            "web_worker_mb": last,
            "big_batch": big_batch,
            "tensorflow_libraries_mapped": tf_libraries,
            "probe": probe,
            "no_tensorflow": clean,
        },
    )
    print(f"-> {path}")
    batch_ok = big_batch is None or big_batch["status"] == 202
    return 0 if clean and not failures and batch_ok else 1


def _big_batch(client: Client, worker_pid: int, files: int, run: str) -> dict:
    """POST one batch of `files` distinct ~0.35 MB photos; the worker's memory before and after."""
    import io

    from PIL import Image as PILImage

    bases = []
    for path in pe.dev_images(8):
        buffer = io.BytesIO()
        PILImage.open(path).convert("RGB").resize((2048, 2048)).save(buffer, "JPEG", quality=92)
        bases.append(buffer.getvalue())
    blobs = [pe.tagged_jpeg(bases[i % len(bases)], f"imgcap bench big batch {run} {i}") for i in range(files)]
    body, ctype = pe.multipart([("images", f"big{i}.jpg", data) for i, data in enumerate(blobs)])
    del blobs
    before = pe.memory_mb(worker_pid)
    started = time.perf_counter()
    status, _ = client._call("POST", "/api/v1/batches/", session=False, body=body, ctype=ctype)
    seconds = time.perf_counter() - started
    after = pe.memory_mb(worker_pid)
    return {
        "files": files,
        "request_mb": round(len(body) / 2**20, 1),
        "status": status,
        "seconds": round(seconds, 1),
        "before": before,
        "after": after,
        "peak_growth_mb": round(after["VmHWM"] - before["VmHWM"], 1),
    }


class Client:
    """Token requests for the API, a session (signed in through the login form) for the HTML pages."""

    def __init__(self, port: int, token: str) -> None:
        self.port, self.token = port, token
        self.cookies: dict[str, str] = {}
        self.count = 0

    def _call(self, method: str, path: str, *, session: bool, body: bytes | None = None, ctype: str = ""):
        headers = {}
        if session:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        else:
            headers["Authorization"] = f"Token {self.token}"
        if ctype:
            headers["Content-Type"] = ctype
        status, answer_headers, answer, _ = pe.request(self.port, method, path, body=body, headers=headers)
        self.count += 1
        for raw in answer_headers.get_all("Set-Cookie") or []:
            for morsel in SimpleCookie(raw).values():
                self.cookies[morsel.key] = morsel.value
        return status, answer

    def login(self, username: str, password: str) -> None:
        status, page = self._call("GET", "/accounts/login/", session=True)
        match = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        if status != 200 or match is None:
            raise SystemExit(f"login page answered {status} without a CSRF token")
        form = urllib.parse.urlencode(
            {"username": username, "password": password, "csrfmiddlewaretoken": match.group(1).decode()}
        ).encode()
        status, _ = self._call(
            "POST", "/accounts/login/", session=True, body=form, ctype="application/x-www-form-urlencoded"
        )
        if status != 302 or "sessionid" not in self.cookies:
            raise SystemExit(f"signing in answered {status}")

    def get(self, path: str, *, session: bool) -> int:
        return self._call("GET", path, session=session)[0]

    def upload(self, data: bytes) -> dict:
        body, ctype = pe.multipart([("image", "photo.jpg", data)])
        status, answer = self._call("POST", "/api/v1/images/", session=False, body=body, ctype=ctype)
        if status != 202:
            raise SystemExit(f"upload answered {status}: {answer[:300]!r}")
        return json.loads(answer)

    def batch(self, blobs: list[bytes]) -> dict:
        body, ctype = pe.multipart([("images", f"photo{i}.jpg", data) for i, data in enumerate(blobs)])
        status, answer = self._call("POST", "/api/v1/batches/", session=False, body=body, ctype=ctype)
        if status != 202:
            raise SystemExit(f"batch answered {status}: {answer[:300]!r}")
        return json.loads(answer)


def _paths(image: dict, batch: dict) -> list[tuple[str, str]]:
    """(kind, path): every HTML page (session) and API endpoint (token) a user reaches."""
    file_path = urllib.parse.urlsplit(image["urls"]["file"]).path
    i, b = image["id"], batch["id"]
    html = [
        "/",
        "/?mine=1",
        "/upload/",
        f"/images/{i}/",
        "/search/?q=dog+running",
        "/batches/",
        f"/batches/{b}/",
        "/admin/",
        "/admin/captions/image/",
        "/admin/captions/caption/",
        "/account/token/",
        "/api-guide/",
        f"/thumbs/{i}/",  # Pillow resizes an upload on the first request
    ]
    api = [
        "/api/v1/images/",
        "/api/v1/images/?status=pending",
        f"/api/v1/images/{i}/",
        "/api/v1/batches/",
        f"/api/v1/batches/{b}/",
        "/api/v1/search/?q=dog+running",
        "/api/v1/models/",
        "/api/v1/schema/",
        "/api/v1/docs/",
        "/api/v1/export.csv",
        "/api/v1/export.jsonl",
        file_path,
    ]
    return [("html", p) for p in html] + [("api", p) for p in api]


def _probe(env: dict[str, str]) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=pe.REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        raise SystemExit(f"the import probe failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    raise SystemExit(main())
