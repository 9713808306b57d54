"""Who is calling, and may they: a bearer API token or the Django session, then a role check.

Each operation's ``auth`` is ``requires(permission)``: the caller is identified by
``Authorization: Bearer dw_...`` or by the session cookie (with CSRF on unsafe methods), then
checked against a rule from ``apps.workflows.roles``. Nobody identified: 401; identified but not
allowed: 403, decided before the request body is even read. Wrong tokens count as failed sign-ins
of the client (django-axes): past the limit, 429 until the cool-off has passed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from axes.handlers.proxy import AxesProxyHandler
from django.contrib.auth.signals import user_login_failed
from django.http import HttpRequest, QueryDict
from django.utils.datastructures import MultiValueDict
from ninja.errors import AuthenticationError, AuthorizationError
from ninja.security import HttpBearer, SessionAuth

from apps.workflows.roles import can_edit_workflows, can_start_runs, can_view

from .services import api_token_user

Permission = Callable[[Any], bool]

ACTIONS: dict[Permission, str] = {
    can_view: "read workflows and runs",
    can_start_runs: "start runs",
    can_edit_workflows: "create or change workflows",
}


def permitted(user: Any, permission: Permission) -> Any:
    """The user, when the permission allows them; raises AuthorizationError (403) otherwise."""
    if not permission(user):
        raise AuthorizationError(message=f"user '{user.get_username()}' may not {ACTIONS[permission]}")
    return user


class ApiTokenAuth(HttpBearer):
    """``Authorization: Bearer dw_...``: looked up by its SHA-256 in ApiToken."""

    def __init__(self, permission: Permission):
        self.permission = permission
        super().__init__()

    def authenticate(self, request: HttpRequest, token: str) -> Any:
        # Guessing tokens is throttled like guessing passwords: each wrong token is a failed
        # sign-in of this client for django-axes, and past the limit the client is refused, valid
        # token or not, until the cool-off has passed (AxesMiddleware answers 429 with Retry-After).
        if not AxesProxyHandler.is_allowed(request, {}):
            request.axes_locked_out = True
            raise AuthenticationError(message="too many failed API token attempts")
        user = api_token_user(token=token)
        if user is None:  # a wrong token is an answer, not a reason to try the session instead
            # axes records request.POST with each failure; an API body is JSON or YAML, never a form,
            # and parsing it as one (a multipart type without a boundary) would be a 500 here.
            request._post, request._files = QueryDict(), MultiValueDict()
            user_login_failed.send(sender=__name__, credentials={}, request=request)
            raise AuthenticationError(message="the API token is not valid")
        return permitted(user, self.permission)


class SessionCookieAuth(SessionAuth):
    """ninja's session auth (``django_auth``), which checks CSRF on unsafe methods."""

    def __init__(self, permission: Permission):
        self.permission = permission
        super().__init__(csrf=True)

    def _get_key(self, request: HttpRequest) -> str | None:
        # Without a signed-in session there is nothing to forge: answer 401, not a CSRF 403.
        if not request.user.is_authenticated:
            return None
        return super()._get_key(request)

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        user = super().authenticate(request, key)
        return permitted(user, self.permission) if user else None


def requires(permission: Permission) -> list[ApiTokenAuth | SessionCookieAuth]:
    """The ``auth`` of an operation that needs ``permission``: a token first, then the session."""
    return [ApiTokenAuth(permission), SessionCookieAuth(permission)]
