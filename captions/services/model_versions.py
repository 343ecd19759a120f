"""The model versions captions come from, and which one's captions are shown."""

from __future__ import annotations

from django.db import IntegrityError, transaction

from captions.models import ModelVersion


def ensure_model_version(*, name: str, encoder: str, metrics: dict) -> ModelVersion:
    """The ModelVersion called `name` (created if new); it becomes active if none is."""
    version, created = ModelVersion.objects.get_or_create(
        name=name, defaults={"encoder": encoder or "", "metrics": metrics or {}}
    )
    if not created and (version.encoder != (encoder or "") or version.metrics != (metrics or {})):
        version.encoder, version.metrics = encoder or "", metrics or {}
        version.save(update_fields=["encoder", "metrics"])
    if not version.active and not ModelVersion.objects.filter(active=True).exists():
        try:
            with transaction.atomic():
                ModelVersion.objects.filter(pk=version.pk).update(active=True)
            version.active = True
        except IntegrityError:
            pass  # another process activated a version at the same moment; theirs stays active
    return version


def set_active_model(*, model_version: ModelVersion) -> ModelVersion:
    """Make this version's captions the ones shown as best (the workers' model dir decides what runs)."""
    with transaction.atomic():
        ModelVersion.objects.filter(active=True).exclude(pk=model_version.pk).update(active=False)
        ModelVersion.objects.filter(pk=model_version.pk).update(active=True)
    model_version.active = True
    return model_version
