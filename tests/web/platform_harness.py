"""A live imgcap for tests: `manage.py run_platform` (web + a real Celery worker, the embedded Postgres
and the filesystem broker in a temporary folder) and a urllib client that signs in like a browser.

Used by the embedded-mode tests and the browser tests, which drive the same platform with Chromium.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
FLICKR_IMAGES = REPO.parent / "shared" / "data" / "flickr8k" / "images"
START_TIMEOUT_S = 120
CAPTION_TIMEOUT_S = 90

# Everything that would send run_platform to Postgres/Redis or the repository's var/ is left out.
SERVICE_VARS = (
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "IMGCAP_MEDIA_ROOT",
    "IMGCAP_STATIC_ROOT",
    "DJANGO_SETTINGS_MODULE",
)


def database_url(name: str) -> str:
    """DATABASE_URL of database `name` on the server the tests use (the embedded one by default), for
    processes the tests start."""
    from django.conf import settings

    parts = urllib.parse.urlsplit(settings.DATABASE_URL)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


def unique_jpeg(path: Path, tag: str = "imgcap test") -> bytes:
    """The photo with a JPEG comment added: the same pixels, bytes (so a stored image) of its own."""
    data = path.read_bytes()
    comment = f"{tag} {uuid.uuid4()}".encode()
    return data[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + data[2:]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check: Callable[[], Any], timeout_s: float, what: str, log: Path | None = None) -> Any:
    """check()'s first truthy result; an AssertionError with the end of `log` (a process's output) if
    none comes within timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.25)
    tail = log.read_text()[-4000:] if log is not None and log.exists() else ""
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; the log ends:\n{tail}")


class Platform:
    """One `manage.py run_platform` process and its output."""

    def __init__(
        self, var_dir: Path, tiny_run: Path, name: str, env_vars: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output = var_dir.parent / f"{name}.out"
        env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARS}
        env.update(
            IMGCAP_VAR_DIR=str(var_dir),
            IMGCAP_MODEL_DIR=str(tiny_run),
            IMGCAP_REAPER_INTERVAL_S="2",  # so beat's schedule is seen to run within the test
            PORT=str(self.port),
            PYTHONUNBUFFERED="1",
        )
        env.update(env_vars or {})
        with self.output.open("w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "run_platform"],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # so the test can clean up the whole group if anything is left
            )
        wait_for(
            lambda: self.process.poll() is not None or "imgcap is running at" in self.text(),
            START_TIMEOUT_S,
            "imgcap is running",
            self.output,
        )
        assert self.process.poll() is None, self.text()
        assert f"imgcap is running at {self.url}/" in self.text()

    def text(self) -> str:
        return self.output.read_text()

    def children(self) -> list[int]:
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in path.read_text().split()] if path.exists() else []

    def cleanup(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(40)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


class Browser:
    """urllib with a cookie jar: session sign-in and CSRF, like a person's browser."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def csrf(self) -> str:
        return next(c.value for c in self.jar if c.name == "csrftoken")

    def request(self, path: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(self.base + path, data=data, headers=headers or {})
        try:
            with self.opener.open(req, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def get_json(self, path: str) -> Any:
        status, body = self.request(path, headers={"Accept": "application/json"})
        assert status == 200, (path, status, body[:500])
        return json.loads(body)

    def sign_in(self, username: str, password: str) -> None:
        status, page = self.request("/accounts/login/")
        assert status == 200
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1).decode()
        form = urllib.parse.urlencode(
            {"username": username, "password": password, "csrfmiddlewaretoken": token}
        )
        status, _ = self.request(
            "/accounts/login/", form.encode(), {"Referer": self.base + "/accounts/login/"}
        )
        assert status == 200  # followed the redirect to the gallery
        assert any(c.name == "sessionid" for c in self.jar), "sign-in did not start a session"

    def upload(self, name: str, data: bytes) -> tuple[int, Any]:
        boundary = uuid.uuid4().hex
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
                "Content-Type: image/jpeg\r\n\r\n"
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        headers = {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "X-CSRFToken": self.csrf(),
            "Referer": self.base + "/",
        }
        status, answer = self.request("/api/v1/images/", body, headers)
        return status, json.loads(answer)
