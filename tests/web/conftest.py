"""Fixtures of the platform tests: users, API clients, real photos, captions saved through the real service.

Nothing here is autouse: worker and pipeline tests choose what they need.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

REPO = Path(__file__).resolve().parents[2]
FLICKR_IMAGES = REPO.parent / "shared" / "data" / "flickr8k" / "images"
COCO_IMAGES = REPO.parent / "shared" / "data" / "coco-mini" / "val2017"


def flickr_photos(n: int) -> list[Path]:
    found = sorted(FLICKR_IMAGES.glob("*.jpg"))[:n]
    if len(found) < n:
        pytest.skip(f"real Flickr8k photos not found in {FLICKR_IMAGES}")
    return found


def tagged_jpeg(data: bytes, tag: str | None = None) -> bytes:
    """JPEG bytes with a comment segment inserted: the same picture, bytes (and hash) of their own."""
    comment = (tag or f"imgcap test {uuid.uuid4()}").encode()
    return data[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + data[2:]


def png_bytes(width: int = 32, height: int = 24, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def media_root(settings, tmp_path) -> Path:
    """Uploaded files go to a fresh folder per test."""
    root = tmp_path / "media"
    root.mkdir()
    settings.MEDIA_ROOT = root
    return root


@pytest.fixture
def photo() -> Callable[[], bytes]:
    """photo() → bytes of a real Flickr8k JPEG, different bytes at each call (a fresh comment segment)."""
    paths = flickr_photos(8)
    counter = iter(range(10**6))

    def make() -> bytes:
        i = next(counter)
        return tagged_jpeg(paths[i % len(paths)].read_bytes())

    return make


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("alice", "alice@example.com", "alice-password")


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user("bob", "bob@example.com", "bob-password")


def token_client(user):
    """A DRF client that authenticates the way API users do: `Authorization: Token …`."""
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    token, _ = Token.objects.get_or_create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def alice(client, user, media_root):
    """Django's test client signed in as `user` (session), for the HTML pages."""
    client.force_login(user)
    return client


@pytest.fixture
def api(user, media_root):
    return token_client(user)


@pytest.fixture
def other_api(other_user, media_root):
    return token_client(other_user)


@pytest.fixture
def anon_api(media_root):
    from rest_framework.test import APIClient

    return APIClient()


@pytest.fixture
def model_version():
    from captions.services.model_versions import ensure_model_version

    return ensure_model_version(
        name="imgcap-test-model-0001", encoder="efficientnet_lite0", metrics={"bleu4": 0.2}
    )


@pytest.fixture
def make_image(media_root, photo):
    """make_image(owner, visibility="private") → a stored, pending Image, made by upload_image."""
    from captions.services.intake import IncomingFile, upload_image

    def make(owner, visibility: str = "private", data: bytes | None = None, name: str = "photo.jpg"):
        file = IncomingFile(name, data if data is not None else photo())
        return upload_image(owner=owner, file=file, visibility=visibility).image

    return make


@pytest.fixture(autouse=True)
def fresh_search_vocabularies() -> Iterator[None]:
    """Typo correction caches the captions' words, tag search the tags' labels, per process: each test
    starts from its own."""
    from captions.search import semantic, spelling

    spelling.forget_vocabulary()
    semantic.forget_tag_labels()
    yield
    spelling.forget_vocabulary()
    semantic.forget_tag_labels()


@pytest.fixture(autouse=True)
def fresh_request_counts() -> Iterator[None]:
    """Request rates (captions/throttles.py) count in the shared cache: each test starts uncounted."""
    from django.core.cache import cache

    cache.clear()
    yield


def _save_captions(
    image,
    version,
    texts: list[str],
    scores: list[float] | None = None,
    *,
    tags: list[tuple[str, float]] | None = None,
    features: np.ndarray | None = None,
    image_embedding: np.ndarray | None = None,
) -> None:
    from captions import queue
    from ml.text_embedding import shared_embedder

    scores = scores or [-0.5 - 0.1 * i for i in range(len(texts))]
    candidates = [
        queue.CandidateData(
            text=text,
            score=score,
            words=text.split(),
            attention=np.random.default_rng(i).random((len(text.split()), 4, 4), dtype=np.float32),
        )
        for i, (text, score) in enumerate(zip(texts, scores, strict=True))
    ]
    analysis = queue.ImageAnalysis(
        tags=tags or [],
        features=features,
        image_embedding=image_embedding,
        caption_embedding=shared_embedder().embed(texts[:1])[0] if texts else None,
    )
    queue.store_captions(model_version=version, results=[(image, candidates)], analyses={image.pk: analysis})


