"""docker-compose.yml and the Dockerfile refer only to things that exist in this project.

Docker cannot run here, so these read the files: every service can start (image or build), every
name it depends on or mounts is declared, every command it runs names a real module, Django
command and queue, and the Dockerfile copies files that are there. Only the nginx proxy is published,
and its config agrees with the app's limits and gunicorn's timeout (tests/web/test_reverse_proxy.py
runs that config in front of a real gunicorn).
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
NGINX_TEMPLATE = REPO / "deploy" / "nginx" / "default.conf.template"
QUEUES = {"caption", "default", "fetch"}  # the contract's queue names
# What imgcap_site/settings/production.py refuses to start without, or needs to reach the services.
REQUIRED_ENV = ("DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS", "DATABASE_URL", "CELERY_BROKER_URL")
APP_SERVICES = ("migrate", "web", "worker", "fetcher", "beat", "gpu-worker")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict]:
    return compose["services"]


def argv(service: dict) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def module_file(dotted: str) -> Path:
    """imgcap_site.settings.production -> imgcap_site/settings/production.py (or a package's __init__)."""
    path = REPO / Path(*dotted.split("."))
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else path / "__init__.py"


def django_command_exists(name: str) -> bool:
    """A command of Django itself, of an installed contrib/third-party app we use, or of captions."""
    roots = [REPO / "captions"]
    for package in ("django", "rest_framework"):
        spec = importlib.util.find_spec(package)
        assert spec is not None and spec.origin, f"{package} is not installed"
        roots.append(Path(spec.origin).parent)
    return any(any(root.glob(f"**/management/commands/{name}.py")) for root in roots)


def manage_commands(words: list[str]) -> list[str]:
    return [words[i + 1] for i, word in enumerate(words[:-1]) if word.endswith("manage.py")]


# --- services -------------------------------------------------------------------------------------


def test_the_expected_services_exist(services):
    assert {"postgres", "redis", *APP_SERVICES} <= set(services)


def test_every_service_has_an_image_or_a_build(services):
    for name, service in services.items():
        assert service.get("image") or service.get("build"), f"{name} has neither image nor build"
        build = service.get("build")
        if build is not None:
            context = build if isinstance(build, str) else build.get("context", ".")
            assert (REPO / context / "Dockerfile").is_file(), (
                f"{name} builds from a folder without a Dockerfile"
            )


def test_depends_on_names_real_services_with_valid_conditions(services):
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        entries = {d: {} for d in depends} if isinstance(depends, list) else depends
        for other, options in entries.items():
            assert other in services, f"{name} depends on unknown service {other}"
            condition = (options or {}).get("condition", "service_started")
            assert condition in {"service_started", "service_healthy", "service_completed_successfully"}
            if condition == "service_healthy":
                assert "healthcheck" in services[other], (
                    f"{name} waits for {other} to be healthy; it has no check"
                )


def test_postgres_and_redis(services):
    assert services["postgres"]["image"].startswith("pgvector/pgvector:pg16")  # Postgres with pgvector
    assert services["redis"]["image"].startswith("redis:7")
    assert any(v.endswith(":/var/lib/postgresql/data") for v in services["postgres"]["volumes"])


def test_named_volumes_are_declared_and_media_is_shared(compose, services):
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
            if not source.startswith((".", "/", "~")):  # a named volume, not a bind mount
                assert source in declared, f"{name} mounts undeclared volume {source}"
    assert {"postgres-data", "media"} <= declared
    for name in ("web", "worker", "gpu-worker"):
        service = services[name]
        media_root = service["environment"]["IMGCAP_MEDIA_ROOT"]
        assert f"media:{media_root}" in service["volumes"], f"{name} does not see the shared media volume"


def test_migrate_runs_before_the_app(services):
    assert manage_commands(argv(services["migrate"])) == ["migrate"]
    for name in ("web", "worker", "beat", "gpu-worker"):
        condition = services[name]["depends_on"]["migrate"]["condition"]
        assert condition == "service_completed_successfully", name


def test_gpu_worker_is_behind_the_gpu_profile_with_a_device_reservation(services):
    gpu = services["gpu-worker"]
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        d["driver"] == "nvidia" and "gpu" in d["capabilities"] and d["count"] == "all" for d in devices
    )
    assert "cuda" in str(gpu["build"].get("args", {})).lower()
    assert "ARG WITH_CUDA" in DOCKERFILE.read_text()
    for name in ("web", "worker", "beat", "migrate"):
        assert "profiles" not in services[name], f"{name} must start with a plain `docker compose up`"


