"""Settings from environment variables, read with django-environ (cookiecutter-django's way), and
the project's defaults for the databases a DATABASE_URL names."""

from __future__ import annotations

from typing import Any

import environ

env = environ.Env()


def semantic_candidates() -> int:
    """How many images each list of search by meaning takes, best first (IMGCAP_SEARCH_SEMANTIC_CANDIDATES).
    pgvector's HNSW scans cost about their ef_search: at a million captions a search's three scans take
    about 5 ms at 50 and 13 ms at 200 (bench/README.md), for the same recall@10 (62.9 / 31.5 against
    62.8 / 31.4 with 100, bench/bench_retrieval.py; sentences' recall@1 18.7 against 19.7)."""
    return env.int("IMGCAP_SEARCH_SEMANTIC_CANDIDATES", default=50)


def database(url: str) -> dict[str, Any]:
    """The DATABASES entry of `postgres://user:pass@host:port/name?opt=v` (or `postgresql://`; a Unix
    socket: `postgres://user@/name?host=/socket/dir`), parsed by django-environ (query parameters become
    OPTIONS, `conn_max_age` sets CONN_MAX_AGE), with this project's defaults added.

    Postgres only, with the pgvector extension (search by meaning lives in the database): unset,
    DATABASE_URL means the embedded server (imgcap_site/embedded_postgres.py)."""
    config = environ.Env.db_url_config(url)
    options = config.setdefault("OPTIONS", {})
    if config["ENGINE"] == "django.db.backends.postgresql":
        # Persistent connections: a new one per request (connect, then a fresh backend loading its
        # catalog caches) cost ~15 ms, more than a whole search. Checked before reuse.
        config.setdefault("CONN_MAX_AGE", 60)
        config["CONN_HEALTH_CHECKS"] = True
        # JIT compiling costs more (~100+ ms) than the short queries of a web app ever save. pgvector's
        # HNSW scans filtered by visibility go on until they have enough rows (iterative scans); the
        # first pass keeps ef_search candidates, as many as a search's list takes. Set per connection,
        # so no search pays a statement for it.
        ef_search = semantic_candidates()
        tuning = f"-c jit=off -c hnsw.iterative_scan=relaxed_order -c hnsw.ef_search={ef_search}"
        options["options"] = f"{tuning} {options.get('options', '')}".strip()
    else:
        raise environ.ImproperlyConfigured(
            f"DATABASE_URL engine {config['ENGINE']!r} is not supported: imgcap needs Postgres with "
            "pgvector (postgres://…), or no DATABASE_URL at all for the embedded server"
        )
    return config
