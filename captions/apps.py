from django.apps import AppConfig


class CaptionsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "captions"
    verbose_name = "Captions"

    def ready(self) -> None:
        from captions import checks  # noqa: F401 -- registers the system checks
