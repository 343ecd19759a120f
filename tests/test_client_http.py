"""The uploader's HTTP client against a scripted local HTTP server (no platform): which answers are
retried, how long it waits, what an error says. Waits are recorded, not slept."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from imgcap_client import api
from imgcap_client.api import ApiError, Client, FilePart, UnreachableError, retry_after_s
from imgcap_client.cli import main


class Script:
    """The answers to give, in order: (status, headers, body) or "drop" (close without answering)."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, dict[str, str], bytes] | str] = []
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            script.requests.append((self.command, self.path, dict(self.headers), body))
            answer = script.answers.pop(0) if script.answers else (200, {}, b'{"results": []}')
            if answer == "drop":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            status, headers, content = answer
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        do_GET = do_POST = answer  # noqa: N815 - http.server's names

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", script
    httpd.shutdown()
    httpd.server_close()


def error(status: int, code: str, message: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    return status, headers, json.dumps({"error": {"code": code, "message": message}}).encode()


def client(url: str, waits: list[float], **options) -> Client:
    return Client(url, "secret", sleep=waits.append, **options)


def test_429_and_503_wait_as_retry_after_says_then_succeed(server):
    url, script = server
    script.answers = [
        error(503, "database_unavailable", "back soon", **{"Retry-After": "5"}),
        error(429, "throttled", "slow down", **{"Retry-After": "2"}),
        (200, {}, b'{"results": [{"id": 1}]}'),
    ]
    waits: list[float] = []
    answer = client(url, waits).get("images/", {"sha256": "a,b"})
    assert answer.data == {"results": [{"id": 1}]} and answer.retried
    assert waits == [5, 2]
    method, path, headers, _ = script.requests[0]
    assert (method, path) == ("GET", "/api/v1/images/?sha256=a,b")  # commas sent as they are
    assert headers["Authorization"] == "Token secret"


def test_busy_retries_are_bounded_and_back_off_without_retry_after(server):
    url, script = server
    script.answers = [error(429, "queue_quota", "too many waiting")] * 4
    waits: list[float] = []
    with pytest.raises(ApiError) as raised:
        client(url, waits, retries=3).get("images/")
    assert (raised.value.status, raised.value.code, raised.value.message) == (
        429,
        "queue_quota",
        "too many waiting",
    )
    assert waits == [0.5, 1.0, 2.0] and len(script.requests) == 4


def test_retry_after_takes_seconds_or_a_date_and_a_huge_one_is_capped(server):
    assert retry_after_s("3600") == 3600
    in_a_minute = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)
    assert 55 <= retry_after_s(in_a_minute) <= 60
    assert retry_after_s("soon") is None and retry_after_s(None) is None

    url, script = server
    script.answers = [error(503, "database_unavailable", "down", **{"Retry-After": "3600"})]
    waits: list[float] = []
    client(url, waits).get("images/")
    assert waits == [api.MAX_WAIT_S]


def test_other_4xx_are_not_retried_and_keep_the_servers_message(server):
    url, script = server
    script.answers = [error(422, "image_corrupt", "x.jpg: the image is truncated")]
    waits: list[float] = []
    with pytest.raises(ApiError) as raised:
        client(url, waits).post_files(
            "images/", {"batch": "3"}, [FilePart("image", 'x".jpg', b"\xff\xd8data")]
        )
    assert raised.value.message == "x.jpg: the image is truncated" and not raised.value.token_refused
    assert waits == [] and len(script.requests) == 1
    _, _, headers, body = script.requests[0]
    assert headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert b'name="batch"\r\n\r\n3\r\n' in body
    assert b'name="image"; filename="x\'.jpg"\r\nContent-Type: image/jpeg\r\n\r\n\xff\xd8data\r\n' in body


def test_refused_tokens_and_pages_that_are_not_json(server):
    url, script = server
    script.answers = [
        error(401, "not_authenticated", "Invalid token."),
        error(403, "storage_quota", "full"),
        (404, {"Content-Type": "text/html"}, b"<html><h1>Not Found</h1></html>"),
        (400, {"Content-Type": "text/plain"}, b"Bad Request\r\nRequest Line is too large (8192 > 4094)"),
    ]
    waits: list[float] = []
    errors = []
    for _ in range(4):
        with pytest.raises(ApiError) as raised:
            client(url, waits).get("images/")
        errors.append(raised.value)
    assert [e.token_refused for e in errors] == [True, False, False, False]
    assert str(errors[0]) == "Invalid token. (HTTP 401, not_authenticated)"
    assert str(errors[2]) == "HTTP 404 Not Found"  # a page, not the API: nothing of it is worth a line
    assert str(errors[3]) == "HTTP 400 Bad Request: Bad Request Request Line is too large (8192 > 4094)"


def test_a_dropped_connection_is_tried_again(server):
    url, script = server
    script.answers = ["drop", (200, {}, b'{"ok": true}')]
    waits: list[float] = []
    assert client(url, waits).get("health/").data == {"ok": True}
    assert waits == [0.5]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_no_server_is_unreachable_after_a_few_tries():
    waits: list[float] = []
    with pytest.raises(UnreachableError, match="cannot reach http://127.0.0.1:.*refused"):
        client(f"127.0.0.1:{free_port()}", waits).get("images/")
    assert waits == [0.5, 1.0, 2.0]


def test_the_command_exits_2_when_there_is_no_server_or_the_token_is_refused(
    server, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(api.time, "sleep", lambda s: None)
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8 not really")
    assert main(["upload", str(tmp_path), "--server", f"http://127.0.0.1:{free_port()}", "--token", "t"]) == 2
    assert "cannot reach http://127.0.0.1:" in capsys.readouterr().err

    url, script = server
    script.answers = [error(401, "not_authenticated", "Invalid token.")]
    assert main(["upload", str(tmp_path), "--server", url, "--token", "wrong"]) == 2
    assert f"error: the token was refused by {url}: Invalid token." in capsys.readouterr().err
    assert [r[0] for r in script.requests] == ["GET"]  # nothing was sent


def test_an_older_server_without_the_hash_filter_gets_every_file(server, tmp_path, capsys):
    url, script = server
    (tmp_path / "a.jpg").write_bytes(b"one")
    other = {"id": 9, "sha256": "f" * 64}  # it ignores ?sha256= and lists the newest images
    page = json.dumps({"count": 1, "results": [other]}).encode()
    batch = {"id": 4, "items": [{"id": 10, "duplicate": False}], "urls": {"page": f"{url}/batches/4/"}}
    script.answers = [(200, {}, page), (200, {}, page), (202, {}, json.dumps(batch).encode())]
    assert main(["upload", str(tmp_path), "--server", url, "--token", "t"]) == 0
    out = capsys.readouterr()
    assert "cannot tell which files it has" in out.err
    assert "uploaded 1, already on the server 0, failed 0" in out.out
    assert f"batch 4: {url}/batches/4/" in out.out
    method, path, headers, _ = script.requests[-1]
    assert (method, path) == ("POST", "/api/v1/batches/") and headers["Idempotency-Key"]
