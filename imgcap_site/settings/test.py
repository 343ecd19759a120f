"""pytest's settings (pyproject: DJANGO_SETTINGS_MODULE): the embedded Postgres (pgvector) unless
DATABASE_URL names another, files under var/test."""

from imgcap_site.embedded_postgres import embedded_database_url
from imgcap_site.settings.base import *  # noqa: F403
from imgcap_site.settings.base import CACHES, VAR_DIR
from imgcap_site.settings.broker import FILESYSTEM_BROKER_URL, filesystem_broker
from imgcap_site.settings.env import database, env

DEBUG = False
SECRET_KEY = "test-only-secret-key"
# Django's test client sends Host: testserver (also from subprocesses that do not set up a test environment).
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost", "[::1]"]

TEST_DIR = VAR_DIR / "test"

# pytest-django makes its test database (test_test) on this server, beside `test`.
DATABASE_URL = env.str("DATABASE_URL", default="") or embedded_database_url(TEST_DIR / "postgres", "test")
DATABASES = {"default": database(DATABASE_URL)}
MEDIA_ROOT = TEST_DIR / "media"
if CACHES["default"]["BACKEND"].endswith("FileBasedCache"):
    CACHES["default"]["LOCATION"] = str(TEST_DIR / "django-cache")
STATIC_ROOT = TEST_DIR / "static"

if not env.str("CELERY_BROKER_URL", default=None):
    # Its own folder, so test messages never reach a development worker.
    CELERY_BROKER_URL = FILESYSTEM_BROKER_URL
    CELERY_BROKER_TRANSPORT_OPTIONS = filesystem_broker(TEST_DIR / "broker")

# Fast hashing: tests create many users.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
