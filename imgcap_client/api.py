"""A small client for imgcap's public REST API (/api/v1/), on urllib: token auth, multipart uploads,
JSON errors, and retries where a retry can help.

Retries: 429 and 503 (and a proxy's 502/504) wait as long as the server's Retry-After says (else a
growing backoff), a bounded number of times; a connection that fails is tried again a few times.
Other 4xx answers are the request's own fault and are raised at once. Re-sending an upload is safe:
the server keeps one image per owner and content, and a batch is opened with an Idempotency-Key.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import mimetypes
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from typing import Any

RETRY_STATUSES = frozenset({429, 502, 503, 504})
MAX_WAIT_S = 120.0  # one wait, whatever Retry-After asks: a run must end
MIN_WAIT_S = 0.2
USER_AGENT = "imgcap-upload/0.1"


class ApiError(Exception):
    """An answer that is not a success: its HTTP status and the server's `{"error": {code, message}}`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        # An answer that was not the API's (a proxy's page) has its status in the message already.
        super().__init__(message if code == f"http_{status}" else f"{message} (HTTP {status}, {code})")
        self.status, self.code, self.message = status, code, message

    @property
    def token_refused(self) -> bool:
        # A 403 for a full storage quota is about that file, not the token.
        return self.status == 401 or (self.status == 403 and self.code != "storage_quota")


class UnreachableError(Exception):
    """No answer from the server, after the connection retries."""


@dataclass
class Response:
    status: int
    headers: Message
    data: Any
    retried: bool = False  # an earlier attempt may have reached the server (an upload may be stored)


@dataclass(frozen=True)
class FilePart:
    field: str
    name: str
    data: bytes


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def error_from(status: int, body: bytes) -> ApiError:
    """The server's error body, or a short description of a body that is not one (a proxy's page)."""
    try:
        error = json.loads(body)["error"]
        return ApiError(status, str(error["code"]), str(error["message"]))
    except (ValueError, KeyError, TypeError):
        text = " ".join(body[:120].decode("utf-8", "replace").split())
        if text.startswith("<"):  # an HTML page says nothing useful in one line
            text = ""
        reason = http.client.responses.get(status, "error")
        return ApiError(status, f"http_{status}", f"HTTP {status} {reason}" + (f": {text}" if text else ""))


def multipart(fields: dict[str, str], files: Iterable[FilePart]) -> tuple[bytes, str]:
    """A multipart/form-data body and its Content-Type."""
    boundary = uuid.uuid4().hex
    chunks: list[bytes] = []
    for name, value in fields.items():
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    for part in files:
        # Quotes and line breaks would end the header early; the server keeps the name for display only.
        filename = part.name.replace('"', "'").replace("\r", " ").replace("\n", " ")
        kind = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{part.field}"; filename="{filename}"\r\n'
            f"Content-Type: {kind}\r\n\r\n"
        )
        chunks += [head.encode(), part.data, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


class Client:
    """Calls to one imgcap server as the owner of `token`. Thread-safe: every call has its own connection."""

    def __init__(
        self,
        server: str,
        token: str,
        *,
        timeout_s: float = 120.0,
        retries: int = 5,
        connect_retries: int = 3,
        backoff_s: float = 0.5,
        sleep: Callable[[float], None] | None = None,
        on_wait: Callable[[str, float], None] | None = None,
    ) -> None:
        self.server = normalize_server(server)
        self.token = token
        self.timeout_s = timeout_s
        self.retries, self.connect_retries, self.backoff_s = retries, connect_retries, backoff_s
        self.sleep = sleep or time.sleep
        self.on_wait = on_wait  # told (why, seconds) before each wait, for the progress display

    def url(self, path: str, query: dict[str, str] | None = None) -> str:
        # Commas stay as they are: digest lists are long, and %2C would triple every separator.
        qs = "?" + urllib.parse.urlencode(query, safe=",") if query else ""
        return f"{self.server}/api/v1/{path.lstrip('/')}{qs}"

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """The answer to one call (2xx), after the retries; ApiError or UnreachableError otherwise."""
        url = self.url(path, query)
        sent_headers = {
            "Authorization": f"Token {self.token}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
            **(headers or {}),
        }
        busy_tries = connect_tries = 0
        while True:
            request = urllib.request.Request(url, data=body, headers=sent_headers, method=method)
            retried = busy_tries + connect_tries > 0
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                    raw = answer.read()
                    data = json.loads(raw) if raw else None
                    return Response(answer.status, answer.headers, data, retried)
            except urllib.error.HTTPError as error:
                with error:
                    raw = error.read()
                if error.code not in RETRY_STATUSES or busy_tries >= self.retries:
                    raise error_from(error.code, raw) from None
                wait = retry_after_s(error.headers.get("Retry-After"))
                if wait is None:
                    wait = self.backoff_s * 2**busy_tries
                busy_tries += 1
                # "Retry-After: 0" would spend every retry at once.
                self._wait(f"server busy (HTTP {error.code})", min(max(wait, MIN_WAIT_S), MAX_WAIT_S))
            except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
                if connect_tries >= self.connect_retries:
                    raise UnreachableError(f"cannot reach {self.server}: {describe(error)}") from None
                self._wait(f"connection failed ({describe(error)})", self.backoff_s * 2**connect_tries)
                connect_tries += 1
            except ValueError:
                raise ApiError(200, "not_json", f"{url} did not answer with JSON") from None

    def _wait(self, why: str, seconds: float) -> None:
        if self.on_wait is not None:
            self.on_wait(why, seconds)
        self.sleep(seconds)

    def get(self, path: str, query: dict[str, str] | None = None) -> Response:
        return self.request("GET", path, query=query)

    def post_json(self, path: str, payload: object) -> Response:
        body = json.dumps(payload).encode()
        return self.request("POST", path, body=body, headers={"Content-Type": "application/json"})

    def post_files(
        self, path: str, fields: dict[str, str], files: list[FilePart], headers: dict[str, str] | None = None
    ) -> Response:
        body, content_type = multipart(fields, files)
        return self.request(
            "POST", path, body=body, headers={"Content-Type": content_type, **(headers or {})}
        )


def normalize_server(server: str) -> str:
    """`host:8000`, `http://host:8000/` → `http://host:8000` (no trailing slash)."""
    server = server.strip().rstrip("/")
    if "://" not in server:
        server = "http://" + server
    return server


def describe(error: BaseException) -> str:
    reason = getattr(error, "reason", None)
    if isinstance(reason, BaseException):
        error = reason
    text = str(error) or type(error).__name__
    return text if isinstance(error, urllib.error.URLError) else f"{type(error).__name__}: {text}"
