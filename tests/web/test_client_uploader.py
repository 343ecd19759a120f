"""The command-line uploader (`python -m imgcap_client upload …`), run as a person runs it, against a real
`manage.py run_platform` (web + worker, the embedded Postgres in a temporary folder, the tiny model):
folders of real Flickr8k and COCO photos, with the junk that real folders hold.

One platform for the module. It takes one upload a second, so that the uploader meets real 429s with
Retry-After and has to wait them out.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.web.platform_harness import FLICKR_IMAGES, REPO, Browser, Platform

pytestmark = pytest.mark.e2e  # starts real processes

COCO_IMAGES = REPO.parent / "shared" / "data" / "coco-mini" / "val2017"
PASSWORD = "client-test-pass-8842"
CLI_TIMEOUT_S = 60


def photo_bytes(i: int) -> bytes:
    """A real photo (Flickr8k for even i, COCO for odd), with a JPEG comment of its own: the same
    picture, but contents (and a SHA-256) no other test or run shares."""
    folder = FLICKR_IMAGES if i % 2 == 0 else COCO_IMAGES
    found = sorted(folder.glob("*.jpg"))
    if len(found) < 8:
        pytest.skip(f"real photos not found in {folder}")
    data = found[(i // 2) % len(found)].read_bytes()
    comment = f"imgcap client test {uuid.uuid4()}".encode()
    return data[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + data[2:]


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def platform(tmp_path_factory, request) -> Iterator[Platform]:
    # The uploader never waits for captions: the shipped model spares this module the tiny model's
    # training (about 50 s on two cores) when no other test has trained it yet.
    default = REPO / "models" / "default"
    model = default if (default / "decoder.npz").is_file() else request.getfixturevalue("tiny_run")
    var_dir = tmp_path_factory.mktemp("client") / "var"
    env = {"IMGCAP_ADMIN_PASSWORD": PASSWORD, "IMGCAP_THROTTLE_UPLOAD": "1/second"}
    live = Platform(var_dir, model, "client", env_vars=env)
    yield live
    # Nothing here waits for captions: the worker is stopped first, sparing the module its warm shutdown
    # (it would finish loading the model and caption what it claimed: ~30 s on two cores). run_platform
    # then stops the web server and the embedded Postgres, as it does whenever its worker dies.
    for pid in live.children():
        with contextlib.suppress(OSError):
            if b"celery" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
    live.cleanup()


@pytest.fixture(scope="module")
def token(platform) -> str:
    """admin's API token, made on the token page as a person makes it."""
    browser = Browser(platform.url)
    browser.sign_in("admin", PASSWORD)
    headers = {"X-CSRFToken": browser.csrf(), "Referer": platform.url + "/account/token/"}
    status, page = browser.request("/account/token/", b"", headers)
    assert status == 200, page[:500]
    return re.search(rb'<code id="token-key">([0-9a-f]{40})</code>', page).group(1).decode()


