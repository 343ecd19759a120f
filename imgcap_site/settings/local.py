"""One machine (`make run`, manage.py's default): the embedded Postgres and the filesystem broker unless
env says otherwise. DEBUG stays off and only local host names are answered (DJANGO_DEBUG=true and
DJANGO_ALLOWED_HOSTS for development on a network): Django's debug pages show settings, paths and SQL,
and a forged Host header would reach every absolute URL."""

from imgcap_site.embedded_postgres import embedded_database_url
from imgcap_site.settings.base import *  # noqa: F403
from imgcap_site.settings.base import DATABASES, MEDIA_ROOT, VAR_DIR
from imgcap_site.settings.env import database

VAR_DIR.mkdir(parents=True, exist_ok=True)
MEDIA_ROOT.mkdir(parents=True, exist_ok=True)

if not DATABASES:
    # Started here (about a second the first time, then joined), so manage.py, the web server and
    # every worker find the same server without a step of their own.
    DATABASE_URL = embedded_database_url(VAR_DIR / "postgres")
    DATABASES = {"default": database(DATABASE_URL)}

# runserver answers each request on a thread of its own, and a persistent connection belongs to its
# thread: with CONN_MAX_AGE > 0 every request left a connection open ("too many clients" on
# Postgres). Close each at the end of its request instead.
DATABASES["default"]["CONN_MAX_AGE"] = 0
