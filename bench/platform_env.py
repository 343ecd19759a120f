"""Set-up shared by the platform benchmarks: a throwaway Postgres database, a Redis db, a temporary
media folder, the web server (gunicorn) and a Celery worker as real subprocesses, and a tiny HTTP client.

The databases live on the embedded Postgres (pgvector, imgcap_site/embedded_postgres.py) in
var/bench/postgres, started on first use, unless IMGCAP_BENCH_PG_HOST names another server (a host or a
socket folder, with IMGCAP_BENCH_PG_PORT) that has pgvector.

Every platform benchmark runs the platform with the production settings (DEBUG off), configured by
environment variables as a deployment would (`bench_env`). The benchmark process itself configures
Django with the same variables (`setup_django`) to migrate, make users and read the database.
"""

from __future__ import annotations

import functools
import http.client
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FLICKR8K = REPO.parent / "shared" / "data" / "flickr8k"
PG_USER = "postgres"
PG_PORT = int(os.environ.get("IMGCAP_BENCH_PG_PORT", "5432"))
BENCH_PG_DIR = REPO / "var" / "bench" / "postgres"
REDIS_URL = "redis://127.0.0.1:6379"
# Tests use Redis db 9; the benchmarks stay out of their way.
BENCH_REDIS_DB = 12
HOST = "127.0.0.1"


# --- the machine ------------------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    """Cores, load average and free memory now: platform figures are only comparable on a quiet machine."""
    info: dict[str, Any] = {"cores": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()]}
    try:
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        fields = {line.split(":")[0]: line.split()[1] for line in meminfo}
        info["mem_available_mb"] = int(fields["MemAvailable"]) // 1024
    except (OSError, KeyError, IndexError):
        pass
    return info


def print_environment(info: dict[str, Any]) -> None:
    load = " ".join(str(x) for x in info["loadavg"])
    print(
        f"machine: {info['cores']} cores, load average {load} (1/5/15 min), "
        f"{info.get('mem_available_mb', '?')} MB available",
        flush=True,
    )


def summarize(seconds: Sequence[float]) -> dict[str, float]:
    """p50 / p95 / max / mean in milliseconds."""
    if not seconds:
        return {"n": 0}
    ms = np.asarray(seconds, dtype=np.float64) * 1000
    return {
        "n": int(ms.size),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "max_ms": round(float(ms.max()), 2),
        "mean_ms": round(float(ms.mean()), 2),
    }


def fmt_latency(stats: dict[str, float]) -> str:
    if not stats.get("n"):
        return "no samples"
    return (
        f"p50 {stats['p50_ms']:.1f} ms  p95 {stats['p95_ms']:.1f} ms  max {stats['max_ms']:.1f} ms  "
        f"(n={stats['n']})"
    )


# --- data ---------------------------------------------------------------------------------------------


def dev_images(count: int, *, offset: int = 0) -> list[Path]:
    """Flickr8k dev images in the split file's order (reading the list does not import TensorFlow)."""
    from ml.data import load_dataset

    images = load_dataset("flickr8k", FLICKR8K, split="dev").images()
    chosen = images[offset : offset + count]
    if len(chosen) < count:
        raise SystemExit(
            f"asked for {count} dev images from #{offset}, but {FLICKR8K} has {len(images)} dev images"
        )
    return [Path(p) for p in chosen]


