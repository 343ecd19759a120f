"""Settings shared by every environment; every knob is an environment variable with a working default.

local.py (manage.py's default), test.py (pytest's) and production.py refine this.
"""

from __future__ import annotations

from pathlib import Path

from imgcap_site.settings.env import (
    FILESYSTEM_BROKER_URL,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_str,
    filesystem_broker,
    parse_database_url,
)

REPO_DIR = Path(__file__).resolve().parents[2]
BASE_DIR = REPO_DIR
VAR_DIR = Path(env_str("IMGCAP_VAR_DIR", str(REPO_DIR / "var")))

SECRET_KEY = env_str("DJANGO_SECRET_KEY", "insecure-dev-key-only-for-local-use-change-me")
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework.authtoken",
    "captions",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "imgcap_site.urls"
WSGI_APPLICATION = "imgcap_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}")
DATABASES = {"default": parse_database_url(DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TZ", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("IMGCAP_STATIC_ROOT", str(VAR_DIR / "static")))

# Uploaded images. Served only by captions' media view, which applies visibility (never a bare static route).
MEDIA_ROOT = Path(env_str("IMGCAP_MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "/media/"

# Where the site is reachable, for absolute URLs made outside a request (export_captions).
IMGCAP_SITE_URL = env_str("IMGCAP_SITE_URL", "http://127.0.0.1:8000")

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "captions:gallery"
LOGOUT_REDIRECT_URL = "captions:gallery"

# --- captioning -----------------------------------------------------------------------------------
IMGCAP_MODEL_DIR = env_str("IMGCAP_MODEL_DIR", None)  # None: the shipped models/default
IMGCAP_BATCH_MAX = env_int("IMGCAP_BATCH_MAX", 16)
IMGCAP_BATCH_WAIT_MS = env_int("IMGCAP_BATCH_WAIT_MS", 200)
IMGCAP_STALE_AFTER_S = env_int("IMGCAP_STALE_AFTER_S", 600)
IMGCAP_REAPER_INTERVAL_S = env_float("IMGCAP_REAPER_INTERVAL_S", 60.0)
IMGCAP_MAX_ATTEMPTS = env_int("IMGCAP_MAX_ATTEMPTS", 3)
IMGCAP_N_BEST = env_int("IMGCAP_N_BEST", 3)
IMGCAP_BEAM_SIZE = env_int("IMGCAP_BEAM_SIZE", None)

# --- search ---------------------------------------------------------------------------------------
# A search ranks this many of the newest matching captions, not all of them (captions/search.py).
IMGCAP_SEARCH_CANDIDATES = env_int("IMGCAP_SEARCH_CANDIDATES", 1000)

# --- input limits (checked by captions.ingest; every breach is a 4xx that stores nothing) -----------
IMGCAP_MAX_UPLOAD_BYTES = env_int("IMGCAP_MAX_UPLOAD_BYTES", 20 * 1024 * 1024)
IMGCAP_MAX_PIXELS = env_int("IMGCAP_MAX_PIXELS", 40_000_000)
IMGCAP_MAX_BATCH_FILES = env_int("IMGCAP_MAX_BATCH_FILES", 500)
IMGCAP_ARCHIVE_MAX_FILES = env_int("IMGCAP_ARCHIVE_MAX_FILES", 500)
IMGCAP_ARCHIVE_MAX_BYTES = env_int("IMGCAP_ARCHIVE_MAX_BYTES", 512 * 1024 * 1024)
IMGCAP_ARCHIVE_MAX_RATIO = env_int("IMGCAP_ARCHIVE_MAX_RATIO", 100)
IMGCAP_URL_TIMEOUT_S = env_float("IMGCAP_URL_TIMEOUT_S", 10.0)
IMGCAP_URL_MAX_REDIRECTS = env_int("IMGCAP_URL_MAX_REDIRECTS", 3)
IMGCAP_URL_ALLOW_PRIVATE = env_bool("IMGCAP_URL_ALLOW_PRIVATE", False)  # tests only

# Files above 2.5 MiB spool to a temporary file instead of memory; the size limit itself is
# checked before an upload is read (a clean 413). Non-file fields and JSON bodies stay small.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DJANGO_DATA_UPLOAD_MAX_MEMORY_SIZE", 10 * 1024 * 1024)
# Django refuses requests with more files than this (default 100) with a 400; a batch may hold more.
DATA_UPLOAD_MAX_NUMBER_FILES = IMGCAP_MAX_BATCH_FILES + 1
DATA_UPLOAD_MAX_NUMBER_FIELDS = max(1000, IMGCAP_MAX_BATCH_FILES * 2)

# --- REST API --------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Anonymous clients may read public images; everything else needs a user.
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticatedOrReadOnly"],
    "DEFAULT_PAGINATION_CLASS": "captions.api.pagination.PagePagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "captions.api.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "captions.api.schema.ApiSchema",
}

# --- Celery (see imgcap_site/celery.py; worker/ holds the tasks) ------------------------------------
_BROKER_URL = env_str("CELERY_BROKER_URL", None)
if _BROKER_URL:
    CELERY_BROKER_URL = _BROKER_URL
else:
    # No services needed: kombu's filesystem transport, one folder shared by web and worker processes.
    CELERY_BROKER_URL = FILESYSTEM_BROKER_URL
    CELERY_BROKER_TRANSPORT_OPTIONS = filesystem_broker(VAR_DIR / "broker")
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {"imgcap.caption_images": {"queue": "caption"}}
CELERY_BEAT_SCHEDULE = {
    "requeue-stale": {"task": "imgcap.requeue_stale", "schedule": IMGCAP_REAPER_INTERVAL_S},
}
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("IMGCAP_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