def test_app_services_get_the_settings_production_requires(services):
    production = (REPO / "imgcap_site" / "settings" / "production.py").read_text()
    for variable in REQUIRED_ENV:
        assert variable in production, f"production settings no longer read {variable}: update this test"
    for name in APP_SERVICES:
        env = services[name]["environment"]
        for variable in REQUIRED_ENV:
            assert env.get(variable), f"{name} lacks {variable}"
        assert env["DATABASE_URL"].startswith("postgres://") and "@postgres:5432/" in env["DATABASE_URL"]
        assert env["CELERY_BROKER_URL"] == "redis://redis:6379/0"
        assert "${IMGCAP_SECRET_KEY:?" in env["DJANGO_SECRET_KEY"], (
            "the secret key must be required, not a default"
        )


def test_settings_module_exists(services):
    for name in APP_SERVICES:
        module = services[name]["environment"]["DJANGO_SETTINGS_MODULE"]
        assert module == "imgcap_site.settings.production"
        assert module_file(module).is_file(), f"{module} does not exist"


# --- the reverse proxy -------------------------------------------------------------------------------


def nginx_tree(text: str) -> list[tuple[str, list[str], list | None]]:
    """nginx's config as (directive, arguments, block or None) in order; quoted arguments and the
    template's ${NAME} kept whole; comments dropped."""
    quoted, word = r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", r"(?:\$\{\w+\}|[^\s{};#])+"
    tokens = [t for t in re.findall(rf"{quoted}|#.*|[{{}};]|{word}", text) if not t.startswith("#")]
    stack: list[list] = [[]]
    words: list[str] = []
    for token in tokens:
        if token == "{":
            block: list = []
            stack[-1].append((words[0], words[1:], block))
            stack.append(block)
            words = []
        elif token == "}":
            stack.pop()
        elif token == ";":
            stack[-1].append((words[0], words[1:], None))
            words = []
        else:
            words.append(token)
    assert len(stack) == 1 and not words, "unbalanced braces in the nginx template"
    return stack[0]


def directives(block: list, name: str) -> list[list[str]]:
    return [args for directive, args, _ in block if directive == name]


def child(block: list, name: str, *args: str) -> list:
    found = [inner for directive, arguments, inner in block if directive == name and arguments == list(args)]
    assert len(found) == 1, f"expected one `{name} {' '.join(args)}` block"
    return found[0]


@pytest.fixture(scope="module")
def nginx_server() -> list:
    return child(nginx_tree(NGINX_TEMPLATE.read_text()), "server")


def test_only_the_proxy_publishes_a_port(services):
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"proxy"}, "gunicorn (and every other service) must be reached only through nginx"
    assert services["proxy"]["ports"] == ["8000:80"]


def test_the_proxy_is_the_official_nginx_image_with_the_project_template(services):
    proxy = services["proxy"]
    assert re.fullmatch(r"nginx:(stable|\d+\.\d+(\.\d+)?)-alpine", proxy["image"]), proxy["image"]
    assert proxy["depends_on"]["web"]["condition"] == "service_healthy"
    mounts = [volume.split(":") for volume in proxy["volumes"]]
    assert [
        "./deploy/nginx/default.conf.template",
        "/etc/nginx/templates/default.conf.template",
        "ro",
    ] in mounts
    assert NGINX_TEMPLATE.is_file()


def test_the_template_gets_every_variable_it_names(services):
    env = services["proxy"]["environment"]
    named = set(re.findall(r"\$\{(\w+)\}", NGINX_TEMPLATE.read_text()))
    assert named == {"IMGCAP_PROXY_LISTEN", "IMGCAP_UPSTREAM"}
    assert all(env.get(name) for name in named), "the image's entrypoint leaves an unset ${NAME} as it is"
    # envsubst touches only these: nginx's own $host, $remote_addr … must reach nginx as they are.
    assert all(re.match(env["NGINX_ENVSUBST_FILTER"], name) for name in named)
    assert not re.match(env["NGINX_ENVSUBST_FILTER"], "PATH")
    # It listens where the published port leads, and passes to gunicorn's bind.
    assert env["IMGCAP_PROXY_LISTEN"] == services["proxy"]["ports"][0].split(":")[-1]
    bind = next(w for w in argv(services["web"]) if w.startswith("--bind="))
    assert env["IMGCAP_UPSTREAM"] == "web:" + bind.rsplit(":", 1)[1]
    assert bind.rsplit(":", 1)[1] in services["web"]["expose"]


def test_web_believes_the_one_proxy_in_front(services):
    assert services["web"]["environment"]["IMGCAP_TRUSTED_PROXIES"] == "1"
    assert (REPO / "captions" / "throttles.py").read_text().count("settings.TRUSTED_PROXIES") == 1
    for name in ("worker", "beat", "migrate", "gpu-worker"):  # they take no requests
        assert "IMGCAP_TRUSTED_PROXIES" not in services[name]["environment"], name


def test_nginx_buffers_and_forwards_what_the_app_reads(nginx_server):
    assert directives(nginx_server, "proxy_request_buffering") == [["on"]]
    assert directives(nginx_server, "proxy_buffering") == [["on"]]
    headers = {args[0]: args[1] for args in directives(nginx_server, "proxy_set_header")}
    assert headers == {
        "Host": "$http_host",
        "X-Forwarded-For": "$proxy_add_x_forwarded_for",  # the last entry is the address nginx saw
        "X-Forwarded-Proto": "$scheme",
    }
    for timeout in ("client_header_timeout", "client_body_timeout", "send_timeout"):
        (value,) = directives(nginx_server, timeout)
        assert int(value[0].rstrip("s")) <= 10, timeout
    assert directives(nginx_server, "limit_conn")
    assert directives(nginx_server, "listen") == [["${IMGCAP_PROXY_LISTEN}", "default_server"]]


def test_nginx_waits_for_gunicorn_a_little_longer_than_gunicorn_waits_for_its_workers(services, nginx_server):
    timeout = next(int(w.split("=")[1]) for w in argv(services["web"]) if w.startswith("--timeout="))
    (read,) = directives(nginx_server, "proxy_read_timeout")
    assert timeout < int(read[0].rstrip("s")) <= timeout + 10


def test_nginx_body_limits_are_the_apps(settings, nginx_server):
    from captions.middleware import MULTIPART_OVERHEAD_BYTES, ONE_IMAGE_PATHS

    # The largest request any route takes, and what one image takes (captions/middleware.py).
    assert directives(nginx_server, "client_max_body_size") == [[str(settings.IMGCAP_MAX_REQUEST_BYTES)]]
    largest = max(
        settings.IMGCAP_MAX_BATCH_BYTES,
        settings.IMGCAP_ARCHIVE_MAX_BYTES,
        settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
    )
    assert largest <= settings.IMGCAP_MAX_REQUEST_BYTES
    api = child(nginx_server, "location", "/api/")
    (path,) = ONE_IMAGE_PATHS
    one_image = child(api, "location", "=", path)
    assert directives(one_image, "client_max_body_size") == [
        [str(settings.IMGCAP_MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD_BYTES)]
    ]
    assert directives(one_image, "proxy_pass") == directives(api, "proxy_pass") == [["http://imgcap_web"]]
    # nginx's own 413 under /api/ is the API's error body.
    assert ["413", "@api_too_large"] in directives(api, "error_page")
    body = directives(child(nginx_server, "location", "@api_too_large"), "return")[0]
    assert body[0] == "413"
    assert json.loads(body[1].strip("'").replace("\\n", ""))["error"]["code"] == "request_too_large"


# --- commands ---------------------------------------------------------------------------------------


def test_gunicorn_serves_the_project_wsgi_application(services):
    words = argv(services["web"])
    assert words[0] == "gunicorn"
    target = next(w for w in words[1:] if not w.startswith("-"))
    module, _, attribute = target.partition(":")
    assert (module, attribute) == ("imgcap_site.wsgi", "application")
    assert re.search(r"^application\s*=", module_file(module).read_text(), re.M)
    assert "--bind=0.0.0.0:8000" in words
    assert services["web"]["expose"] == ["8000"]


def option(words: list[str], name: str) -> str:
    """`--name=value` or `--name value` of a command line."""
    for i, word in enumerate(words):
        if word.startswith(f"{name}="):
            return word.split("=", 1)[1]
        if word == name:
            return words[i + 1]
    raise AssertionError(f"{name} not in {words}")


def test_web_has_threads_for_long_polls_and_the_database_has_connections_for_them(services, settings):
    # GET /api/v1/images/{id}/?wait=30 holds a thread: gthread workers, with threads to spare beyond
    # the waits one process allows (captions/long_poll.py).
    words = argv(services["web"])
    assert option(words, "--worker-class") == "gthread"
    threads, processes = int(option(words, "--threads")), int(option(words, "--workers"))
    assert 0 < settings.IMGCAP_MAX_WAITING_REQUESTS < threads
    cmd = next(args for instruction, args in dockerfile_instructions() if instruction == "CMD")
    assert option(json.loads(cmd), "--worker-class") == "gthread" and option(json.loads(cmd), "--threads")
    # Each thread keeps its own connection (CONN_MAX_AGE): with the workers' (a solo caption worker,
    # the fetcher's threads, a GPU worker) well under Postgres' default max_connections of 100.
    fetcher = int(option(argv(services["fetcher"]), "--concurrency"))
    assert processes * threads + fetcher + 2 <= 50


def test_webhook_urls_name_the_site_clients_reach(services):
    assert services["web"]["environment"]["IMGCAP_SITE_URL"].startswith("${IMGCAP_SITE_URL:-http")
    assert (
        services["worker"]["environment"]["IMGCAP_SITE_URL"]
        == services["web"]["environment"]["IMGCAP_SITE_URL"]
    )


def celery_services(services) -> dict[str, list[str]]:
    return {name: argv(s) for name, s in services.items() if argv(s)[:1] == ["celery"]}


def test_celery_commands_name_the_project_app_and_contract_queues(services):
    found = celery_services(services)
    assert set(found) == {"worker", "fetcher", "beat", "gpu-worker"}
    celery_module = REPO / "imgcap_site" / "celery.py"
    assert re.search(r"^app\s*=\s*Celery\(", celery_module.read_text(), re.M)
    consumed: set[str] = set()
    for name, words in found.items():
        assert words[1:3] == ["-A", "imgcap_site"], name
        if words[3] == "worker":
            queues = set(words[words.index("-Q") + 1].split(","))
            assert queues <= QUEUES, f"{name} consumes unknown queues {queues - QUEUES}"
            consumed |= queues
            assert "-B" not in words, "beat runs as its own service, exactly once"
        else:
            assert words[3] == "beat"
    assert consumed == QUEUES, "some queue of the contract has no worker"
    assert argv(services["worker"])[argv(services["worker"]).index("-Q") + 1] == "caption,default"
    assert argv(services["gpu-worker"])[argv(services["gpu-worker"]).index("-Q") + 1] == "caption"
    # URLs wait on other servers: many threads in a worker that loads no model (worker/tasks.py).
    fetcher = argv(services["fetcher"])
    assert fetcher[fetcher.index("-Q") + 1] == "fetch" and fetcher[fetcher.index("--pool") + 1] == "threads"


def test_contract_queues_are_the_ones_settings_route_to(settings):
    assert settings.CELERY_TASK_DEFAULT_QUEUE == "default"
    assert settings.CELERY_TASK_ROUTES["imgcap.caption_images"] == {"queue": "caption"}
    assert settings.CELERY_TASK_ROUTES["imgcap.fetch_urls"] == {"queue": "fetch"}
    # A webhook delivery waits on the receiver: never on the captioning workers' solo pool.
    assert settings.CELERY_TASK_ROUTES["imgcap.deliver_webhook"] == {"queue": "fetch"}


def test_every_manage_py_command_is_a_real_django_command(services):
    used = [cmd for s in services.values() for cmd in manage_commands(argv(s))]
    for instruction, arguments in dockerfile_instructions():
        if instruction == "RUN":
            used += manage_commands(shlex.split(arguments))
    assert {"migrate", "collectstatic"} <= set(used)
    assert (REPO / "manage.py").is_file()
    for command in used:
        assert django_command_exists(command), f"manage.py {command} is not a Django command here"
    assert not django_command_exists("no_such_command_anywhere")


# --- Dockerfile -------------------------------------------------------------------------------------


def dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip().lstrip("/") for line in lines if line.strip() and not line.startswith("#")]


