"""The Celery app: configured from Django settings (CELERY_* names), tasks in `worker/tasks.py`.

Web processes only publish (`send_task` by name), so importing this module never imports the
captioning model; worker processes load it once each (see `worker/runtime.py`).
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imgcap_site.settings.local")

app = Celery("imgcap")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["worker"])