def tagged_jpeg(data: bytes, tag: str) -> bytes:
    """The same JPEG with a comment segment after its start marker: same pixels, bytes (and hash) of its own,
    so the platform's per-owner dedupe never short-circuits an upload."""
    comment = tag.encode()
    return data[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + data[2:]


# --- services: Postgres, Redis ---------------------------------------------------------------------------


@functools.cache
def pg_host() -> str:
    """The benchmarks' Postgres: IMGCAP_BENCH_PG_HOST, else the embedded server's socket folder (started
    or joined once per process, not at every connection)."""
    configured = os.environ.get("IMGCAP_BENCH_PG_HOST")
    if configured:
        return configured
    from urllib.parse import parse_qs, urlsplit

    from imgcap_site.embedded_postgres import embedded_database_url

    return parse_qs(urlsplit(embedded_database_url(BENCH_PG_DIR, "postgres")).query)["host"][0]


def connect(dbname: str):
    """A psycopg2 connection to `dbname` on the benchmarks' Postgres."""
    import psycopg2

    return psycopg2.connect(host=pg_host(), port=PG_PORT, user=PG_USER, dbname=dbname)


def _pg_admin():
    conn = connect("postgres")
    conn.autocommit = True
    return conn


def database_exists(name: str) -> bool:
    conn = _pg_admin()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
            return cur.fetchone() is not None
    finally:
        conn.close()


def create_database(name: str) -> None:
    """A new, empty database `name` (an existing one of that name is dropped first)."""
    drop_database(name)
    conn = _pg_admin()
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()


def drop_database(name: str) -> None:
    conn = _pg_admin()
    try:
        with conn.cursor() as cur:
            # FORCE: our own gunicorn/worker connections may still be closing.
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        conn.close()


def flush_redis(db: int) -> None:
    import redis

    redis.Redis.from_url(f"{REDIS_URL}/{db}").flushdb()


def database_url(name: str) -> str:
    from urllib.parse import quote

    host = pg_host()
    if host.startswith("/"):  # a socket folder goes to libpq as the host parameter
        return f"postgres://{PG_USER}@/{name}?host={quote(host, safe='/')}&port={PG_PORT}"
    return f"postgres://{PG_USER}@{host}:{PG_PORT}/{name}"


def bench_env(*, db_name: str, redis_db: int, work_dir: Path, **extra: str) -> dict[str, str]:
    """Environment of every platform process of a benchmark: production settings, our database,
    broker and folders. `extra` adds or overrides variables (e.g. IMGCAP_MICRO_BATCH_MAX="16")."""
    return {
        "DJANGO_SETTINGS_MODULE": "imgcap_site.settings.production",
        "DJANGO_SECRET_KEY": "bench-only-not-a-secret",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_SECURE_SSL_REDIRECT": "0",  # plain HTTP on 127.0.0.1
        "DATABASE_URL": database_url(db_name),
        "CELERY_BROKER_URL": f"{REDIS_URL}/{redis_db}",
        "IMGCAP_VAR_DIR": str(work_dir / "var"),
        "IMGCAP_MEDIA_ROOT": str(work_dir / "media"),
        "IMGCAP_LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
        # One client sends thousands of requests on purpose: the capacity is measured, not the limits.
        **{f"IMGCAP_THROTTLE_{scope}": "" for scope in ("UPLOAD", "BATCH", "RECAPTION", "SEARCH")},
        "IMGCAP_USER_QUEUE_IMAGES": "0",
        **{k: str(v) for k, v in extra.items()},
    }


def work_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f"imgcap-{prefix}-"))
    (path / "media").mkdir()
    (path / "var").mkdir()
    return path


def setup_django(env: dict[str, str]) -> None:
    """Configure Django in this process with the benchmark's environment (before any Django import)."""
    os.environ.update(env)
    import django

    django.setup()


def migrate() -> None:
    """The schema, and the static files collected as the Dockerfile does (production settings serve
    them from the collected manifest; without it every page that uses one answers 500)."""
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)


def fresh_platform(
    name: str, *, db_name: str, redis_db: int, **extra: str
) -> tuple[dict[str, Any], Path, dict[str, str]]:
    """Print the machine's state, then a new database, an empty Redis db and temp folders, with
    Django set up in this process on them. Returns (environment at start, work dir, env vars)."""
    env_start = environment()
    print_environment(env_start)
    work = work_dir(name)
    env = bench_env(db_name=db_name, redis_db=redis_db, work_dir=work, **extra)
    create_database(db_name)
    flush_redis(redis_db)
    setup_django(env)
    migrate()
    return env_start, work, env


def make_user(username: str, password: str | None = None) -> tuple[Any, str]:
    """A user and their API token key."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    user_model = get_user_model()
    user, _ = user_model.objects.get_or_create(username=username)
    if password:
        user.set_password(password)
        user.save()
    token, _ = Token.objects.get_or_create(user=user)
    return user, token.key


# --- processes ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


class Child:
    """A subprocess we started, its log file, and a clean stop."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.log = name, log
        with log.open("w") as out:
            self.process = subprocess.Popen(
                command, cwd=REPO, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with {self.process.returncode}; log {self.log}:\n{_tail(self.log)}"
            )

    def stop(self, timeout_s: float = 30) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Gunicorn(Child):
    """`gunicorn imgcap_site.wsgi:application -w N` (sync workers) on 127.0.0.1:<free port>."""

    def __init__(self, env: dict[str, str], log: Path, *, workers: int, timeout_s: float = 60) -> None:
        self.port = free_port()
        self.workers = workers
        command = [sys.executable, "-m", "gunicorn", "imgcap_site.wsgi:application"]
        command += ["-w", str(workers), "-b", f"{HOST}:{self.port}", "--timeout", "300"]
        super().__init__("gunicorn", command, env, log)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            if len(self.worker_pids()) >= workers and _port_open(self.port):
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"gunicorn did not start in {timeout_s}s; log {log}:\n{_tail(log)}")

    def worker_pids(self) -> list[int]:
        return children(self.pid)


