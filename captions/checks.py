"""System checks (`manage.py check`, also run by runserver and migrate) for set-up mistakes that would
otherwise show only as broken pages."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.contrib.staticfiles.storage import ManifestFilesMixin
from django.core import checks
from django.core.files.storage import storages


@checks.register()
def static_files_collected(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """A manifest storage (production) names content-hashed files that only `collectstatic` writes:
    without them the pages are unstyled and have no scripts."""
    storage = storages["staticfiles"]
    if not isinstance(storage, ManifestFilesMixin):
        return []
    if (Path(settings.STATIC_ROOT) / storage.manifest_name).is_file():
        return []
    return [
        checks.Warning(
            f"static files have not been collected into {settings.STATIC_ROOT}",
            hint="run `python manage.py collectstatic --noinput` before serving (the Dockerfile does)",
            id="imgcap.W001",
        )
    ]