def test_dockerfile_copies_files_that_exist_and_are_not_ignored():
    patterns = dockerignore_patterns()
    copies = [args for instruction, args in dockerfile_instructions() if instruction in {"COPY", "ADD"}]
    assert copies
    for arguments in copies:
        words = [w for w in shlex.split(arguments) if not w.startswith("--")]
        assert not any(a.startswith("--from") for a in shlex.split(arguments)), (
            "no multi-stage copies expected"
        )
        for source in words[:-1]:
            assert (REPO / source).exists(), f"COPY source {source} does not exist"
            if source != ".":
                assert not any(fnmatch.fnmatch(source, p) for p in patterns), f"{source} is in .dockerignore"


def test_dockerfile_base_user_and_default_command():
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    users = [args for instruction, args in instructions if instruction == "USER"]
    assert users and users[-1] not in {"root", "0"}
    run_text = " ".join(args for instruction, args in instructions if instruction == "RUN")
    assert "pip install -r requirements.txt" in run_text
    assert "useradd" in run_text and users[-1] in run_text
    cmd = [args for instruction, args in instructions if instruction == "CMD"][-1]
    assert "gunicorn" in cmd and "imgcap_site.wsgi:application" in cmd


def test_dockerignore_keeps_local_state_out_of_the_image():
    patterns = dockerignore_patterns()
    for required in (".venv", "runs", "var", ".git", ".env"):
        assert required in patterns, f".dockerignore should list {required}"
    for needed in ("ml", "models", "captions", "worker", "imgcap_site", "manage.py", "requirements.txt"):
        assert not any(fnmatch.fnmatch(needed, p) for p in patterns), f"{needed} must reach the image"
        assert (REPO / needed).exists(), f"{needed} is missing from the project"