class CeleryWorker(Child):
    """`celery -A imgcap_site worker -Q caption,default --pool solo`, ready once the model is loaded."""

    READY = "imgcap captioner ready"

    def __init__(self, env: dict[str, str], log: Path, *, timeout_s: float = 300) -> None:
        queues = "caption,default,fetch"
        command = [sys.executable, "-m", "celery", "-A", "imgcap_site", "worker", "-Q", queues]
        command += ["--pool", "solo", "--concurrency", "1", "--loglevel", "INFO"]
        command += ["-n", f"bench-{uuid.uuid4().hex[:8]}@%h", "--without-mingle", "--without-gossip"]
        super().__init__("celery worker", command, env, log)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            if self.READY in _tail(log, 200_000):
                return
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the worker did not load its model in {timeout_s}s; log {log}:\n{_tail(log)}")


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS (resident now) and VmHWM (peak resident) of a process, in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = round(int(value.split()[0]) / 1024, 1)
    return fields


def settled_memory_mb(pid: int, *, quiet_s: float = 1.0, timeout_s: float = 30.0) -> dict[str, float]:
    """memory_mb once VmRSS has not changed for `quiet_s`: a just-forked gunicorn worker is still
    importing the application when its port already answers."""
    deadline = time.monotonic() + timeout_s
    last, since = memory_mb(pid), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = memory_mb(pid)
        if now.get("VmRSS") != last.get("VmRSS"):
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
    return last


def mapped_libraries(pid: int, needle: str) -> list[str]:
    """Files mapped into a process whose path contains `needle` (e.g. TensorFlow's shared objects)."""
    found = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and needle in parts[5]:
            found.add(parts[5].strip())
    return sorted(found)


# --- HTTP -----------------------------------------------------------------------------------------------


def multipart(
    files: Sequence[tuple[str, str, bytes]], fields: dict[str, str] | None = None
) -> tuple[bytes, str]:
    """A multipart/form-data body from (field, file name, bytes) triples and plain fields."""
    boundary = f"----imgcap-bench-{uuid.uuid4().hex}"
    parts: list[bytes] = []
    for name, value in (fields or {}).items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    for field, filename, data in files:
        head = (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        )
        parts += [head.encode(), data, b"\r\n"]
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def request(
    port: int,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout_s: float = 300,
) -> tuple[int, http.client.HTTPMessage, bytes, float]:
    """One HTTP request on a new connection (gunicorn's sync workers close it after each response).

    Returns (status, headers (case-insensitive; `get_all` for repeated ones), body, seconds from
    connecting to the last byte of the answer).
    """
    started = time.perf_counter()
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout_s)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        elapsed = time.perf_counter() - started
        return response.status, response.msg, data, elapsed
    finally:
        conn.close()


# --- uploading and waiting --------------------------------------------------------------------------


def upload_images(port: int, token: str, items: list[tuple[Path, bytes]], chunk: int) -> list[float]:
    """Upload sequentially (token auth): `chunk` files per batch POST, or one POST to /api/v1/images/ each."""
    run = uuid.uuid4().hex[:8]
    latencies = []
    step = max(1, chunk)
    for start in range(0, len(items), step):
        part = items[start : start + step]
        if chunk > 1:
            body, ctype = multipart([("images", p.name, data) for p, data in part])
            path = "/api/v1/batches/"
            headers = {"Idempotency-Key": f"bench-{run}-{start}"}
        else:
            body, ctype = multipart([("image", part[0][0].name, part[0][1])])
            path, headers = "/api/v1/images/", {}
        headers |= {"Authorization": f"Token {token}", "Content-Type": ctype}
        status, _, answer, elapsed = request(port, "POST", path, body=body, headers=headers)
        if status != 202:
            raise SystemExit(f"upload to {path} answered {status}: {answer[:500]!r}")
        latencies.append(elapsed)
    return latencies


def wait_done(user, count: int, timeout_s: float, worker: CeleryWorker) -> dict:
    """Poll the database until `count` images of `user` are done or failed; their counts and last update."""
    from django.db.models import Count, Max

    from captions.models import Image

    deadline = time.monotonic() + timeout_s
    while True:
        rows = Image.objects.filter(owner=user).values("status").annotate(n=Count("id"))
        counts = {row["status"]: row["n"] for row in rows}
        done, failed = counts.get("done", 0), counts.get("failed", 0)
        if done + failed >= count:
            last: datetime = Image.objects.filter(owner=user).aggregate(m=Max("updated_at"))["m"]
            return {"done": done, "failed": failed, "last_update": last}
        worker.check_alive()
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout_s}s: {counts}; worker log {worker.log}")
        time.sleep(0.1)
