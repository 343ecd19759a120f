"""nginx in front of gunicorn, as docker-compose.yml runs them: the real nginx binary on the very template
compose mounts (deploy/nginx/default.conf.template, filled in as the official image's entrypoint does)
and gunicorn with 2 sync workers serving the app with production settings.

What the proxy is for, proved against real processes: slow clients (trickled headers or bodies) hold
none of gunicorn's workers, while straight at gunicorn the same few hold them all; a body over the
platform's limit is refused on its Content-Length (or cut off while it streams) before gunicorn sees a
byte of it; the app counts the client's address that nginx wrote into X-Forwarded-For, not a forged
one; one address may not hold more than 32 requests open.

The pages and endpoints used need no database: gunicorn is pointed at a port where none listens.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.web.platform_harness import free_port, wait_for

pytestmark = pytest.mark.e2e  # starts nginx and gunicorn

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "deploy" / "nginx" / "default.conf.template"
# Debian puts it in /usr/sbin, which a non-root user's PATH may lack.
NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
GUNICORN_WORKERS = 2  # as few as in the report: a handful of slow clients is enough
SLOW_CLIENTS = 8  # more than gunicorn has workers
PER_ADDRESS_LIMIT = 32  # limit_conn in the template
HOST = "127.0.0.1"
CSRF_COOKIE = "a" * 32  # any well-formed one: the form's token is checked against it once the body is read

# The official image's /etc/nginx/nginx.conf, with this test's folder for its files: the template goes
# where its conf.d/*.conf is included, inside http {}, next to the same http-level settings.
MAIN_CONF = """\
{user}worker_processes 1;
events {{ worker_connections 1024; }}
http {{
    default_type application/octet-stream;
    access_log {dir}/access.log;
    sendfile on;
    keepalive_timeout 65;
    client_body_temp_path {dir}/client_temp;
    proxy_temp_path {dir}/proxy_temp;
    fastcgi_temp_path {dir}/fastcgi_temp;
    uwsgi_temp_path {dir}/uwsgi_temp;
    scgi_temp_path {dir}/scgi_temp;
    include {dir}/default.conf;
}}
"""


def render(template: str, **values: str) -> str:
    """What the image's entrypoint does (envsubst with NGINX_ENVSUBST_FILTER=^IMGCAP_): fill in ${NAME}."""
    for name, value in values.items():
        template = template.replace("${" + name + "}", value)
    assert "${" not in template, "the template names a variable this test does not fill in"
    return template


@dataclass
class Stack:
    proxy_port: int
    app_port: int
    app_log: Path  # gunicorn's access log: one line for every request that reached it


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # started in a session of its own: its workers too
    process.wait()


