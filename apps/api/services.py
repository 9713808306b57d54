"""API tokens: issuing one, and finding the user behind one."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Q
from django.utils import timezone

from .models import TOKEN_PREFIX, ApiToken, hash_token

LAST_USED_RESOLUTION = timedelta(minutes=1)


def api_token_issue(*, username: str, name: str = "") -> tuple[ApiToken, str]:
    """Issue a token for a user; returns the row and the token, which is never stored.

    Raises the user model's DoesNotExist for an unknown username.
    """
    user = get_user_model().objects.get(username=username)
    return ApiToken.issue(user=user, name=name)


def api_token_user(*, token: str) -> Any | None:
    """The active user a bearer token belongs to, or None. Notes its use at most once a minute."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    found = ApiToken.objects.select_related("user").filter(key_hash=hash_token(token)).first()
    if found is None or not found.user.is_active:
        return None
    _note_use(found)
    return found.user


def _note_use(token: ApiToken) -> None:
    # A busy client must not turn every request into a write; the condition in the UPDATE also
    # keeps concurrent requests from writing the same minute twice.
    now = timezone.now()
    stale = now - LAST_USED_RESOLUTION
    if token.last_used_at is None or token.last_used_at <= stale:
        ApiToken.objects.filter(Q(last_used_at__isnull=True) | Q(last_used_at__lte=stale), pk=token.pk).update(last_used_at=now)
