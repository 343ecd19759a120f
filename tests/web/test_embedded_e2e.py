"""`manage.py run_platform` (what `make run` runs) on a machine with no services.

SQLite, media, the filesystem broker and beat's schedule all live in a temporary IMGCAP_VAR_DIR.
A person's path over HTTP: sign in, upload a photo, wait for its caption, search for it.
"""

from __future__ import annotations

import contextlib
import html
import http.cookiejar
import json
import os
import re
import signal
import socket
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

import pytest

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check: Callable[[], Any], timeout_s: float, what: str, output: Path) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; run_platform said:\n{output.read_text()[-4000:]}")


class Platform:
    """One `manage.py run_platform` process and its output."""

    def __init__(self, var_dir: Path, tiny_run: Path, name: str) -> None:
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


@pytest.fixture(scope="module")
def var_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("embedded") / "var"


def test_run_platform_serves_uploads_captions_and_search_with_no_services(var_dir, tiny_run):
    photo = sorted(FLICKR_IMAGES.glob("*.jpg"))[:1]
    if not photo:
        pytest.skip(f"real photos not found in {FLICKR_IMAGES}")
    platform = Platform(var_dir, tiny_run, "first")
    try:
        # A fresh database gets an admin whose generated password is printed once and saved.
        password = (var_dir / "admin-password.txt").read_text().strip()
        assert len(password) >= 12 and f"with password {password}" in platform.text()
        assert oct((var_dir / "admin-password.txt").stat().st_mode & 0o777) == "0o600"
        assert (var_dir / "db.sqlite3").is_file()

        browser = Browser(platform.url)
        assert browser.request("/api/v1/images/", b"x", {"Content-Type": "image/jpeg"})[0] in (401, 403)
        browser.sign_in("admin", password)
        status, created = browser.upload(photo[0].name, photo[0].read_bytes())
        assert status == 202, created

        def captioned() -> dict | None:
            body = browser.get_json(f"/api/v1/images/{created['id']}/")
            return body if body["status"] in ("done", "failed") else None

        image = wait_for(captioned, CAPTION_TIMEOUT_S, "the caption", platform.output)
        assert image["status"] == "done", image
        text = image["caption"]["text"]
        assert text and len(image["candidates"]) >= 1

        word = max(text.split(), key=len)
        hits = browser.get_json("/api/v1/search/?" + urllib.parse.urlencode({"q": word}))["results"]
        assert created["id"] in [hit["image"]["id"] for hit in hits]

        status, page = browser.request(urllib.parse.urlsplit(image["urls"]["page"]).path)
        assert status == 200 and html.escape(text).encode() in page
        status, file_bytes = browser.request(urllib.parse.urlsplit(image["urls"]["file"]).path)
        assert status == 200 and file_bytes == photo[0].read_bytes()
        # A stranger (no session) gets a 404 for the private image's file, not the bytes.
        assert Browser(platform.url).request(urllib.parse.urlsplit(image["urls"]["file"]).path)[0] == 404

        # Worker and beat share the filesystem broker: beat's reaper ticks reach the worker.
        log = var_dir / "worker.log"
        wait_for(lambda: "Task imgcap.requeue_stale[" in log.read_text(), 30, "a reaper run", platform.output)
        assert "imgcap batch: 1 image in one model call" in log.read_text()
        # The broker URL names a host, so kombu has nothing to warn about in any process.
        assert "No hostname was supplied" not in platform.text() + log.read_text()
        assert "worker: " in platform.text()  # batch lines are echoed to the terminal
        assert not (REPO / "control").exists()  # broker state stays under IMGCAP_VAR_DIR
        assert (var_dir / "broker" / "control").is_dir()

        children = platform.children()
        assert len(children) == 2
        platform.process.send_signal(signal.SIGTERM)
        assert platform.process.wait(40) == 0
        assert "imgcap stopped." in platform.text()
        for pid in children:
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    finally:
        platform.cleanup()


def test_restart_keeps_data_and_a_dying_worker_stops_the_platform_with_a_message(var_dir, tiny_run):
    if not (var_dir / "db.sqlite3").is_file():
        pytest.skip("needs the first run's database")
    platform = Platform(var_dir, tiny_run, "second")
    try:
        assert "with an existing account" in platform.text() and "Created user" not in platform.text()
        browser = Browser(platform.url)
        browser.sign_in("admin", (var_dir / "admin-password.txt").read_text().strip())
        images = browser.get_json("/api/v1/images/")["results"]
        assert [im["status"] for im in images] == ["done"]

        worker_pid = next(
            pid for pid in platform.children() if b"celery" in Path(f"/proc/{pid}/cmdline").read_bytes()
        )
        os.kill(worker_pid, signal.SIGKILL)
        assert platform.process.wait(40) == 1
        assert "The Celery worker stopped (exit code -9)" in platform.text()
    finally:
        platform.cleanup()


@pytest.mark.django_db
def test_admin_password_from_the_environment_is_used_and_not_written(tmp_path, monkeypatch):
    from django.contrib.auth import authenticate

    from captions.management.commands.run_platform import Command

    monkeypatch.setenv("IMGCAP_ADMIN_PASSWORD", "chosen-pass-4321")
    message = Command().ensure_user(tmp_path, "http://127.0.0.1:8000/")
    assert "IMGCAP_ADMIN_PASSWORD" in message and "chosen-pass-4321" not in message
    assert "http://127.0.0.1:8000/accounts/login/" in message
    assert authenticate(username="admin", password="chosen-pass-4321") is not None
    assert not (tmp_path / "admin-password.txt").exists()
    assert "existing account" in Command().ensure_user(tmp_path, "http://127.0.0.1:8000/")


def test_a_busy_port_is_refused_before_anything_starts(tmp_path):
    from django.core.management import CommandError, call_command

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(CommandError, match=f"127.0.0.1:{port} is already in use"):
            call_command("run_platform", port=port)
