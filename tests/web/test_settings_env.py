"""DATABASE_URL into DATABASES: django-environ's parsing plus the project's defaults."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from imgcap_site.settings.env import database


def test_postgres_gets_persistent_checked_connections_and_no_jit(monkeypatch):
    monkeypatch.delenv("IMGCAP_SEARCH_SEMANTIC_CANDIDATES", raising=False)
    config = database("postgres://imgcap:p%40ss@db.example:5433/imgcap?sslmode=require")
    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert (config["NAME"], config["USER"], config["PASSWORD"], config["HOST"], config["PORT"]) == (
        "imgcap",
        "imgcap",
        "p@ss",
        "db.example",
        5433,
    )
    assert config["CONN_MAX_AGE"] == 60 and config["CONN_HEALTH_CHECKS"] is True
    tuning = "-c jit=off -c hnsw.iterative_scan=relaxed_order -c hnsw.ef_search=50"
    assert config["OPTIONS"] == {"sslmode": "require", "options": tuning}
    tuned = database("postgresql://h/db?conn_max_age=0&options=-c%20statement_timeout%3D5000")
    assert tuned["CONN_MAX_AGE"] == 0
    assert tuned["OPTIONS"]["options"] == f"{tuning} -c statement_timeout=5000"
    # The HNSW scans keep as many candidates as each list of search by meaning takes.
    monkeypatch.setenv("IMGCAP_SEARCH_SEMANTIC_CANDIDATES", "150")
    assert "-c hnsw.ef_search=150" in database("postgres://h/db")["OPTIONS"]["options"]


def test_a_socket_folder_goes_to_libpq_as_the_host():
    config = database("postgres://postgres@/imgcap?host=/srv/imgcap/var/postgres/pgdata")
    assert config["HOST"] == "" and config["OPTIONS"]["host"] == "/srv/imgcap/var/postgres/pgdata"


@pytest.mark.parametrize("url", ["mysql://root@localhost/imgcap", "sqlite:////srv/imgcap/db.sqlite3"])
def test_other_databases_are_refused_with_a_message(url):
    # Search by meaning needs Postgres with pgvector; SQLite was the embedded database before.
    with pytest.raises(ImproperlyConfigured, match="needs Postgres with pgvector"):
        database(url)


def test_make_run_closes_its_connections_after_each_request():
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    probe = (
        "import json, django; django.setup(); from django.conf import settings; "
        "print(json.dumps([settings.DATABASES['default'][k] for k in ('ENGINE', 'CONN_MAX_AGE')]))"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "imgcap_site.settings.local",
        "DATABASE_URL": "postgres://postgres@db.invalid/imgcap",  # settings only: never connected to
    }
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", probe], cwd=repo, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["django.db.backends.postgresql", 0]
