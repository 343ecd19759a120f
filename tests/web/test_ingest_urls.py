"""fetch_url against a real local HTTP(S) server, and the SSRF address policy on real resolutions.

There is no internet here, so "a public host that redirects to a private one" is tested with
allow_private=True (the local server counts as allowed) redirecting to cloud metadata addresses, which
stay forbidden even then; the default policy is tested on URLs that really resolve to private addresses.
"""

from __future__ import annotations

import http.server
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import unquote

import pytest

from captions.ingest import RejectedInput, fetch_url, inspect_image, is_forbidden_address, is_metadata_address

FLICKR_IMAGES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "flickr8k" / "images"
MIB = 2**20


def photo() -> bytes:
    if not FLICKR_IMAGES.is_dir():
        pytest.skip(f"real photos not found at {FLICKR_IMAGES}")
    return sorted(FLICKR_IMAGES.glob("*.jpg"))[0].read_bytes()


class Handler(http.server.BaseHTTPRequestHandler):
    """Routes for each behaviour under test; every request path is logged on the server."""

    protocol_version = "HTTP/1.1"
    image = b""

    def log_message(self, format, *args):  # noqa: A002 -- the base class's signature
        pass

    def do_GET(self):  # noqa: N802 -- http.server's naming
        self.server.paths.append(self.path)
        self.server.hosts.append(self.headers.get("Host"))
        route, _, arg = self.path.partition("?")
        arg = unquote(arg)
        port = self.server.server_address[1]
        try:
            if route.endswith(".jpg") or route == "/":
                self.send_body(self.image, "image/jpeg; charset=binary")
            elif route == "/echo-host":
                self.send_body(self.headers.get("Host", "").encode(), "text/plain")
            elif route == "/slow":
                time.sleep(float(arg or 3))
                self.send_body(self.image, "image/jpeg")
            elif route == "/drip":  # one byte every 0.1 s: each read is quick, the whole is not
                self.send_response(200)
                self.send_header("Content-Length", "100")
                self.end_headers()
                for _ in range(100):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.1)
            elif route == "/drip-headers":  # the status line, then headers one byte at a time
                self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                for _ in range(100):
                    self.wfile.write(b"X")
                    self.wfile.flush()
                    time.sleep(0.1)
            elif route == "/huge-declared":
                self.send_response(200)
                self.send_header("Content-Length", str(50 * MIB))
                self.end_headers()
                self.wfile.write(bytes(MIB))
            elif route == "/huge-streamed":  # no Content-Length: only counting can stop it
                self.send_response(200)
                self.send_header("Connection", "close")
                self.end_headers()
                for _ in range(50):
                    self.wfile.write(bytes(MIB))
            elif route == "/short":
                self.send_response(200)
                self.send_header("Content-Length", "1000")
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(b"only ten b")
            elif route == "/missing":
                self.send_error(404, "Not Found")
            elif route == "/redirect":  # /redirect?<Location>
                self.send_response(302)
                self.send_header("Location", arg.replace("PORT", str(port)))
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif route == "/redirect-without-location":
                self.send_response(302)
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif route.startswith("/chain/"):  # /chain/N redirects N times, then serves the photo
                left = int(route.rsplit("/", 1)[1])
                self.send_response(307)
                self.send_header("Location", f"/chain/{left - 1}" if left > 1 else "/photos/end.jpg")
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self.send_error(500, "unknown route")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, as it should

    def send_body(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def start_server(tls: ssl.SSLContext | None = None):
    Handler.image = photo()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.paths, server.hosts = [], []
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return server


@pytest.fixture(scope="module")
def server():
    server = start_server()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def base(server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def fetch(url: str, **kwargs):
    return fetch_url(url, **{"timeout": 5.0, "max_bytes": 10 * MIB, "allow_private": True, **kwargs})


def refused(url: str, **kwargs) -> RejectedInput:
    with pytest.raises(RejectedInput) as info:
        fetch(url, **kwargs)
    return info.value


# --- happy paths (the local server stands in for a public host: allow_private=True) ---------------


def test_fetches_a_real_photo(base):
    got = fetch(f"{base}/photos/cat%20one.jpg?size=large")
    assert got.data == photo()
    assert (got.name, got.content_type) == ("cat one.jpg", "image/jpeg")
    assert got.final_url == f"{base}/photos/cat%20one.jpg?size=large"
    assert inspect_image(got.data, max_bytes=10 * MIB, max_pixels=40_000_000, name=got.name).format == "JPEG"


def test_name_comes_from_the_final_url_else_the_first_else_download(base):
    assert fetch(f"{base}/redirect?/photos/final.jpg").name == "final.jpg"
    assert fetch(f"{base}/redirect?/").name == "redirect"
    assert fetch(f"{base}/").name == "download"


def test_connects_to_the_checked_address_but_names_the_host(server):
    port = server.server_address[1]
    got = fetch(f"http://localhost:{port}/echo-host")
    assert got.data == f"localhost:{port}".encode()


def test_follows_absolute_and_relative_redirects(base):
    absolute = fetch(f"{base}/redirect?http://127.0.0.1:PORT/photos/a.jpg")
    assert (absolute.name, absolute.final_url) == ("a.jpg", f"{base}/photos/a.jpg")
    relative = fetch(f"{base}/redirect?photos/b.jpg")
    assert (relative.name, relative.final_url) == ("b.jpg", f"{base}/photos/b.jpg")


def test_redirect_limit(base):
    assert fetch(f"{base}/chain/3", max_redirects=3).name == "end.jpg"
    error = refused(f"{base}/chain/4", max_redirects=3)
    assert (error.code, error.status) == ("url_too_many_redirects", 400)


# --- refused by the server's behaviour -------------------------------------------------------------


def test_slow_server_times_out(base):
    started = time.monotonic()
    error = refused(f"{base}/slow?3", timeout=0.5)
    assert (error.code, error.status) == ("url_timeout", 400)
    assert time.monotonic() - started < 2


def test_dripping_server_hits_the_total_deadline(base):
    # Every byte arrives within 0.1 s, so only a deadline for the whole fetch can stop this.
    started = time.monotonic()
    error = refused(f"{base}/drip", timeout=0.6)
    assert error.code == "url_timeout"
    assert time.monotonic() - started < 2


def test_dripping_headers_hit_the_total_deadline(base):
    started = time.monotonic()
    error = refused(f"{base}/drip-headers", timeout=0.6)
    assert error.code == "url_timeout"
    assert time.monotonic() - started < 2


def test_declared_size_over_the_limit_is_refused_up_front(base):
    error = refused(f"{base}/huge-declared", max_bytes=MIB)
    assert (error.code, error.status) == ("url_too_large", 413)
    assert "announced 50.0 MiB" in error.message


def test_declared_size_just_over_the_limit_shows_exact_bytes(base):
    error = refused(f"{base}/huge-declared", max_bytes=50 * MIB - 1)
    assert error.message.endswith(
        ": the server announced 52,428,800 bytes, over the limit of 52,428,799 bytes (50.0 MiB)"
    )


def test_streamed_size_over_the_limit_stops_reading(base):
    error = refused(f"{base}/huge-streamed", max_bytes=MIB)
    assert (error.code, error.status) == ("url_too_large", 413)


def test_http_errors_and_broken_answers(base):
    error = refused(f"{base}/missing")
    assert (error.code, error.status) == ("url_error", 400)
    assert "404" in error.message
    assert refused(f"{base}/short").code == "url_error"
    assert refused(f"{base}/redirect-without-location").code == "url_error"


def test_nothing_listening():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again when the block ends: nothing listens there
    assert refused(f"http://127.0.0.1:{port}/a.jpg").code == "url_unreachable"


# --- refused by the address policy --------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/photos/never.jpg",  # a real server is there: it must not be asked
        "http://localhost:{port}/photos/never.jpg",
        "http://[::1]/",
        "http://10.0.0.1/",
        "http://192.168.1.1/",
        "http://172.16.0.1/",
        "http://100.64.0.1/",
        "http://169.254.169.254/latest/meta-data",
        "http://0.0.0.0/",
        "http://[::]/",
        "http://2130706433:{port}/photos/never.jpg",  # 127.0.0.1 written as one number
        "http://0x7f.1:{port}/photos/never.jpg",
        "http://[::ffff:127.0.0.1]/",
        "http://[fe80::1]/",
        "http://224.0.0.1/",
        "http://LOCALHOST./",
    ],
)
def test_default_policy_refuses_private_addresses(server, url):
    port = server.server_address[1]
    before = len(server.paths)
    with pytest.raises(RejectedInput) as info:
        fetch_url(url.format(port=port), timeout=2, max_bytes=MIB)
    assert (info.value.code, info.value.status) == ("url_forbidden_host", 400)
    assert "public" in info.value.message
    assert len(server.paths) == before  # refused before connecting


