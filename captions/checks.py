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


@checks.register()
def pixel_cap_within_pillows(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Pillow refuses to open images above ml.images.MAX_PIXELS whatever the setting says, and the worker
    reads with that limit: a higher IMGCAP_MAX_PIXELS would promise uploads that are refused anyway."""
    from ml.images import MAX_PIXELS

    if settings.IMGCAP_MAX_PIXELS <= MAX_PIXELS:
        return []
    return [
        checks.Warning(
            f"IMGCAP_MAX_PIXELS ({settings.IMGCAP_MAX_PIXELS:,}) is above {MAX_PIXELS:,}, "
            "the most Pillow opens",
            hint=f"images over {MAX_PIXELS:,} pixels are refused as too_many_pixels whatever the setting",
            id="imgcap.W002",
        )
    ]
