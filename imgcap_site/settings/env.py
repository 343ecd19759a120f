"""Settings from environment variables, read with django-environ (cookiecutter-django's way), and
the project's defaults for the databases a DATABASE_URL names."""

from __future__ import annotations

from typing import Any

import environ

env = environ.Env()


def database(url: str) -> dict[str, Any]:
    """The DATABASES entry of `postgres://user:pass@host:port/name?opt=v` (or `postgresql://`) or
    `sqlite:////abs/path` (`sqlite:///:memory:`), parsed by django-environ (query parameters become
    OPTIONS, `conn_max_age` sets CONN_MAX_AGE), with this project's defaults added."""
    config = environ.Env.db_url_config(url)
    options = config.setdefault("OPTIONS", {})
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # IMMEDIATE: a transaction takes the write lock when it starts, so two processes claiming
        # images (web + worker) serialise instead of failing with "database is locked" mid-way.
        config["OPTIONS"] = {
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            **options,
        }
    elif config["ENGINE"] == "django.db.backends.postgresql":
        # Persistent connections: a new one per request (connect, then a fresh backend loading its
        # catalog caches) cost ~15 ms, more than a whole search. Checked before reuse.
        config.setdefault("CONN_MAX_AGE", 60)
        config["CONN_HEALTH_CHECKS"] = True
        # JIT compiling costs more (~100+ ms) than the short queries of a web app ever save.
        options["options"] = f"-c jit=off {options.get('options', '')}".strip()
    else:
        raise environ.ImproperlyConfigured(
            f"DATABASE_URL engine {config['ENGINE']!r} is not supported (postgres://, sqlite:///)"
        )
    return config
