from django.apps import AppConfig
from django.db.models.signals import post_migrate


class CaptionsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "captions"
    verbose_name = "Captions"

    def ready(self) -> None:
        from captions import checks  # noqa: F401 -- registers the system checks

        post_migrate.connect(_repair_sqlite_search, sender=self)


def _repair_sqlite_search(sender, using: str = "default", **kwargs) -> None:
    # SQLite table rebuilds in later migrations drop the caption search triggers; put them back.
    from django.db import connections

    from captions.search import ensure_sqlite_fts

    ensure_sqlite_fts(connections[using])