class Api:
    def __init__(self, base: str, token: str) -> None:
        self.base, self.token = base, token

    def get(self, path: str, **query: str) -> Any:
        url = f"{self.base}/api/v1/{path}" + ("?" + urllib.parse.urlencode(query) if query else "")
        request = urllib.request.Request(url, headers={"Authorization": f"Token {self.token}"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())

    def having(self, *contents: bytes) -> list[dict]:
        """admin's images with these contents (the sha256 filter the uploader resumes with)."""
        return self.get("images/", sha256=",".join(sha(c) for c in contents), page_size="200")["results"]


@pytest.fixture(scope="module")
def api(platform, token) -> Api:
    return Api(platform.url, token)


def upload(*args: str, server: str, token: str | None, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m imgcap_client upload ARGS`, the server and token from the environment as a script would
    set them; stderr is a pipe, so progress comes as plain lines."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGCAP_")}
    env.update(IMGCAP_SERVER=server, PYTHONPATH=str(REPO))
    if token is not None:
        env["IMGCAP_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "imgcap_client", "upload", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )


def test_a_folder_tree_goes_up_in_one_batch_and_a_second_run_sends_nothing(platform, api, token, tmp_path):
    root = tmp_path / "photos"
    photos = {
        name: photo_bytes(i)
        for i, name in enumerate(["a.jpg", "trip/b.JPEG", "trip/2019/c.jpg", "été/d.jpg"])
    }
    for name, data in photos.items():
        write(root / name, data)
    write(root / "trip" / "copy-of-a.jpg", photos["a.jpg"])  # the same contents under another name
    # Junk that holds real photo bytes: were it sent, the server would take it.
    junk = {
        name: photo_bytes(10 + i)
        for i, name in enumerate(["._a.jpg", "__MACOSX/trip/._b.JPEG", ".thumbs/x.jpg"])
    }
    for name, data in junk.items():
        write(root / name, data)
    write(root / ".DS_Store", b"\x00\x00\x00\x01Bud1")
    write(root / "Thumbs.db", b"\xd0\xcf\x11\xe0")
    write(root / "notes.txt", b"holiday notes")
    write(root / "trip" / "readme.jpg", b"this is a text file with a photo's name\n" * 20)
    batches_before = api.get("batches/")["count"]

    first = upload("photos", "--visibility", "public", server=platform.url, token=token, cwd=tmp_path)
    assert first.returncode == 1, first.stdout + first.stderr  # the text file named .jpg failed
    out = first.stdout
    assert "uploaded 4, already on the server 0, failed 1" in out, out
    # The server's own reason, from its JSON error.
    failed = re.search(r"^failed: photos/trip/readme\.jpg: (.+)$", out, re.M)
    assert (
        failed
        and "readme.jpg: this is not an image we can read" in failed.group(1)
        and "(not_an_image)" in out
    )
    assert "1 file with the same contents as another not sent again" in out
    # ._a.jpg, __MACOSX/…, .thumbs/x.jpg, .DS_Store, Thumbs.db, notes.txt
    assert "passed over 6 files that are not images" in out
    batch_line = re.search(r"^batch (\d+): (http://\S+/batches/\d+/)$", out, re.M)
    assert batch_line, out
    assert batch_line.group(2) == f"{platform.url}/batches/{batch_line.group(1)}/"
    # Not a terminal: one plain line per file, no bar.
    assert "uploaded: photos/a.jpg" in first.stderr and "\r" not in first.stderr

    batch = api.get(f"batches/{batch_line.group(1)}/")
    assert sorted(item["name"] for item in batch["items"]) == ["a.jpg", "b.JPEG", "c.jpg", "d.jpg"]
    assert api.get("batches/")["count"] == batches_before + 1  # one batch for the whole run
    stored = api.having(*photos.values())
    assert len(stored) == 4 and {image["visibility"] for image in stored} == {"public"}
    assert {image["original_name"] for image in stored} == {"a.jpg", "b.JPEG", "c.jpg", "d.jpg"}
    assert api.having(*junk.values()) == []  # junk never sent

    again = upload("photos", "--visibility", "public", server=platform.url, token=token, cwd=tmp_path)
    assert again.returncode == 1, again.stdout + again.stderr
    assert "uploaded 0, already on the server 4, failed 1" in again.stdout, again.stdout
    assert "4 files already on the server: skipped" in again.stderr
    assert "batch " not in again.stdout  # nothing accepted, so no new batch either
    assert api.get("batches/")["count"] == batches_before + 1
    assert len(api.having(*photos.values())) == 4


def test_the_servers_request_rate_is_waited_out(platform, api, token, tmp_path):
    contents = [photo_bytes(50 + i) for i in range(4)]
    for i, data in enumerate(contents):
        write(tmp_path / "in" / f"{i}.jpg", data)
    # One at a time: the first opens the batch, the next three are uploads (one a second allowed), sent
    # one after another, so the server's count is not raced and the third at the latest is told to wait.
    done = upload("in", "--concurrency", "1", server=platform.url, token=token, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^server busy \(HTTP 429\); waiting [\d.]+ s$", done.stderr, re.M), done.stderr
    assert "uploaded 4, already on the server 0, failed 0" in done.stdout
    assert len(api.having(*contents)) == 4


def test_a_corrupt_photo_fails_with_the_servers_message_and_the_rest_goes_up(platform, api, token, tmp_path):
    good, whole = photo_bytes(20), photo_bytes(21)
    broken = whole[: len(whole) // 3]  # a real JPEG cut short: its header reads, its pixels do not
    write(tmp_path / "in" / "good.jpg", good)
    write(tmp_path / "in" / "broken.jpg", broken)

    done = upload("in", "--quiet", server=platform.url, token=token, cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "uploaded 1, already on the server 0, failed 1" in done.stdout
    failed = re.search(r"^failed: in/broken\.jpg: (.+) \((\w+)\)$", done.stdout, re.M)
    assert failed, done.stdout
    assert failed.group(2) == "image_corrupt" and failed.group(1).startswith("broken.jpg: ")
    assert done.stderr == ""  # --quiet: no progress lines
    assert [image["original_name"] for image in api.having(good, broken)] == ["good.jpg"]


def test_a_wrong_token_or_a_missing_one_exits_2_before_anything_is_sent(platform, api, token, tmp_path):
    data = photo_bytes(30)
    write(tmp_path / "in" / "a.jpg", data)

    refused = upload("in", server=platform.url, token="0" * 40, cwd=tmp_path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"error: the token was refused by {platform.url}" in refused.stderr
    assert refused.stdout == ""

    missing = upload("in", server=platform.url, token=None, cwd=tmp_path)
    assert (
        missing.returncode == 2
        and "give your API token with --token TOKEN (or set IMGCAP_TOKEN)" in missing.stderr
    )
    assert api.having(data) == []


def test_album_puts_every_photo_of_the_run_in_it_those_already_on_the_server_too(
    platform, api, token, tmp_path
):
    before, new = photo_bytes(50), [photo_bytes(51), photo_bytes(52)]
    write(tmp_path / "first" / "before.jpg", before)
    assert upload("first", "--quiet", server=platform.url, token=token, cwd=tmp_path).returncode == 0
    shutil.copytree(tmp_path / "first", tmp_path / "in")
    write(tmp_path / "in" / "n1.jpg", new[0])
    write(tmp_path / "in" / "sub" / "n2.jpg", new[1])

    dry = upload("in", "--dry-run", "--album", "Summer 2024", server=platform.url, token=token, cwd=tmp_path)
    assert dry.returncode == 0 and "would make the album 'Summer 2024'" in dry.stdout
    assert api.get("albums/", name="Summer 2024")["results"] == []  # a dry run makes nothing

    done = upload("in", "--quiet", "--album", "Summer 2024", server=platform.url, token=token, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "uploaded 2, already on the server 1, failed 0" in done.stdout
    assert "album 'Summer 2024' (new): 3 photos of this run in it" in done.stdout
    [album] = api.get("albums/", name="Summer 2024")["results"]
    ids = {image["id"] for image in api.having(before, *new)}
    assert (
        album["images"] == 3
        and {i["id"] for i in api.get("images/", album=str(album["id"]))["results"]} == ids
    )

    again = upload("in", "--quiet", "--album", "Summer 2024", server=platform.url, token=token, cwd=tmp_path)
    assert again.returncode == 0 and "album 'Summer 2024': 3 photos of this run in it" in again.stdout
    assert api.get("albums/", name="Summer 2024")["results"][0]["images"] == 3

    bad = upload("in", "--album", "x" * 300, server=platform.url, token=token, cwd=tmp_path)
    assert bad.returncode == 2 and "album_name_too_long" in bad.stderr


def test_dry_run_lists_what_it_would_send_and_sends_nothing(platform, api, token, tmp_path):
    sent, new = photo_bytes(40), [photo_bytes(41), photo_bytes(42)]
    write(tmp_path / "first" / "sent.jpg", sent)
    assert upload("first", server=platform.url, token=token, cwd=tmp_path).returncode == 0
    shutil.copytree(tmp_path / "first", tmp_path / "in")
    write(tmp_path / "in" / "sub" / "new1.jpg", new[0])
    write(tmp_path / "in" / "new2.png", new[1])  # a JPEG named .png: the server would read the bytes
    batches = api.get("batches/")["count"]

    dry = upload("in", "--dry-run", "--no-recursive", server=platform.url, token=token, cwd=tmp_path)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert dry.stdout.splitlines() == [
        "would upload: in/new2.png",
        "already on the server: in/sent.jpg",
        "dry run: would upload 1, already on the server 1; nothing was sent",
    ]
    dry = upload("in", "--dry-run", server=platform.url, token=token, cwd=tmp_path)
    assert (
        "would upload: in/sub/new1.jpg" in dry.stdout
        and "would upload 2, already on the server 1" in dry.stdout
    )
    assert api.having(*new) == [] and api.get("batches/")["count"] == batches
