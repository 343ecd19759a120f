"""imgcap_site.settings.production, imported for real in a subprocess (settings differ from the tests').

Static files are served by WhiteNoise after collectstatic; IMGCAP_S3_BUCKET and the AWS_S3_* variables
configure django-storages' S3 backend. Nothing here reaches the network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e  # starts real processes

REPO = Path(__file__).resolve().parents[2]


def fresh_database(name: str) -> str:
    from django.conf import settings

    from imgcap_site.embedded_postgres import embedded_database_url

    name = "".join(c if c.isalnum() else "_" for c in name.lower())
    return embedded_database_url(Path(settings.TEST_DIR) / "postgres", name)


def run_production(script: str, tmp_path: Path, **env: str) -> dict:
    """Run `script` with production settings and django.setup() done; it prints one JSON object."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "IMGCAP_", "DJANGO_"))}
    clean.pop("DATABASE_URL", None)
    clean.pop("CELERY_BROKER_URL", None)
    clean.update(
        DJANGO_SETTINGS_MODULE="imgcap_site.settings.production",
        DJANGO_SECRET_KEY="production-settings-test-key",
        DJANGO_ALLOWED_HOSTS="testserver",
        # A database of its own on the tests' embedded server, made afresh for each test.
        DATABASE_URL=fresh_database(f"production_{tmp_path.name}"[:60]),
        IMGCAP_VAR_DIR=str(tmp_path / "var"),
        # boto3 must not read this machine's AWS files or ask an instance-metadata service.
        AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        **env,
    )
    code = "import django, json\ndjango.setup()\n" + textwrap.dedent(script)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=clean, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_static_files_are_served_with_debug_off_after_collectstatic(tmp_path):
    static_root = tmp_path / "static"
    found = run_production(
        """
        from django.conf import settings
        from django.contrib.staticfiles.storage import staticfiles_storage
        from django.core.management import call_command
        from django.test import Client

        call_command("collectstatic", "--noinput", verbosity=0)
        url = staticfiles_storage.url("admin/css/base.css")
        client = Client()
        plain = client.get(url, secure=True)
        gzipped = client.get(url, secure=True, headers={"accept-encoding": "gzip"})
        print(json.dumps({
            "debug": settings.DEBUG,
            "middleware": settings.MIDDLEWARE[:2],
            "url": url,
            "status": plain.status_code,
            "body": (b"".join(plain.streaming_content) if plain.streaming else plain.content).decode(),
            "cache": plain.get("Cache-Control", ""),
            "gzip": gzipped.get("Content-Encoding", ""),
            "missing": client.get("/static/admin/css/no-such-file.css", secure=True).status_code,
        }))
        """,
        tmp_path,
        IMGCAP_STATIC_ROOT=str(static_root),
    )
    assert found["debug"] is False
    assert found["middleware"] == [
        "django.middleware.security.SecurityMiddleware",
        "whitenoise.middleware.WhiteNoiseMiddleware",
    ]
    # A content-hashed name, served from STATIC_ROOT and cacheable for good.
    assert found["url"].startswith("/static/admin/css/base.") and found["url"] != "/static/admin/css/base.css"
    assert found["status"] == 200
    assert found["body"] == (static_root / found["url"].removeprefix("/static/")).read_text()
    assert "max-age=315360000" in found["cache"]
    assert found["gzip"] == "gzip"
    assert found["missing"] == 404


def test_s3_bucket_and_endpoint_configure_the_storages_backend(tmp_path):
    found = run_production(
        """
        from django.conf import settings
        from django.core.files.storage import storages

        default_storage = storages["default"]
        print(json.dumps({
            "options": settings.STORAGES["default"]["OPTIONS"],
            "class": f"{type(default_storage).__module__}.{type(default_storage).__name__}",
            "bucket": default_storage.bucket_name,
            "endpoint": default_storage.endpoint_url,
            "region": default_storage.region_name,
            # A signed URL is computed locally from the credentials: no request is made.
            "url": default_storage.url("images/ab/abcdef.jpg"),
        }))
        """,
        tmp_path,
        IMGCAP_S3_BUCKET="imgcap-media",
        AWS_S3_ENDPOINT_URL="http://minio.internal:9000",
        AWS_S3_REGION_NAME="eu-central-1",
        AWS_S3_ADDRESSING_STYLE="path",
        AWS_ACCESS_KEY_ID="test-access-key",
        AWS_SECRET_ACCESS_KEY="test-secret-key",
    )
    assert found["class"] == "storages.backends.s3.S3Storage"
    assert found["options"] == {
        "bucket_name": "imgcap-media",
        "default_acl": "private",
        "querystring_auth": True,
        "endpoint_url": "http://minio.internal:9000",
        "region_name": "eu-central-1",
        "addressing_style": "path",
    }
    assert (found["bucket"], found["endpoint"], found["region"]) == (
        "imgcap-media",
        "http://minio.internal:9000",
        "eu-central-1",
    )
    url = found["url"]
    assert url.startswith("http://minio.internal:9000/imgcap-media/images/ab/abcdef.jpg?"), url
    assert "test-access-key" in url and "Signature=" in url


def test_without_a_bucket_media_stay_on_the_filesystem(tmp_path):
    found = run_production(
        """
        from django.core.files.storage import storages

        media = storages["default"]
        print(json.dumps({"class": type(media).__name__, "root": str(media.location)}))
        """,
        tmp_path,
        IMGCAP_MEDIA_ROOT=str(tmp_path / "media"),
    )
    assert found == {"class": "FileSystemStorage", "root": str(tmp_path / "media")}


def test_pages_render_before_collectstatic_and_the_check_says_what_to_run(tmp_path):
    found = run_production(
        """
        import io
        from django.core.management import call_command
        from django.test import Client

        call_command("migrate", verbosity=0)
        client = Client()
        before = io.StringIO()
        call_command("check", stdout=before, stderr=before)
        pages = {path: client.get(path, secure=True).status_code for path in ("/", "/accounts/login/")}
        call_command("collectstatic", "--noinput", verbosity=0)
        after = io.StringIO()
        call_command("check", stdout=after, stderr=after)
        print(json.dumps({"pages": pages, "before": before.getvalue(), "after": after.getvalue()}))
        """,
        tmp_path,
        IMGCAP_STATIC_ROOT=str(tmp_path / "static"),
    )
    assert found["pages"] == {"/": 200, "/accounts/login/": 200}
    assert "imgcap.W001" in found["before"] and "collectstatic" in found["before"]
    assert "imgcap.W001" not in found["after"]


def test_health_answers_over_plain_http_while_pages_redirect_to_https(tmp_path):
    found = run_production(
        """
        from django.core.management import call_command
        from django.test import Client

        call_command("migrate", verbosity=0)
        client = Client()
        health = client.get("/api/v1/health/")
        print(json.dumps({
            "health": health.status_code,
            "body": health.json() if health.status_code != 301 else None,
            "page": client.get("/").status_code,
        }))
        """,
        tmp_path,
    )
    assert found["page"] == 301  # SECURE_SSL_REDIRECT
    assert found["health"] == 200 and found["body"]["checks"] == {"database": "ok", "broker": "ok"}
