"""`manage.py run_platform` (what `make run` runs) on a machine with no services.

The embedded Postgres, media, the filesystem broker and beat's schedule all live in a temporary
IMGCAP_VAR_DIR.
A person's path over HTTP: sign in, upload a photo, wait for its caption, search for it.
"""

from __future__ import annotations

import html
import os
import signal
import socket
import urllib.parse
from pathlib import Path

import pytest

from tests.web.platform_harness import CAPTION_TIMEOUT_S, FLICKR_IMAGES, REPO, Browser, Platform, wait_for

pytestmark = pytest.mark.e2e  # starts real processes


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
        assert (var_dir / "postgres" / "pgdata" / "PG_VERSION").is_file()

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
        assert "imgcap micro-batch: 1 image in one model call" in log.read_text()
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
        # The embedded database stopped with the platform.
        assert not (var_dir / "postgres" / "pgdata" / "postmaster.pid").exists()
    finally:
        platform.cleanup()


def test_restart_keeps_data_and_a_dying_worker_stops_the_platform_with_a_message(var_dir, tiny_run):
    if not (var_dir / "postgres" / "pgdata" / "PG_VERSION").is_file():
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
    from django.test import RequestFactory

    from captions.management.commands.run_platform import Command

    monkeypatch.setenv("IMGCAP_ADMIN_PASSWORD", "chosen-pass-4321")
    message = Command().ensure_user(tmp_path, "http://127.0.0.1:8000/")
    assert "IMGCAP_ADMIN_PASSWORD" in message and "chosen-pass-4321" not in message
    assert "http://127.0.0.1:8000/accounts/login/" in message
    # Sign-ins go through django-axes, which needs the request it counts failures of.
    request = RequestFactory().post("/accounts/login/")
    assert authenticate(request, username="admin", password="chosen-pass-4321") is not None
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