def test_metadata_host_name_is_refused_without_asking_dns():
    for allow_private in (False, True):
        error = refused("http://metadata.google.internal/computeMetadata/v1/", allow_private=allow_private)
        assert error.code == "url_forbidden_host"
        assert "metadata" in error.message


@pytest.mark.parametrize(
    "location",
    [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://[fd00:ec2::254]/latest/meta-data",
        "http://[::ffff:169.254.169.254]/latest/meta-data",
        "http://metadata.google.internal/computeMetadata/v1/",
    ],
)
def test_redirect_from_an_allowed_host_to_metadata_is_refused(base, location):
    error = refused(f"{base}/redirect?{location}")  # allow_private=True: only the redirect target is bad
    assert (error.code, error.status) == ("url_forbidden_host", 400)
    assert "metadata" in error.message


def test_redirect_to_another_scheme_or_userinfo_is_refused(base):
    assert refused(f"{base}/redirect?file:///etc/passwd").code == "url_scheme"
    assert refused(f"{base}/redirect?ftp://127.0.0.1/a.jpg").code == "url_scheme"
    assert refused(f"{base}/redirect?http://user:pw@127.0.0.1:PORT/photos/a.jpg").code == "url_userinfo"


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("ftp://example.com/a.jpg", "url_scheme"),
        ("file:///etc/passwd", "url_scheme"),
        ("gopher://example.com/", "url_scheme"),
        ("javascript:alert(1)", "url_scheme"),
        ("data:image/png;base64,iVBORw0KGgo=", "url_scheme"),
        ("example.com/a.jpg", "url_scheme"),
        ("http://user:secret@example.com/a.jpg", "url_userinfo"),
        ("http://user@example.com/a.jpg", "url_userinfo"),
        ("http:///a.jpg", "url_invalid"),
        ("http://[::1/", "url_invalid"),
        ("http://example.com:99999/", "url_invalid"),
    ],
)
def test_malformed_or_foreign_urls(url, code):
    error = refused(url, allow_private=False)
    assert (error.code, error.status) == (code, 400)


