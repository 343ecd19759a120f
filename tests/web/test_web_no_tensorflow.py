"""The web process never imports TensorFlow: only worker processes load the model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from imgcap_site.embedded_postgres import stop_embedded_postgres

pytestmark = pytest.mark.e2e  # starts real processes

REPO = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter: this pytest process has TensorFlow loaded by other tests' fixtures.
PROBE = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys
    import django
    django.setup()

    import captions
    from django.test import Client
    from django.urls import get_resolver, reverse

    imported = []
    for info in pkgutil.walk_packages(captions.__path__, "captions."):
        importlib.import_module(info.name)
        imported.append(info.name)
    # imgcap_site.wsgi preloads search's models (numpy + tokenizers only).
    names = ("worker", "worker.tasks", "worker.micro_batches", "worker.runtime", "imgcap_site.urls")
    for name in (*names, "imgcap_site.wsgi"):
        importlib.import_module(name)
        imported.append(name)

    # What a web process does with Celery: autodiscovery, then publishing by task name.
    from imgcap_site.celery import app
    app.loader.import_default_modules()
    tasks = sorted(name for name in app.tasks if name.startswith("imgcap."))

    get_resolver().url_patterns  # the whole URLconf, API and admin included
    login = reverse("login")
    response = Client(HTTP_HOST="localhost").get(login)  # a host every settings module allows
    print(json.dumps({
        "tensorflow": sorted(m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow.")),
        "ml.captioner": "ml.captioner" in sys.modules,
        "imported": imported,
        "tasks": tasks,
        "login": [login, response.status_code],
    }))
    """
)


def run_probe(settings_module: str, **env_vars: str) -> dict:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": settings_module, **env_vars}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_web_process_imports_every_module_without_tensorflow():
    probe = run_probe("imgcap_site.settings.test")
    assert probe["tensorflow"] == []
    assert probe["ml.captioner"] is False
    # The probe really walked the app: views, API, services, the worker's tasks.
    expected = {
        "captions.services.intake",
        "captions.queue",
        "captions.models",
        "worker.tasks",
        "worker.micro_batches",
    }
    assert expected <= set(probe["imported"])
    assert any(name.startswith("captions.api") for name in probe["imported"])
    assert probe["tasks"] == [
        "imgcap.caption_images",
        "imgcap.deliver_webhook",
        "imgcap.fetch_urls",
        "imgcap.requeue_stale",
    ]
    assert probe["login"] == ["/accounts/login/", 200]


def test_local_settings_web_process_has_no_tensorflow(tmp_path):
    # local.py is what `make run` serves (the embedded Postgres, filesystem broker); its var/ goes to a
    # temporary folder.
    try:
        probe = run_probe("imgcap_site.settings.local", IMGCAP_VAR_DIR=str(tmp_path / "var"))
    finally:
        stop_embedded_postgres(tmp_path / "var" / "postgres")
    assert probe["tensorflow"] == []
    assert probe["ml.captioner"] is False
    assert probe["login"][1] == 200
