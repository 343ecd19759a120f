"""Helpers shared by captions' management commands."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError


def get_user(username: str):
    User = get_user_model()  # noqa: N806 - Django's idiom
    try:
        return User.objects.get(**{User.USERNAME_FIELD: username})
    except User.DoesNotExist:
        raise CommandError(f"no user {username!r}; create one with `manage.py createsuperuser`") from None


def skipped_line(name: str, message: str) -> str:
    """`skipped doc.pdf: <why>`, naming the file once: ingest messages already start with its name."""
    return f"skipped {message}" if message.startswith(f"{name}: ") else f"skipped {name}: {message}"
