"""Settings shared by every environment; every knob is an environment variable with a working default.

local.py (manage.py's default), test.py (pytest's) and production.py refine this.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from csp.constants import NONE, SELF, UNSAFE_INLINE

from imgcap_site import queues
from imgcap_site.settings.broker import FILESYSTEM_BROKER_URL, filesystem_broker
from imgcap_site.settings.env import database, env, semantic_candidates

REPO_DIR = Path(__file__).resolve().parents[2]
BASE_DIR = REPO_DIR
VAR_DIR = Path(env.str("IMGCAP_VAR_DIR", default=str(REPO_DIR / "var")))

SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="insecure-dev-key-only-for-local-use-change-me")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
# Reverse proxies in front of the web server that append X-Forwarded-For (and set X-Forwarded-Proto).
# 0: clients talk to gunicorn directly, and those headers, which anyone can send, are ignored.
TRUSTED_PROXIES = env.int("IMGCAP_TRUSTED_PROXIES", default=0)
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

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
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files served from here: the docs work offline
    "axes",  # failed sign-ins: lockouts per account and per address (django-axes)
    "captions",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Early: it times nearly the whole request (production puts WhiteNoise's static files before it).
    "captions.monitoring.RequestTimingMiddleware",
    # Before anything reads the body: a Content-Length over the route's limit is refused unread.
    "captions.middleware.RequestSizeMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Turns a locked-out sign-in into its 429 page (django-axes).
    "axes.middleware.AxesMiddleware",
    # Last, so that it sees a view's exception first: a database it cannot reach is a 503.
    "captions.middleware.DatabaseUnavailableMiddleware",
]

# Content-Security-Policy on every response (django-csp): scripts only from this site (the pages' and
# Swagger UI's are files, none inline), no plugins, no framing, forms post here. Inline styles stay
# allowed: the templates size the photo frame and space a few elements with style attributes.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF, UNSAFE_INLINE],
        "img-src": [SELF, "data:", "blob:"],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

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

# Postgres with pgvector. local.py and test.py start the embedded server (imgcap_site/
# embedded_postgres.py) when this is not set; production requires it.
DATABASE_URL = env.str("DATABASE_URL", default="")
DATABASES = {"default": database(DATABASE_URL)} if DATABASE_URL else {}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Sign-in attempts go through django-axes first: IMGCAP_LOGIN_FAILURE_LIMIT wrong passwords in a row
# lock that account, and separately that client address, for IMGCAP_LOGIN_LOCKOUT_MINUTES (the site's
# form and the admin alike; a right password during the lockout is refused too).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("IMGCAP_LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.float("IMGCAP_LOGIN_LOCKOUT_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "locked_out.html"
AXES_VERBOSE = False
AXES_CLIENT_IP_CALLABLE = "captions.throttles.client_address"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TZ", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("IMGCAP_STATIC_ROOT", default=str(VAR_DIR / "static")))

# Uploaded images. Served only by captions' media view, which applies visibility (never a bare static route).
MEDIA_ROOT = Path(env.str("IMGCAP_MEDIA_ROOT", default=str(VAR_DIR / "media")))
MEDIA_URL = "/media/"

# Where the site is reachable, for absolute URLs made outside a request (export_captions).
IMGCAP_SITE_URL = env.str("IMGCAP_SITE_URL", default="http://127.0.0.1:8000")

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "captions:gallery"
LOGOUT_REDIRECT_URL = "captions:gallery"

# --- captioning -----------------------------------------------------------------------------------
IMGCAP_MODEL_DIR = env.str("IMGCAP_MODEL_DIR", default=None)  # None: the shipped models/default
# A worker's micro-batch: images captioned in one model call (not a user's Batch of uploads). The
# names before the rename (IMGCAP_BATCH_MAX, IMGCAP_BATCH_WAIT_MS) are still read.
IMGCAP_MICRO_BATCH_MAX = env.int("IMGCAP_MICRO_BATCH_MAX", default=env.int("IMGCAP_BATCH_MAX", default=16))
IMGCAP_MICRO_BATCH_WAIT_MS = env.int(
    "IMGCAP_MICRO_BATCH_WAIT_MS", default=env.int("IMGCAP_BATCH_WAIT_MS", default=200)
)
# A worker refreshes its claims' heartbeat every IMGCAP_HEARTBEAT_S while it captions them; a claim
# silent for IMGCAP_STALE_AFTER_S (its worker was killed) is handed back by the reaper. With the
# reaper's interval these bound how long a fault holds an image back: a killed worker's claims move
# within STALE_AFTER + REAPER_INTERVAL (18 s), work lost with Redis within RESEND_PENDING_AFTER +
# REAPER_INTERVAL (13 s), so every image is done within 30 s of either (tests/web/test_faults.py).
# STALE_AFTER stays well above HEARTBEAT: a database away for up to 12 s hands back no live claim.
IMGCAP_HEARTBEAT_S = env.float("IMGCAP_HEARTBEAT_S", default=3.0)
# Captioning workers lower their CPU priority by this much (nice; 0: not at all): on a machine they
# share with the web server, a request waits for no model call, and captions take what is left.
IMGCAP_WORKER_NICE = env.int("IMGCAP_WORKER_NICE", default=10)
# Monitoring (Prometheus): GET /metrics on the web side, needing this bearer token when set; each
# worker serves its own figures on IMGCAP_WORKER_METRICS_PORT when set (docs/operations.md).
IMGCAP_METRICS_TOKEN = env.str("IMGCAP_METRICS_TOKEN", default="")
IMGCAP_WORKER_METRICS_PORT = env.int("IMGCAP_WORKER_METRICS_PORT", default=None)
IMGCAP_STALE_AFTER_S = env.int("IMGCAP_STALE_AFTER_S", default=15)
# Pending this long since its last send: sent again (its message may be lost: Redis keeps nothing on
# disk), at most IMGCAP_RESEND_PENDING_MAX images a run. Duplicates are harmless, so this is short.
IMGCAP_RESEND_PENDING_AFTER_S = env.int("IMGCAP_RESEND_PENDING_AFTER_S", default=10)
IMGCAP_RESEND_PENDING_MAX = env.int("IMGCAP_RESEND_PENDING_MAX", default=256)
IMGCAP_REAPER_INTERVAL_S = env.float("IMGCAP_REAPER_INTERVAL_S", default=3.0)
IMGCAP_MAX_ATTEMPTS = env.int("IMGCAP_MAX_ATTEMPTS", default=3)
IMGCAP_N_BEST = env.int("IMGCAP_N_BEST", default=3)
IMGCAP_BEAM_SIZE = env.int("IMGCAP_BEAM_SIZE", default=None)

# --- search ---------------------------------------------------------------------------------------
# A search ranks this many of the newest matching captions, not all of them (captions/search/lexical.py):
# 200 ranks common words in a fifth of the time 1,000 took at a million captions, for the same recall@10
# on the retrieval benchmark (bench/README.md).
IMGCAP_SEARCH_CANDIDATES = env.int("IMGCAP_SEARCH_CANDIDATES", default=200)
# Search by meaning (captions/search/semantic.py): the nearest images to the query's sentence
# embedding, by shown caption and by the photo itself, at most this many of each, and only those at
# least this similar (cosine) and this share of the best match's similarity; concept tags count from
# this probability. Chosen on the retrieval benchmark (bench/bench_retrieval.py) and by hand on
# everyday queries ("puppy", "kids", "food").
IMGCAP_SEMANTIC_SEARCH = env.bool("IMGCAP_SEMANTIC_SEARCH", default=True)
IMGCAP_SEARCH_SEMANTIC_CANDIDATES = semantic_candidates()
IMGCAP_SEARCH_CAPTION_FLOOR = env.float("IMGCAP_SEARCH_CAPTION_FLOOR", default=0.2)
IMGCAP_SEARCH_PICTURE_FLOOR = env.float("IMGCAP_SEARCH_PICTURE_FLOOR", default=0.15)
IMGCAP_SEARCH_RELATIVE_FLOOR = env.float("IMGCAP_SEARCH_RELATIVE_FLOOR", default=0.6)
IMGCAP_SEARCH_TAG_FLOOR = env.float("IMGCAP_SEARCH_TAG_FLOOR", default=0.2)
# Near-duplicates (captions/duplicates.py): perceptual hashes at most this many bits apart (of 64).
IMGCAP_NEAR_DUPLICATE_BITS = env.int("IMGCAP_NEAR_DUPLICATE_BITS", default=10)
# Similar images this close (cosine of the encoder's features) are shown as near copies too.
IMGCAP_NEAR_DUPLICATE_SIMILARITY = env.float("IMGCAP_NEAR_DUPLICATE_SIMILARITY", default=0.95)
# A model caption's confidence (its calibrated probability of being right, ml/confidence.py) in words on
# the pages: "likely right" from IMGCAP_CONFIDENCE_HIGH, "probably wrong" (and "needs review", with its
# gallery and API filter) below IMGCAP_NEEDS_REVIEW_BELOW, "unsure" between.
IMGCAP_CONFIDENCE_HIGH = env.float("IMGCAP_CONFIDENCE_HIGH", default=0.6)
IMGCAP_NEEDS_REVIEW_BELOW = env.float("IMGCAP_NEEDS_REVIEW_BELOW", default=0.3)
# Typo tolerance: the vocabulary is the words of the newest this-many captions, re-read this often.
IMGCAP_SPELLING_SAMPLE = env.int("IMGCAP_SPELLING_SAMPLE", default=20000)
IMGCAP_SPELLING_CACHE_S = env.int("IMGCAP_SPELLING_CACHE_S", default=300)

# --- input limits (checked by captions.ingest; every breach is a 4xx that stores nothing) -----------
# One image: 50 MiB holds a 48-megapixel phone JPEG (~25 MB) or a 100-megapixel camera's; the nginx
# template (deploy/nginx/) writes the same number, and tests/web/test_compose.py checks they agree.
IMGCAP_MAX_UPLOAD_BYTES = env.int("IMGCAP_MAX_UPLOAD_BYTES", default=50 * 1024 * 1024)
# The hard pixel cap, read from the header before any pixel is decoded (a decompression bomb costs
# nothing); bigger photos than the model needs are captioned from a reduced copy, the original kept.
# At most ml.images.MAX_PIXELS (~179 M, Pillow's own refusal): captions/checks.py warns above it.
IMGCAP_MAX_PIXELS = env.int("IMGCAP_MAX_PIXELS", default=100_000_000)
IMGCAP_MAX_BATCH_FILES = env.int("IMGCAP_MAX_BATCH_FILES", default=500)
# A batch's files together (checked on their sizes before any is read), and its URLs: at most this
# many, fetched by a worker (the "fetch" queue) after the batch is answered, all within
# IMGCAP_URL_BATCH_DEADLINE_S (the rest are listed as not fetched).
IMGCAP_MAX_BATCH_BYTES = env.int("IMGCAP_MAX_BATCH_BYTES", default=256 * 1024 * 1024)
IMGCAP_MAX_BATCH_URLS = env.int("IMGCAP_MAX_BATCH_URLS", default=100)
# Photos per zip download (GET /api/v1/images/download.zip, the gallery's "Download"): streamed, but
# each file is read and has its caption written in, so a bigger selection is split by the client.
IMGCAP_MAX_ZIP_IMAGES = env.int("IMGCAP_MAX_ZIP_IMAGES", default=1000)
IMGCAP_URL_BATCH_DEADLINE_S = env.float("IMGCAP_URL_BATCH_DEADLINE_S", default=120.0)
IMGCAP_ARCHIVE_MAX_FILES = env.int("IMGCAP_ARCHIVE_MAX_FILES", default=500)
IMGCAP_ARCHIVE_MAX_BYTES = env.int("IMGCAP_ARCHIVE_MAX_BYTES", default=512 * 1024 * 1024)
# A whole request to any route other than the one-image upload (a batch of files, a zip archive):
# refused on its Content-Length before it is read (captions/middleware.py).
IMGCAP_MAX_REQUEST_BYTES = env.int("IMGCAP_MAX_REQUEST_BYTES", default=IMGCAP_ARCHIVE_MAX_BYTES + 1024 * 1024)
IMGCAP_ARCHIVE_MAX_RATIO = env.int("IMGCAP_ARCHIVE_MAX_RATIO", default=100)
IMGCAP_URL_TIMEOUT_S = env.float("IMGCAP_URL_TIMEOUT_S", default=10.0)
IMGCAP_URL_MAX_REDIRECTS = env.int("IMGCAP_URL_MAX_REDIRECTS", default=3)
IMGCAP_URL_ALLOW_PRIVATE = env.bool("IMGCAP_URL_ALLOW_PRIVATE", default=False)  # tests only

# --- webhooks and long polls -------------------------------------------------------------------------
# Webhook deliveries (captions/services/webhooks.py): POSTed by a fetch worker within this time each,
# retried after these delays on any non-2xx answer or network error (then failed); a user keeps at
# most this many webhooks. Same address rules as URL fetches (IMGCAP_URL_ALLOW_PRIVATE).
IMGCAP_WEBHOOK_TIMEOUT_S = env.float("IMGCAP_WEBHOOK_TIMEOUT_S", default=10.0)
IMGCAP_WEBHOOK_RETRY_DELAYS_S = env.list(
    "IMGCAP_WEBHOOK_RETRY_DELAYS_S", cast=int, default=[10, 60, 300, 1800, 7200, 21600]
)
IMGCAP_MAX_WEBHOOKS_PER_USER = env.int("IMGCAP_MAX_WEBHOOKS_PER_USER", default=10)
# GET /api/v1/images/{id}/?wait=N holds a web thread while it waits: at most this many do at once per
# web process (the others answer at once), so waits never take every thread of a gunicorn worker.
IMGCAP_MAX_WAITING_REQUESTS = env.int("IMGCAP_MAX_WAITING_REQUESTS", default=4)

# Files above 64 KiB spool to a temporary file instead of memory, so a batch of 500 photos is on
# disk while it is parsed, not in the web process (intake then reads a few megabytes at a time). The
# size limit itself is checked before an upload is read (a clean 413). Other fields stay small.
FILE_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DJANGO_DATA_UPLOAD_MAX_MEMORY_SIZE", default=10 * 1024 * 1024)
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
    # JSON only, also to a browser: DRF's browsable pages do not fit these views (they need querysets)
    # and errors stay JSON under /api/ in every mode. People browse the API at /api/v1/docs/.
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PAGINATION_CLASS": "captions.api.pagination.PagePagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "captions.api.errors.api_exception_handler",
    # Each view names the scope of its costly methods (captions/throttles.py); the rates are below.
    "DEFAULT_THROTTLE_CLASSES": ["captions.throttles.ScopedThrottle"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
# OpenAPI 3 at /api/v1/schema/ and as Swagger UI at /api/v1/docs/ (drf-spectacular).
SPECTACULAR_SETTINGS = {
    "TITLE": "imgcap API",
    "VERSION": "1",
    "DESCRIPTION": (
        "Upload images, get captions. Authenticate with a token (`Authorization: Token <key>`, from "
        "`python manage.py drf_create_token USER` or the site's API token page) or a browser session. "
        'Errors are `{"error": {"code": ..., "message": ...}}`.'
    ),
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,  # upload forms and answers are different shapes
    # Error answers and the exports' content types, which the views do not declare one by one.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "captions.api.openapi.document_errors",
    ],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
}

# --- request rates and quotas ------------------------------------------------------------------------
# Per user (anonymous: per address), "N/second|minute|hour|day"; empty turns a scope off. An upload
# is one image; a batch is up to IMGCAP_MAX_BATCH_FILES of them (captions/throttles.py).
IMGCAP_THROTTLE_RATES = {
    "upload": env.str("IMGCAP_THROTTLE_UPLOAD", default="300/minute"),
    "batch": env.str("IMGCAP_THROTTLE_BATCH", default="30/minute"),
    "recaption": env.str("IMGCAP_THROTTLE_RECAPTION", default="120/minute"),
    "search": env.str("IMGCAP_THROTTLE_SEARCH", default="300/minute"),
    # Creating webhooks, rotating their secrets and test deliveries (each one a POST to the user's URL).
    "webhook": env.str("IMGCAP_THROTTLE_WEBHOOK", default="30/minute"),
}
# What one user may keep and have waiting (0: no limit): the bytes of their stored images, and their
# images not yet captioned (pending or processing). Checked where every upload is stored.
IMGCAP_USER_STORAGE_BYTES = env.int("IMGCAP_USER_STORAGE_BYTES", default=50 * 1024**3)
IMGCAP_USER_QUEUE_IMAGES = env.int("IMGCAP_USER_QUEUE_IMAGES", default=20_000)

# --- Celery (see imgcap_site/celery.py; worker/ holds the tasks) ------------------------------------
_BROKER_URL = env.str("CELERY_BROKER_URL", default=None)
if _BROKER_URL:
    CELERY_BROKER_URL = _BROKER_URL
else:
    # No services needed: kombu's filesystem transport, one folder shared by web and worker processes.
    CELERY_BROKER_URL = FILESYSTEM_BROKER_URL
    CELERY_BROKER_TRANSPORT_OPTIONS = filesystem_broker(VAR_DIR / "broker")
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# A micro-batch in flight when the broker connection drops (Redis restarting) is finished and stored,
# not cancelled: its message is gone with Redis anyway, and the claims say who captions what. Pinned
# because Celery 6 turns this on by default.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = queues.DEFAULT_QUEUE
CELERY_TASK_ROUTES = {
    queues.CAPTION_TASK: {"queue": queues.CAPTION_QUEUE},
    queues.FETCH_TASK: {"queue": queues.FETCH_QUEUE},
    queues.DELIVER_TASK: {"queue": queues.FETCH_QUEUE},
}
CELERY_BEAT_SCHEDULE = {
    "requeue-stale": {"task": queues.REAPER_TASK, "schedule": IMGCAP_REAPER_INTERVAL_S},
}
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# The shared cache (request counts): IMGCAP_CACHE_URL (django-environ's cache URLs, e.g.
# redis://host:6379/2), else the broker's Redis, else a folder of the embedded platform.
_CACHE_URL = env.str("IMGCAP_CACHE_URL", default="")
if not _CACHE_URL and (_BROKER_URL or "").startswith(("redis://", "rediss://")):
    _CACHE_URL = _BROKER_URL
CACHES = {
    "default": env.cache_url_config(_CACHE_URL)
    if _CACHE_URL
    else {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": str(VAR_DIR / "django-cache"),  # not ml's IMGCAP_CACHE_DIR
    }
}
CACHES["default"]["KEY_PREFIX"] = "imgcap"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("IMGCAP_LOG_LEVEL", default="INFO")},
    # django-axes logs every failed sign-in at INFO; lockouts are WARNINGs.
    "loggers": {"django.db.backends": {"level": "INFO"}, "axes": {"level": "WARNING"}},
}
