"""`manage.py run_platform` (what `make run` runs): imgcap on one machine, no services needed.

Migrates the database, makes sure there is a user to sign in with, then runs a Celery worker (with
the reaper's beat schedule embedded) and the web server as child processes until Ctrl-C/SIGTERM.
The database and broker are whatever settings say: the embedded Postgres (imgcap_site/
embedded_postgres.py) and the filesystem broker under var/ by default, another Postgres and Redis when
DATABASE_URL and CELERY_BROKER_URL are set. The embedded server stops with the platform.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, TextIO

from django import db
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.urls import NoReverseMatch, reverse

from imgcap_site import queues
from imgcap_site.embedded_postgres import stop_embedded_postgres

# Worker log lines worth showing in the terminal too (the full log goes to VAR_DIR/worker.log).
ECHO_MARKERS = (
    "imgcap captioner ready",
    "imgcap micro-batch:",
    "imgcap reaper:",
    "imgcap batch ",  # a batch's URLs: "imgcap batch 3: fetched 2 URLs, refused 0"
    ": ERROR/",
    ": CRITICAL/",
)
STOP_TIMEOUT_S = 30


class Command(BaseCommand):
    help = "Run imgcap locally: migrate, ensure a sign-in user, start a Celery worker and the web server."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default=os.environ.get("IMGCAP_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))

    def handle(self, *args: Any, host: str, port: int, **options: Any) -> None:
        var_dir = Path(settings.VAR_DIR)
        var_dir.mkdir(parents=True, exist_ok=True)
        if not port_is_free(host, port):
            raise CommandError(f"{host}:{port} is already in use: stop what runs there, or set PORT=another")

        self.stdout.write("Applying database migrations…")
        call_command("migrate", interactive=False, verbosity=0)

        url = f"http://{host}:{port}/"
        sign_in = self.ensure_user(var_dir, url)
        # SIGTERM (docker stop, kill) stops the platform the way Ctrl-C does; SIGINT is set too because
        # a shell starting us in the background leaves it ignored.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, interrupt)

        stopping = threading.Event()
        worker_log = var_dir / "worker.log"
        web = worker = None
        try:
            worker = start_child(worker_command(var_dir), stdout=subprocess.PIPE)
            # --insecure: static files are served even with DEBUG off; media go through captions' view.
            web = start_child(
                [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "runserver", "--noreload"]
                + ["--insecure", f"{host}:{port}"],
            )
            # Started after the children: forking (preexec_fn) is safest while this is the only thread.
            tail: deque[str] = deque(maxlen=20)
            copier = threading.Thread(
                target=copy_log, args=(worker.stdout, worker_log, tail, self.stdout, stopping), daemon=True
            )
            copier.start()
            self.stdout.write("Started the Celery worker; it loads the captioning model (a few seconds).")
            if not wait_for_port(host, port, [web, worker], timeout_s=60):
                raise CommandError(self.why_stopped(web, worker, worker_log, tail))
            self.stdout.write(self.style.SUCCESS(f"imgcap is running at {url}"))
            self.stdout.write(sign_in)
            self.stdout.write(f"Worker log: {worker_log}. Stop with Ctrl-C.")
            while web.poll() is None and worker.poll() is None:
                time.sleep(0.5)
            copier.join(timeout=5)  # the worker's last lines, for the message
            raise CommandError(self.why_stopped(web, worker, worker_log, tail))
        except KeyboardInterrupt:
            self.stdout.write("Stopping imgcap…")
        finally:
            stopping.set()
            for child in (web, worker):
                stop_child(child)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            if not os.environ.get("DATABASE_URL"):
                db.connections.close_all()
                stop_embedded_postgres(var_dir / "postgres")
        self.stdout.write("imgcap stopped.")

    def ensure_user(self, var_dir: Path, url: str) -> str:
        """Create `admin` when the database has no user; return how to sign in."""
        users = get_user_model()
        login_url = url.rstrip("/") + reverse_or("login", "/accounts/login/")
        if users.objects.exists():
            saved = var_dir / "admin-password.txt"
            hint = f" (the generated admin password is in {saved})" if saved.is_file() else ""
            return f"Sign in at {login_url} with an existing account{hint}."
        username = os.environ.get("IMGCAP_ADMIN_USER", "admin")
        password = os.environ.get("IMGCAP_ADMIN_PASSWORD")
        generated = not password
        if generated:
            password = secrets.token_urlsafe(12)
        users.objects.create_superuser(username=username, email="", password=password)
        if not generated:
            return f"Sign in at {login_url} as {username!r} with IMGCAP_ADMIN_PASSWORD."
        saved = var_dir / "admin-password.txt"
        # Readable by this account only, from the moment it exists.
        with os.fdopen(os.open(saved, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fp:
            fp.write(password + "\n")
        return (
            f"Created user {username!r} with password {password} (saved in {saved}).\n"
            f"Sign in at {login_url}; the REST API takes the same account (see docs/api.md)."
        )

    def why_stopped(
        self, web: subprocess.Popen, worker: subprocess.Popen, log: Path, tail: deque[str]
    ) -> str:
        if worker.poll() is not None:
            last = "".join(tail).rstrip()
            return (
                f"The Celery worker stopped (exit code {worker.returncode}), so nothing would be captioned; "
                f"stopping imgcap. Its log is {log}; last lines:\n{last}"
            )
        return f"The web server stopped (exit code {web.poll()}); stopping imgcap."


def worker_command(var_dir: Path) -> list[str]:
    """One worker process for every queue, with the reaper's schedule (beat) embedded. A batch's URLs
    are fetched between micro-batches here (docker-compose gives them workers of their own)."""
    every_queue = ",".join([queues.CAPTION_QUEUE, queues.DEFAULT_QUEUE, queues.FETCH_QUEUE])
    command = [sys.executable, "-m", "celery", "-A", "imgcap_site", "worker", "-Q", every_queue]
    command += ["-B", "--pool", "solo", "--concurrency", "1", "--loglevel", "INFO"]
    return command + ["-s", str(var_dir / "celerybeat-schedule")]


def interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def reverse_or(name: str, default: str) -> str:
    try:
        return reverse(name)
    except NoReverseMatch:
        return default


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def wait_for_port(host: str, port: int, children: list[subprocess.Popen], timeout_s: float) -> bool:
    """True once host:port accepts connections; False if a child exits or time runs out first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(child.poll() is not None for child in children):
            return False
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return True
        time.sleep(0.2)
    return False


def start_child(command: list[str], **kwargs: Any) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "DJANGO_SETTINGS_MODULE": settings.SETTINGS_MODULE}
    return subprocess.Popen(
        command,
        cwd=settings.BASE_DIR,
        env=env,
        stderr=subprocess.STDOUT if kwargs.get("stdout") else None,
        text=True,
        preexec_fn=die_with_parent,
        **kwargs,
    )


def die_with_parent() -> None:
    """Linux: the child gets SIGTERM if this command dies without stopping it (e.g. kill -9)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def stop_child(child: subprocess.Popen | None) -> None:
    """SIGTERM (the worker finishes its current batch: a warm shutdown), then SIGKILL if it hangs."""
    if child is None or child.poll() is not None:
        return
    child.terminate()
    try:
        child.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def copy_log(stream: TextIO, log_path: Path, tail: deque[str], out: Any, stopping: threading.Event) -> None:
    """Worker output → log file (all of it) and terminal (ECHO_MARKERS lines)."""
    with log_path.open("a") as log:
        for line in stream:
            log.write(line)
            log.flush()
            tail.append(line)
            if not stopping.is_set() and any(marker in line for marker in ECHO_MARKERS):
                out.write("worker: " + line.rstrip())
