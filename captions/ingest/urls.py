"""Fetch an image (or archive) a user gave by URL, or POST a webhook delivery to a user's URL, without
letting the URL reach inside our network (SSRF).

Every hop is checked the same way: http or https only, no user:password@, the host resolved once and
refused if any of its addresses is not public; then the connection goes to that checked address
itself (so a DNS answer that changes between check and use cannot redirect us: "DNS rebinding"),
while the Host header, TLS SNI and certificate check use the host name. Redirects are followed by
hand, each one checked again (a POST follows none). One deadline covers the whole fetch, DNS and
redirects included.

Proxy environment variables are ignored on purpose: a proxy would make the address checks moot.
"""

from __future__ import annotations

import http.client
import ipaddress
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import quote, unquote, urljoin, urlsplit

from .errors import RejectedInput, human_bytes, human_sizes

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud instance-metadata endpoints hand out credentials: refused even with allow_private=True.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean...
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
    )
)
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog", "metadata", "instance-data"})
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_REDIRECTS = {301, 302, 303, 307, 308}
_CHUNK = 1 << 16
_USER_AGENT = "imgcap/0.1 (+image captioning; fetches one file per request)"
_UNSAFE_NAME_CHARS = re.compile(r"[\x00-\x1f\x7f/\\]")
_T = TypeVar("_T")


@dataclass(frozen=True)
class FetchedFile:
    """A downloaded file: `name` from the URL path ("download" if it has none), the bytes, the
    media type the server claimed (lower case, no parameters; not trusted) and the URL after redirects."""

    name: str
    data: bytes
    content_type: str
    final_url: str


def is_metadata_address(ip: str | IPAddress) -> bool:
    """True for cloud metadata endpoints, also when written as IPv4-mapped/NAT64/6to4 IPv6."""
    address = _as_ip(ip)
    embedded = _embedded_ipv4(address)
    return address in METADATA_ADDRESSES or (embedded is not None and embedded in METADATA_ADDRESSES)


def is_forbidden_address(ip: str | IPAddress, *, allow_private: bool = False) -> bool:
    """Whether a fetch must not connect to `ip`.

    Forbidden: loopback, private, link-local, multicast, reserved, unspecified, shared (100.64/10),
    anything else not globally routable, IPv6 forms embedding such an IPv4 address (IPv4-mapped,
    NAT64, 6to4), Teredo tunnels, and cloud metadata addresses. `allow_private=True` (tests, closed
    networks) allows all of them except the metadata addresses.
    """
    address = _as_ip(ip)
    if is_metadata_address(address):
        return True
    if allow_private:
        return False
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        return is_forbidden_address(embedded)
    if isinstance(address, ipaddress.IPv6Address) and address.teredo is not None:
        return True
    return (
        not address.is_global
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or address in _SHARED
    )


def fetch_url(
    url: str,
    *,
    timeout: float,
    max_bytes: int,
    max_redirects: int = 3,
    allow_private: bool = False,
) -> FetchedFile:
    """Download `url` (http/https) into memory, or raise RejectedInput (status 400; 413 when too large).

    Codes: url_invalid, url_scheme, url_userinfo, url_forbidden_host, url_unreachable, url_tls,
    url_timeout (the whole fetch took longer than `timeout` seconds), url_too_large (Content-Length
    or the bytes read exceed `max_bytes`), url_too_many_redirects, url_error (a non-2xx answer or a
    broken response). Metadata addresses stay forbidden even with `allow_private=True`.
    """
    deadline = time.monotonic() + timeout
    current = url
    for _hop in range(max_redirects + 1):
        target = _Target.parse(current)
        addresses = _resolve_checked(target, allow_private=allow_private, deadline=deadline, timeout=timeout)
        response = _get(target, addresses, deadline=deadline, timeout=timeout, max_bytes=max_bytes)
        if response.location is not None:
            current = urljoin(current, response.location)
            continue
        return FetchedFile(
            name=_name_from_url(current) or _name_from_url(url) or "download",
            data=response.body,
            content_type=response.content_type,
            final_url=current,
        )
    raise RejectedInput(
        "url_too_many_redirects", f"{url}: more than {max_redirects} redirects; the limit is {max_redirects}"
    )