@pytest.fixture
def save_captions() -> Callable[..., None]:
    """save_captions(image, version, texts, scores=None, tags=, features=, image_embedding=): model
    captions stored the way the worker does it, through queue.store_captions, the best one embedded
    with the real sentence-embedding model."""
    return _save_captions


def _broker_messages(settings) -> list[dict]:
    """The task messages waiting in the test broker folder (kombu's filesystem transport), decoded."""
    options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", None)
    if not options:
        pytest.skip("these checks read the filesystem broker; CELERY_BROKER_URL is set")
    found = []
    for path in sorted(Path(options["data_folder_in"]).glob("*.msg")):
        try:
            envelope = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # consumed meanwhile by a worker of another test
        body = envelope.get("body", "")
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body).decode()
        args = json.loads(body)[0] if body else []
        found.append(
            {
                "file": path.name,
                "task": envelope.get("headers", {}).get("task"),
                "queue": path.name.split(".")[-2],
                "args": args,
            }
        )
    return found


@pytest.fixture
def broker_messages(settings) -> Iterator[Callable[[], list[dict]]]:
    """broker_messages() → task messages sent to the test broker folder since the fixture was set up:
    {file, task, queue, args}."""
    before = {m["file"] for m in _broker_messages(settings)}
    yield lambda: [m for m in _broker_messages(settings) if m["file"] not in before]
    # No worker reads the test broker folder: remove what this test sent.
    folder = Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])
    for message in _broker_messages(settings):
        if message["file"] not in before:
            (folder / message["file"]).unlink(missing_ok=True)


@pytest.fixture
def queued_ids(broker_messages) -> Callable[[], list[int]]:
    """queued_ids() → every image id in the caption tasks sent since the fixture was set up."""

    def ids() -> list[int]:
        found: list[int] = []
        for message in broker_messages():
            if message["task"] == "imgcap.caption_images":
                found += message["args"][0]
        return found

    return ids


class DatabaseOutage:
    """This thread's database connection pointed at a port nothing listens on: every query fails to
    connect, for real (a database that is down), until `end()`, a timer, or the test's end."""

    def __init__(self) -> None:
        from django.db import connection

        self.connection = connection
        self.real = dict(connection.settings_dict)
        self.timers: list[threading.Timer] = []

    def start(self, seconds: float | None = None) -> None:
        """Down now; back by itself after `seconds` (from another thread) when given."""
        self.connection.close()
        self.connection.settings_dict.update(HOST="127.0.0.1", PORT="9")
        if seconds is not None:
            self.timers.append(threading.Timer(seconds, self.back))
            self.timers[-1].start()

    def back(self) -> None:
        self.connection.settings_dict.update(self.real)

    def end(self) -> None:
        for timer in self.timers:
            timer.join()
        self.connection.close()
        self.back()


@pytest.fixture
def database_outage() -> Iterator[DatabaseOutage]:
    outage = DatabaseOutage()
    yield outage
    outage.end()


@pytest.fixture
def photo_server(photo):
    """A real HTTP server on 127.0.0.1 serving /a.jpg and /b.jpg (real photos) and 404 otherwise."""
    served = {"/a.jpg": photo(), "/b.jpg": photo()}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path.startswith("/slow"):  # a photo that takes 2 s to start coming
                time.sleep(2)
            body = served.get(self.path.split("?")[0].replace("/slow", ""))
            try:
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the platform gave up on a slow answer, as it should

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class WebhookReceiver:
    """What a client's webhook endpoint saw: every POST's path, headers (lower-case names) and body.
    It answers the statuses in `answers` in turn, then 200; a status of 302 redirects to /moved."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.received: list[dict] = []
        self.answers: list[int] = []
        self.lock = threading.Lock()

    def wait_for(self, count: int, timeout: float) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.05)
        raise AssertionError(f"{count} webhook POSTs expected within {timeout} s; got {len(self.received)}")


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """A real HTTP server on 127.0.0.1 taking webhook POSTs (settings.IMGCAP_URL_ALLOW_PRIVATE must be
    on for the platform to reach it): receiver.url, receiver.received, receiver.answers."""
    receiver: WebhookReceiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            with receiver.lock:
                receiver.received.append({"path": self.path, "headers": headers, "body": body})
                status = receiver.answers.pop(0) if receiver.answers else 200
            self.send_response(status)
            if status == 302:
                self.send_header("Location", "/moved")
            answer = b'{"ok": true}' if status < 300 else b"receiver says no"
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver = WebhookReceiver(f"http://127.0.0.1:{server.server_address[1]}/hooks/imgcap")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    server.shutdown()
    server.server_close()
