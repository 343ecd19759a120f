"""WSGI entry point (gunicorn imgcap_site.wsgi). Production sets DJANGO_SETTINGS_MODULE explicitly."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imgcap_site.settings.local")

application = get_wsgi_application()