_LOOKS_LIKE_URL = re.compile(r"[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)


def split_urls(text: str) -> list[str]:
    """The URLs of a text box: one a line. A line is split on commas and spaces only when every piece
    looks like a URL ("https://a/1.jpg, https://a/2.jpg"); any other line stays whole, so "not a url"
    is one refusal, not three (upload.js splits the same way)."""
    urls: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        pieces = [p for p in re.split(r"[\s,]+", line) if p]
        if len(pieces) > 1 and all(_LOOKS_LIKE_URL.fullmatch(p) for p in pieces):
            urls.extend(pieces)
        elif line:
            urls.append(line)
    return urls


def check_url(url: str, *, allow_private: bool = False) -> str:
    """What can be known of `url` without the network, checked as fetch_url checks it (scheme, user
    info, metadata host names, an address written in the URL): RejectedInput at once rather than when
    a worker gets to it. Host names are resolved and checked again at fetch time. Returns the URL."""
    target = _Target.parse(url)
    try:
        address = ipaddress.ip_address(target.host)
    except ValueError:
        return url  # a host name
    if is_forbidden_address(address, allow_private=allow_private):
        what = "a cloud metadata address" if is_metadata_address(address) else "a non-public address"
        raise RejectedInput(
            "url_forbidden_host",
            f"{url}: {target.host} is {what}; only public internet addresses can be fetched",
        )
    return url


@dataclass(frozen=True)
class PostAnswer:
    """What a receiver answered a POST: its status and reason, and the start of its body (at most the
    cap given to post_json; the rest is never read)."""

    status: int
    reason: str
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def post_json(
    url: str,
    body: bytes,
    *,
    headers: Mapping[str, str],
    timeout: float,
    allow_private: bool = False,
    max_answer_bytes: int = 1024,
) -> PostAnswer:
    """POST `body` (JSON) to `url` with the same guards as fetch_url: http/https only, the host
    resolved once and refused unless public, the connection made to that checked address, one
    deadline for everything. A redirect is not followed (it is the answer, like any other status);
    at most `max_answer_bytes` of the answer's body are read.

    Returns the answer, whatever its status; raises RejectedInput when there is none (url_invalid,
    url_scheme, url_userinfo, url_forbidden_host, url_unreachable, url_tls, url_timeout, url_error).
    """
    deadline = time.monotonic() + timeout
    target = _Target.parse(url)
    addresses = _resolve_checked(target, allow_private=allow_private, deadline=deadline, timeout=timeout)

    def talk(conn: http.client.HTTPConnection) -> PostAnswer:
        return _post(conn, target, body, headers, deadline=deadline, timeout=timeout, cap=max_answer_bytes)

    return _pinned(target, addresses, deadline=deadline, timeout=timeout, talk=talk)


@dataclass(frozen=True)
class _Target:
    url: str
    scheme: str
    host: str  # IDNA (ASCII) form, no brackets
    port: int
    path: str  # path and query, ready for the request line

    @classmethod
    def parse(cls, url: str) -> _Target:
        if any(ch.isspace() for ch in url.strip()):
            # Words pasted into the URL box: say so, not that they lack a scheme.
            message = f"{url}: not a URL (a web address has no spaces; give one http(s):// URL a line)"
            raise RejectedInput("url_invalid", message)
        try:
            parts = urlsplit(url.strip())
            port = parts.port
            host = parts.hostname
        except ValueError as exc:
            raise RejectedInput("url_invalid", f"{url}: not a valid URL ({exc})") from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            got = f"a {scheme}: URL" if scheme else "a URL without a scheme"
            raise RejectedInput("url_scheme", f"{url}: only http and https URLs can be fetched, not {got}")
        if parts.username is not None or parts.password is not None or "@" in parts.netloc:
            raise RejectedInput(
                "url_userinfo", f"{url}: URLs with a user name or password (user:pass@host) are not accepted"
            )
        if not host:
            raise RejectedInput("url_invalid", f"{url}: the URL has no host")
        try:
            host = host.rstrip(".").encode("idna").decode("ascii").lower()
        except UnicodeError:
            raise RejectedInput("url_invalid", f"{url}: the host name is not valid") from None
        if host in METADATA_HOSTS:
            raise RejectedInput("url_forbidden_host", f"{url}: {host} is a cloud metadata service")
        path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
        if parts.query:
            path += "?" + quote(parts.query, safe="/%:@!$&'()*+,;=-._~?")
        return cls(url, scheme, host, port or (443 if scheme == "https" else 80), path)


@dataclass(frozen=True)
class _Response:
    location: str | None
    body: bytes
    content_type: str


def _resolve_checked(target: _Target, *, allow_private: bool, deadline: float, timeout: float) -> list[str]:
    """Every address the host resolves to, refused as a whole if any one is forbidden."""
    infos = _getaddrinfo_before(target, deadline, timeout)
    addresses = list(dict.fromkeys(str(_as_ip(info[4][0])) for info in infos))
    forbidden = [a for a in addresses if is_forbidden_address(a, allow_private=allow_private)]
    if forbidden:
        metadata = any(map(is_metadata_address, forbidden))
        what = "a cloud metadata address" if metadata else "a non-public address"
        raise RejectedInput(
            "url_forbidden_host",
            f"{target.url}: {target.host} resolves to {what} ({', '.join(forbidden)}); "
            "only public internet addresses can be fetched",
        )
    if not addresses:
        raise RejectedInput("url_unreachable", f"{target.url}: {target.host} has no address")
    return addresses


def _getaddrinfo_before(target: _Target, deadline: float, timeout: float) -> list[tuple]:
    """getaddrinfo has no timeout of its own: run it in a daemon thread, stop waiting at the deadline."""
    outcome: dict[str, object] = {}

    def resolve() -> None:
        try:
            outcome["infos"] = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=resolve, name="imgcap-resolve", daemon=True)
    worker.start()
    worker.join(max(0.0, deadline - time.monotonic()))
    if worker.is_alive():
        raise _timeout(target, timeout)
    if "error" in outcome:
        raise RejectedInput(
            "url_unreachable", f"{target.url}: the host {target.host} cannot be resolved ({outcome['error']})"
        )
    return outcome["infos"]  # type: ignore[return-value]


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Talks to `ip` while naming `host` in the Host header."""

    def __init__(self, host: str, port: int, *, ip: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.pinned_ip = ip

    def connect(self) -> None:
        self.sock = socket.create_connection((self.pinned_ip, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """Talks TLS to `ip`, with SNI and the certificate checked against `host`."""

    def __init__(self, host: str, port: int, *, ip: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self.pinned_ip = ip

    def connect(self) -> None:
        sock = socket.create_connection((self.pinned_ip, self.port), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def _get(
    target: _Target, addresses: list[str], *, deadline: float, timeout: float, max_bytes: int
) -> _Response:
    return _pinned(
        target,
        addresses,
        deadline=deadline,
        timeout=timeout,
        talk=lambda conn: _exchange(conn, target, deadline=deadline, timeout=timeout, max_bytes=max_bytes),
    )


def _pinned(
    target: _Target,
    addresses: list[str],
    *,
    deadline: float,
    timeout: float,
    talk: Callable[[http.client.HTTPConnection], _T],
) -> _T:
    """Connect to the first of the checked `addresses` that answers (naming the host, for TLS too),
    then `talk` over that connection, all before the deadline (a watchdog shuts a dripping socket)."""
    last_error: OSError | None = None
    for ip in addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timeout(target, timeout)
        cls = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
        conn = cls(target.host, target.port, ip=ip, timeout=remaining)
        try:
            with _watchdog(conn, remaining):
                try:
                    conn.connect()
                except ssl.SSLError as exc:
                    raise RejectedInput("url_tls", f"{target.url}: TLS failed ({_reason(exc)})") from None
                except OSError as exc:
                    if time.monotonic() >= deadline:
                        raise _timeout(target, timeout) from None
                    last_error = exc
                    continue  # try the host's next address
                return talk(conn)
        finally:
            conn.close()
    raise RejectedInput("url_unreachable", f"{target.url}: cannot connect to {target.host} ({last_error})")


def _exchange(
    conn: http.client.HTTPConnection, target: _Target, *, deadline: float, timeout: float, max_bytes: int
) -> _Response:
    try:
        conn.request(
            "GET",
            target.path,
            headers={
                "User-Agent": _USER_AGENT,
                "Accept": "image/*, application/zip;q=0.9, */*;q=0.1",
                "Accept-Encoding": "identity",  # so the bytes we count are the bytes we keep
                "Connection": "close",
            },
        )
        response = conn.getresponse()
        if response.status in _REDIRECTS:
            location = response.getheader("Location")
            if not location:
                raise RejectedInput(
                    "url_error", f"{target.url}: HTTP {response.status} redirect without a Location"
                )
            return _Response(location=location.strip(), body=b"", content_type="")
        if not 200 <= response.status < 300:
            answer = f"HTTP {response.status} {response.reason}".rstrip()
            raise RejectedInput("url_error", f"{target.url}: the server answered {answer}")
        declared = response.getheader("Content-Length")
        if declared and declared.strip().isdigit() and int(declared) > max_bytes:
            raise _too_large(target, max_bytes, declared=int(declared))
        body = bytearray()
        while True:
            if conn.sock is not None:
                conn.sock.settimeout(max(0.001, deadline - time.monotonic()))
            chunk = response.read1(_CHUNK)
            if time.monotonic() >= deadline:
                raise _timeout(target, timeout)
            if not chunk:
                break
            body += chunk
            if len(body) > max_bytes:
                raise _too_large(target, max_bytes)
        if response.length:  # Content-Length promised more than arrived
            raise RejectedInput(
                "url_error", f"{target.url}: the connection closed before the whole file arrived"
            )
        content_type = (response.getheader("Content-Type") or "").split(";", 1)[0].strip().lower()
        return _Response(location=None, body=bytes(body), content_type=content_type)
    except RejectedInput:
        raise
    except (OSError, http.client.HTTPException) as exc:
        raise _network_failure(target, exc, "download", deadline=deadline, timeout=timeout) from None


def _post(
    conn: http.client.HTTPConnection,
    target: _Target,
    body: bytes,
    headers: Mapping[str, str],
    *,
    deadline: float,
    timeout: float,
    cap: int,
) -> PostAnswer:
    try:
        conn.request(
            "POST",
            target.path,
            body=body,
            headers={
                "User-Agent": _USER_AGENT,
                "Content-Type": "application/json",
                "Accept-Encoding": "identity",
                "Connection": "close",
                **headers,
            },
        )
        response = conn.getresponse()
    except (OSError, http.client.HTTPException) as exc:
        raise _network_failure(target, exc, "request", deadline=deadline, timeout=timeout) from None
    # The status is the answer; the body is only a hint for people (a receiver's error message), so
    # a slow or broken one is cut short rather than counted against the delivery.
    start = bytearray()
    with suppress(OSError, http.client.HTTPException):
        while len(start) < cap and time.monotonic() < deadline:
            if conn.sock is not None:
                conn.sock.settimeout(max(0.001, deadline - time.monotonic()))
            chunk = response.read1(cap - len(start))
            if not chunk:
                break
            start += chunk
    return PostAnswer(status=response.status, reason=response.reason or "", body=bytes(start))


@contextmanager
def _watchdog(conn: http.client.HTTPConnection, seconds: float) -> Iterator[None]:
    """Per-call socket timeouts cannot stop a server that drips one byte at a time; shutting the
    socket down at the deadline does."""

    def expire() -> None:
        sock = conn.sock
        if sock is not None:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _name_from_url(url: str) -> str:
    try:
        path = urlsplit(url).path
    except ValueError:
        return ""
    base = _UNSAFE_NAME_CHARS.sub("", unquote(path.rstrip("/").rsplit("/", 1)[-1])).strip()
    return base[:200]


def _as_ip(ip: str | IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return ip
    return ipaddress.ip_address(ip.split("%", 1)[0])  # drop an IPv6 zone id ("fe80::1%eth0")


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _network_failure(
    target: _Target, exc: BaseException, what: str, *, deadline: float, timeout: float
) -> RejectedInput:
    """What a GET or POST that failed on the network is refused as: TLS, the deadline, or the error."""
    if isinstance(exc, ssl.SSLError):
        return RejectedInput("url_tls", f"{target.url}: TLS failed ({_reason(exc)})")
    if time.monotonic() >= deadline or isinstance(exc, TimeoutError):
        return _timeout(target, timeout)
    return RejectedInput("url_error", f"{target.url}: the {what} failed ({_reason(exc)})")


def _timeout(target: _Target, timeout: float) -> RejectedInput:
    return RejectedInput("url_timeout", f"{target.url}: no complete answer within {timeout:g} seconds")


def _too_large(target: _Target, limit: int, *, declared: int | None = None) -> RejectedInput:
    if declared is None:  # found while reading: only the limit is known
        message = f"{target.url}: the file is larger than the limit of {human_bytes(limit)}"
    else:
        announced, allowed = human_sizes(declared, limit)
        message = f"{target.url}: the server announced {announced}, over the limit of {allowed}"
    return RejectedInput("url_too_large", message, status=413)


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", "") or exc) or type(exc).__name__
