"""imgcap's Django project. The Celery app is imported here so `@shared_task` and `send_task` use it."""

from imgcap_site.celery import app as celery_app

__all__ = ("celery_app",)
