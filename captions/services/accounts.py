"""API tokens."""

from __future__ import annotations

from django.db import transaction
from rest_framework.authtoken.models import Token


def regenerate_api_token(*, user) -> Token:
    """Give `user` a new REST API token; the old one (if any) stops working at once."""
    with transaction.atomic():
        Token.objects.filter(user=user).delete()
        return Token.objects.create(user=user)
