"""WSGI entry point (gunicorn imgcap_site.wsgi). Production sets DJANGO_SETTINGS_MODULE explicitly."""

import gc
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imgcap_site.settings.local")

application = get_wsgi_application()

# Search's models (the query embedder, the word vectors) load here, not in the first search's request.
from captions.search.semantic import preload  # noqa: E402 - needs the apps, loaded just above

preload()

# What is loaded by now (Django, the apps, their modules) lives as long as the process: frozen, the
# cyclic garbage collector's full passes no longer walk it. They did every ~75 requests and paused
# that request 40-60 ms (a search at a million captions, bench/README.md); now about 20 ms.
gc.freeze()
