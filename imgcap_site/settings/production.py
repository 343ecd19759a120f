"""Production: DEBUG off, secrets and hosts from env, secure cookies, static files served by WhiteNoise.

Required env: DJANGO_SECRET_KEY, DJANGO_ALLOWED_HOSTS (comma-separated), DATABASE_URL, CELERY_BROKER_URL.
Optional: DJANGO_CSRF_TRUSTED_ORIGINS, IMGCAP_STATIC_ROOT, IMGCAP_MEDIA_ROOT,
DJANGO_SECURE_SSL_REDIRECT (default on), DJANGO_HSTS_SECONDS (default a year; 0 = off),
IMGCAP_TRUSTED_PROXIES (reverse proxies in front that set X-Forwarded-For/-Proto; default 0).

Static files: `manage.py collectstatic` must have run (the Dockerfile does it): WhiteNoise serves the
collected, content-hashed and gzipped copies from IMGCAP_STATIC_ROOT, with gunicorn and DEBUG off.

Media on S3 (or an S3-compatible service): set IMGCAP_S3_BUCKET, and where needed AWS_S3_REGION_NAME,
AWS_S3_ENDPOINT_URL (e.g. http://minio:9000) and AWS_S3_ADDRESSING_STYLE (`path` for most non-AWS
services). Credentials are not settings: boto3 finds them itself (AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY, a profile, or an instance role). Images are still served through the
visibility-checking media view.
"""

from django.core.exceptions import ImproperlyConfigured

from imgcap_site.settings.base import *  # noqa: F403
from imgcap_site.settings.base import DATABASES, MIDDLEWARE, TRUSTED_PROXIES
from imgcap_site.settings.env import env

DEBUG = False

SECRET_KEY = env.str("DJANGO_SECRET_KEY", default=None)
if not SECRET_KEY:
    raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set in production")
if not DATABASES:
    raise ImproperlyConfigured("DATABASE_URL must name the Postgres (with pgvector) to use in production")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=[])
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured("DJANGO_ALLOWED_HOSTS must list the host names this site answers to")

SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
# Health checks and Prometheus scrapes come over plain HTTP from inside the deployment.
SECURE_REDIRECT_EXEMPT = [r"^api/v1/health/$", r"^metrics$"]
# X-Forwarded-Proto is believed only from a proxy the operator put in front (IMGCAP_TRUSTED_PROXIES):
# sent by a client straight to gunicorn it would make a plain-HTTP request count as HTTPS.
if TRUSTED_PROXIES:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Browsers heed HSTS only over HTTPS, which this setup redirects to; set 0 where it is not for good.
SECURE_HSTS_SECONDS = env.int("DJANGO_HSTS_SECONDS", default=365 * 24 * 3600)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# gunicorn serves no static files: WhiteNoise does, right after SecurityMiddleware (so HTTPS
# redirects and security headers still apply) and before anything that touches sessions or the database.
_SECURITY = MIDDLEWARE.index("django.middleware.security.SecurityMiddleware")
MIDDLEWARE = [
    *MIDDLEWARE[: _SECURITY + 1],
    "whitenoise.middleware.WhiteNoiseMiddleware",
    *MIDDLEWARE[_SECURITY + 1 :],
]

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Hashed names (cached forever by browsers) and gzipped copies, written by collectstatic; a page
    # whose files were never collected still renders (imgcap_site/static_storage.py).
    "staticfiles": {"BACKEND": "imgcap_site.static_storage.StaticFilesStorage"},
}

_S3_BUCKET = env.str("IMGCAP_S3_BUCKET", default=None)
if _S3_BUCKET:
    _S3_OPTIONS = {
        "endpoint_url": env.str("AWS_S3_ENDPOINT_URL", default=None),
        "region_name": env.str("AWS_S3_REGION_NAME", default=None),
        "addressing_style": env.str("AWS_S3_ADDRESSING_STYLE", default=None),
    }
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": _S3_BUCKET,
            "default_acl": "private",
            "querystring_auth": True,  # signed, expiring URLs: the bucket itself stays private
            **{name: value for name, value in _S3_OPTIONS.items() if value is not None},
        },
    }
