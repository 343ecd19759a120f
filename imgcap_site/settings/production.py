"""Production: DEBUG off, secrets and hosts from env, secure cookies, collected static files.

Required env: DJANGO_SECRET_KEY, DJANGO_ALLOWED_HOSTS (comma-separated), DATABASE_URL, CELERY_BROKER_URL.
Optional: DJANGO_CSRF_TRUSTED_ORIGINS, IMGCAP_STATIC_ROOT, IMGCAP_MEDIA_ROOT,
DJANGO_SECURE_SSL_REDIRECT (default on), DJANGO_HSTS_SECONDS (default 0 = off until you have HTTPS for good).
Media on S3: set IMGCAP_S3_BUCKET (plus the usual AWS_* variables, e.g. AWS_S3_REGION_NAME,
AWS_S3_ENDPOINT_URL) and `pip install django-storages[s3]`; images are still served through the
visibility-checking media view.
"""

from django.core.exceptions import ImproperlyConfigured

from imgcap_site.settings.base import *  # noqa: F403
from imgcap_site.settings.env import env_bool, env_int, env_list, env_str

DEBUG = False

SECRET_KEY = env_str("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set in production")
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", [])
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured("DJANGO_ALLOWED_HOSTS must list the host names this site answers to")

SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 0)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

_S3_BUCKET = env_str("IMGCAP_S3_BUCKET")
if _S3_BUCKET:
    STORAGES = {
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {"bucket_name": _S3_BUCKET, "default_acl": "private", "querystring_auth": True},
        },
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
