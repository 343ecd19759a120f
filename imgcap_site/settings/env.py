"""Reading settings from environment variables, and a tiny DATABASE_URL parser (no extra package)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit


class EnvError(ValueError):
    """An environment variable has a value we cannot use."""


def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def env_int(name: str, default: int | None) -> int | None:
    value = env_str(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise EnvError(f"{name} must be an integer, got {value!r}") from None


def env_float(name: str, default: float) -> float:
    value = env_str(name)
    if value is None:
        return default
    try:
        return float(value)
    except ValueError:
        raise EnvError(f"{name} must be a number, got {value!r}") from None


def env_bool(name: str, default: bool) -> bool:
    value = env_str(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise EnvError(f"{name} must be a boolean (1/0, true/false), got {value!r}")


def env_list(name: str, default: list[str]) -> list[str]:
    value = env_str(name)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def parse_database_url(url: str) -> dict[str, Any]:
    """`postgres://user:pass@host:port/name?opt=v`, `postgresql://…`, `sqlite:///abs/path` → DATABASES entry.

    `sqlite:///:memory:` is an in-memory database. Query parameters become OPTIONS (e.g. `sslmode=require`).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    options = dict(parse_qsl(parts.query))
    if scheme == "sqlite":
        # sqlite:///relative is not a thing here: three slashes plus an absolute path, or :memory:.
        path = unquote(parts.path)
        name = ":memory:" if path in {"/:memory:", ":memory:", ""} else path
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": name,
            # IMMEDIATE: a transaction takes the write lock when it starts, so two processes claiming
            # images (web + worker) serialise instead of failing with "database is locked" mid-way.
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                **options,
            },
        }
    if scheme in {"postgres", "postgresql", "pgsql"}:
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parts.path.lstrip("/")),
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
            # Persistent connections: a new one per request (connect, then a fresh backend loading its
            # catalog caches) cost ~15 ms, more than a whole search. Checked before reuse.
            "CONN_MAX_AGE": int(options.pop("conn_max_age", 60)),
            "CONN_HEALTH_CHECKS": True,
            # JIT compiling costs more (~100+ ms) than the short queries of a web app ever save.
            "OPTIONS": {**options, "options": f"-c jit=off {options.get('options', '')}".strip()},
        }
    raise EnvError(f"DATABASE_URL scheme {scheme!r} is not supported (postgres://, sqlite:///)")


# kombu's filesystem transport ignores the host, but a URL without one ("filesystem://") makes kombu
# warn "No hostname was supplied" on every new connection, e.g. each command that queues images.
FILESYSTEM_BROKER_URL = "filesystem://localhost//"


def filesystem_broker(folder: Path) -> dict[str, str]:
    """Transport options for kombu's filesystem broker kept in one folder: messages, processed
    messages and exchange bindings (`control`, which otherwise lands in each process's cwd)."""
    options = {
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "processed_folder": str(folder / "processed"),
        "control_folder": str(folder / "control"),
    }
    for sub in ("queue", "processed", "control"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return options