def gunicorn_env(var_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "IMGCAP_", "DJANGO_"))}
    env.pop("DATABASE_URL", None)
    env.pop("CELERY_BROKER_URL", None)
    (var_dir / "static").mkdir(parents=True)
    env.update(
        DJANGO_SETTINGS_MODULE="imgcap_site.settings.production",
        DJANGO_SECRET_KEY="reverse-proxy-test-key",
        DJANGO_ALLOWED_HOSTS=HOST,
        DJANGO_SECURE_SSL_REDIRECT="false",
        # Required by production settings, never connected to: nothing asked here reads the database.
        DATABASE_URL=f"postgres://nobody@{HOST}:{free_port()}/none",
        IMGCAP_VAR_DIR=str(var_dir),  # its own request counts (a file cache) and broker folder
        IMGCAP_TRUSTED_PROXIES="1",  # as docker-compose.yml sets it for web
        IMGCAP_THROTTLE_SEARCH="1/minute",  # one search per address: shows which address is counted
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    if NGINX is None:
        pytest.skip("no nginx binary (make install adds Debian's nginx package)")
    work = tmp_path_factory.mktemp("reverse-proxy")
    app_port, proxy_port = free_port(), free_port()
    app_log, app_out = work / "gunicorn-access.log", work / "gunicorn.out"
    processes: list[subprocess.Popen] = []
    try:
        with app_out.open("w") as out:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "gunicorn", "imgcap_site.wsgi:application"]
                    + [f"--bind={HOST}:{app_port}", f"--workers={GUNICORN_WORKERS}", "--timeout=60"]
                    + [f"--access-logfile={app_log}"],
                    cwd=REPO,
                    env=gunicorn_env(work / "var"),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        wait_for(lambda: answers(app_port), 60, "gunicorn", app_out)

        nginx_dir = work / "nginx"
        nginx_dir.mkdir()
        (nginx_dir / "default.conf").write_text(
            render(
                TEMPLATE.read_text(),
                IMGCAP_PROXY_LISTEN=f"{HOST}:{proxy_port}",
                IMGCAP_UPSTREAM=f"{HOST}:{app_port}",
            )
        )
        # As root (CI), workers would run as nobody, who cannot enter pytest's private temporary folder.
        user = "user root;\n" if os.geteuid() == 0 else ""
        (nginx_dir / "nginx.conf").write_text(MAIN_CONF.format(user=user, dir=nginx_dir))
        error_log = nginx_dir / "error.log"
        processes.append(
            subprocess.Popen(
                [NGINX, "-p", str(nginx_dir), "-c", str(nginx_dir / "nginx.conf"), "-e", str(error_log)]
                + ["-g", f"daemon off; pid {nginx_dir}/nginx.pid; error_log {error_log} info;"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        wait_for(
            lambda: processes[-1].poll() is not None or answers(proxy_port),
            20,
            "nginx",
            error_log,
        )
        assert processes[-1].poll() is None, error_log.read_text()[-4000:]
        yield Stack(proxy_port, app_port, app_log)
    finally:
        for process in reversed(processes):
            stop(process)


def request(
    port: int,
    path: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    source: str = HOST,
    timeout: float = 5,
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body); status 0 if nothing listens."""
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout, source_address=(source, 0))
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    except ConnectionRefusedError:
        return 0, {}, b""
    finally:
        connection.close()


def answers(port: int, source: str = HOST) -> bool:
    """The sign-in page answers 200 (a server still starting may accept and not answer yet)."""
    try:
        return request(port, "/accounts/login/", source=source, timeout=2)[0] == 200
    except OSError:
        return False


def app_saw(stack: Stack, marker: str) -> bool:
    return stack.app_log.exists() and marker in stack.app_log.read_text()


@contextlib.contextmanager
def slow_clients(
    port: int, *, headers: int = 0, bodies: int = 0, source: str = HOST
) -> Iterator[list[socket.socket]]:
    """Connections that send a byte a second and never finish: `headers` of them in their request
    headers, `bodies` of them in the body of a POST whose headers are complete."""
    sockets: list[socket.socket] = []
    stop_trickling = threading.Event()
    try:
        for i in range(headers + bodies):
            sock = socket.create_connection((HOST, port), timeout=5, source_address=(source, 0))
            sockets.append(sock)
            if i < headers:
                sock.sendall(f"GET /accounts/login/ HTTP/1.1\r\nHost: {HOST}\r\nX-Slow: ".encode())
            else:
                # The sign-in form, with a CSRF cookie: Django reads the body for the form's token.
                sock.sendall(
                    f"POST /accounts/login/ HTTP/1.1\r\nHost: {HOST}\r\nCookie: csrftoken={CSRF_COOKIE}\r\n"
                    "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n\r\n"
                    "username=".encode()
                )

        def trickle() -> None:
            while not stop_trickling.wait(1.0):
                for sock in sockets:
                    with contextlib.suppress(OSError):
                        sock.sendall(b"x")

        thread = threading.Thread(target=trickle, daemon=True)
        thread.start()
        time.sleep(1.5)  # all connected and trickling: straight at gunicorn, each would hold a worker now
        yield sockets
        stop_trickling.set()
        thread.join(5)
    finally:
        stop_trickling.set()
        for sock in sockets:
            sock.close()


def test_slow_clients_hold_no_gunicorn_worker_behind_nginx(stack):
    with slow_clients(stack.proxy_port, headers=SLOW_CLIENTS // 2, bodies=SLOW_CLIENTS // 2):
        started = time.monotonic()
        status, _, page = request(stack.proxy_port, "/accounts/login/", timeout=5)
        elapsed = time.monotonic() - started
    assert status == 200 and b"csrfmiddlewaretoken" in page
    assert elapsed < 2, (
        f"the sign-in page took {elapsed:.1f}s through nginx while slow clients were connected"
    )


def test_the_same_slow_clients_hold_every_worker_of_a_bare_gunicorn(stack):
    # The contrast: without nginx, 8 connections trickling their headers leave a normal request waiting.
    with slow_clients(stack.app_port, headers=SLOW_CLIENTS):
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            request(stack.app_port, "/accounts/login/", timeout=3)
        assert time.monotonic() - started >= 2.9
    # Once they hang up, the workers are free again (and the other tests find gunicorn as it was).
    wait_for(lambda: answers(stack.app_port), 10, "gunicorn to recover")


def announce(port: int, path: str, length: int, marker: str) -> tuple[int, str, bytes, float]:
    """Send only the headers of a POST announcing `length` bytes: (status, content type, body, seconds)."""
    started = time.monotonic()
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(
            f"POST {path}?probe={marker} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/zip\r\n"
            f"Content-Length: {length}\r\nConnection: close\r\n\r\n".encode()
        )
        response = http.client.HTTPResponse(sock, method="POST")
        response.begin()
        return (
            response.status,
            response.getheader("Content-Type", ""),
            response.read(),
            time.monotonic() - started,
        )


def test_a_body_over_the_limit_is_refused_by_nginx_on_its_content_length(stack):
    mib = 1024 * 1024
    cases = [
        ("/api/v1/images/", 64 * mib, "application/json"),  # one image: 50 MiB + 64 KiB
        ("/api/v1/batches/", 600 * mib, "application/json"),  # any other route: 513 MiB
        ("/upload/", 600 * mib, "text/html"),  # a page: nginx's own page
    ]
    markers = []
    for path, length, content_type in cases:
        markers.append(marker := uuid.uuid4().hex)
        status, type_, body, seconds = announce(stack.proxy_port, path, length, marker)
        assert status == 413, (path, status, body[:300])
        assert type_.startswith(content_type), (path, type_)
        assert seconds < 1, f"{path}: the 413 took {seconds:.1f}s"
        if content_type == "application/json":
            assert json.loads(body)["error"]["code"] == "request_too_large"
    # A small request to the same route does reach the app (and its log), so the log would have told.
    allowed = uuid.uuid4().hex
    status, _, body = request(stack.proxy_port, f"/api/v1/images/?probe={allowed}", method="POST", body=b"x")
    assert status in (401, 403), (status, body[:300])  # the app's answer: not signed in
    wait_for(lambda: app_saw(stack, allowed), 5, "gunicorn's access log")
    assert not any(app_saw(stack, marker) for marker in markers), "gunicorn saw a refused request"


def test_gunicorn_alone_answers_an_oversized_upload_before_its_body_is_sent(stack):
    # Without nginx the app's RequestSizeMiddleware is what refuses: only the headers go out, and the
    # 413 comes back at once, so nothing of the body was waited for, read or spooled.
    mib = 1024 * 1024
    for path, length in (("/api/v1/images/", 64 * mib), ("/api/v1/batches/", 600 * mib)):
        marker = uuid.uuid4().hex
        status, type_, body, seconds = announce(stack.app_port, path, length, marker)
        assert status == 413, (path, status, body[:300])
        assert type_.startswith("application/json") and seconds < 1, (path, type_, seconds)
        error = json.loads(body)["error"]
        assert error["code"] == "request_too_large", error
        assert f"over the limit of {'50.1' if path.endswith('images/') else '513.0'} MiB" in error["message"]
        wait_for(lambda marker=marker: app_saw(stack, marker), 5, "gunicorn's access log")  # the app's answer


def test_a_chunked_body_is_cut_off_at_the_limit_while_it_streams(stack):
    # No Content-Length to refuse on: nginx counts while it reads and stops at client_max_body_size.
    marker, chunk, sent = uuid.uuid4().hex, b"\0" * (1024 * 1024), 0
    with socket.create_connection((HOST, stack.proxy_port), timeout=5) as sock:
        sock.sendall(
            f"POST /api/v1/images/?probe={marker} HTTP/1.1\r\nHost: {HOST}\r\n"
            "Content-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".encode()
        )
        while sent < 80 * len(chunk) and not select.select([sock], [], [], 0)[0]:
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
        response = http.client.HTTPResponse(sock, method="POST")
        response.begin()
        body = response.read()
    assert response.status == 413, body[:300]
    assert json.loads(body)["error"]["code"] == "request_too_large"
    # The limit plus what the loopback's socket buffers hold before the 413 shows (a few MiB, more when
    # the machine is busy); a proxy that read it all would have taken the 80 MiB.
    assert sent <= 60 * len(chunk), f"{sent} bytes sent before the 413; the limit is 50 MiB + 64 KiB"
    assert not app_saw(stack, marker)


def test_the_app_counts_the_address_nginx_saw_not_a_forged_one(stack):
    # One search a minute per address (IMGCAP_THROTTLE_SEARCH); an empty query is a quick 400 once counted.
    alice, bob = "127.0.0.2", "127.0.0.3"  # both loopback, both distinct from the proxy's own 127.0.0.1
    search = "/api/v1/search/"
    status, _, body = request(stack.proxy_port, search, source=alice, headers={"X-Forwarded-For": bob})
    assert status == 400, body[:300]  # counted for alice: the entry nginx appended, not bob's forgery
    status, _, body = request(stack.proxy_port, search, source=bob)
    assert status == 400, body[:300]  # so bob has his own search left (and the proxy's address was not used)
    status, headers, body = request(
        stack.proxy_port, search, source=alice, headers={"X-Forwarded-For": "10.9.8.7"}
    )
    assert status == 429 and json.loads(body)["error"]["code"] == "throttled", body[:300]
    assert "retry-after" in headers
    # Why only the proxy may reach gunicorn: sent to it directly, a forged X-Forwarded-For is believed.
    status, _, body = request(stack.app_port, search, source=alice, headers={"X-Forwarded-For": "127.0.0.9"})
    assert status == 400, body[:300]


def test_one_address_may_hold_at_most_32_requests_open(stack):
    carol = "127.0.0.4"
    with slow_clients(stack.proxy_port, bodies=PER_ADDRESS_LIMIT, source=carol):
        status, headers, body = request(stack.proxy_port, "/api/v1/health/", source=carol)
        other_status, _, _ = request(stack.proxy_port, "/accounts/login/", source="127.0.0.5")
    assert status == 429, body[:300]
    assert json.loads(body)["error"]["code"] == "too_many_connections"
    assert headers.get("retry-after") == "5"
    assert other_status == 200  # another address is not affected
    # And carol may come back once nginx has seen her requests hang up.
    wait_for(lambda: answers(stack.proxy_port, source=carol), 5, "the count to drop")