@pytest.mark.parametrize(
    "ip",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.31.255.255",
        "192.168.0.1",
        "100.64.0.1",
        "100.127.255.254",
        "169.254.0.1",
        "0.0.0.0",
        "224.0.0.251",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fe80::1%eth0",
        "fc00::1",
        "ff02::1",
        "::ffff:10.0.0.1",
        "::ffff:127.0.0.1",
        "64:ff9b::a00:1",  # NAT64 for 10.0.0.1
        "2002:c0a8:101::1",  # 6to4 for 192.168.1.1
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    ],
)
def test_forbidden_addresses(ip):
    assert is_forbidden_address(ip)
    assert not is_metadata_address(ip)
    assert not is_forbidden_address(ip, allow_private=True)


@pytest.mark.parametrize(
    "ip", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"]
)
def test_public_addresses(ip):
    assert not is_forbidden_address(ip)


@pytest.mark.parametrize(
    "ip", ["169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200", "::ffff:169.254.169.254"]
)
def test_metadata_addresses_stay_forbidden_with_allow_private(ip):
    assert is_metadata_address(ip)
    assert is_forbidden_address(ip, allow_private=True)


# --- HTTPS: the certificate is checked against the host name while we connect to its address ---------


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    names: list[str | None] = []
    context.sni_callback = lambda sock, name, ctx: names.append(name)
    server = start_server(tls=context)
    server.sni_names, server.cert = names, cert
    yield server
    server.shutdown()
    server.server_close()


def test_https_with_a_trusted_certificate_sends_sni_for_the_host(tls_server, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_server.cert))  # trust our test CA, as a system would
    port = tls_server.server_address[1]
    got = fetch(f"https://localhost:{port}/photos/secure.jpg")
    assert got.data == photo()
    assert tls_server.sni_names[-1] == "localhost"
    assert tls_server.hosts[-1] == f"localhost:{port}"


def test_https_certificate_for_another_name_is_refused(tls_server, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_server.cert))
    port = tls_server.server_address[1]
    error = refused(f"https://127.0.0.1:{port}/photos/secure.jpg")  # the certificate names only localhost
    assert (error.code, error.status) == ("url_tls", 400)


def test_https_untrusted_certificate_is_refused(tls_server, monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    port = tls_server.server_address[1]
    error = refused(f"https://localhost:{port}/photos/secure.jpg")
    assert error.code == "url_tls"
    assert "certificate" in error.message.lower()
