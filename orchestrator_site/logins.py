"""Login throttling (django-axes): who a client is, and what each failure counts against.

A failed console or admin sign-in counts against the username tried and against the client's
address; a failed API token (``apps.api.auth``) against the address alone, since a token names no
user. Past ``AXES_FAILURE_LIMIT`` failures on either count, attempts are refused for
``AXES_COOLOFF_TIME``; admins see and reset lockouts under Axes in the admin.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Max, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from apps.api.problems import problem_response


def client_address(request: HttpRequest) -> str:
    """The client's address: ``REMOTE_ADDR``, or behind ``DAGWRIGHT_TRUSTED_PROXIES`` proxies the
    address the outermost of them saw, from ``X-Forwarded-For``.

    Entries further left were written by the client itself and prove nothing, so only the one the
    last trusted proxy appended counts.
    """
    proxies = settings.DAGWRIGHT_TRUSTED_PROXIES
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    if proxies and len(forwarded) >= proxies:
        return forwarded[-proxies]
    return request.META.get("REMOTE_ADDR", "")


def client_username(request: HttpRequest, credentials: dict[str, Any] | None) -> str | None:
    """The username a failure counts against: from the credentials, else from the sign-in form.
    An API request names no user, and its body is never parsed here: a malformed one (a multipart
    type without a boundary) must be the API's 4xx, not an error inside the throttle."""
    if credentials:
        return credentials.get(settings.AXES_USERNAME_FORM_FIELD)
    if request.path.startswith("/api/") or request.method != "POST":
        return None
    return request.POST.get(settings.AXES_USERNAME_FORM_FIELD)


def lockout_parameters(request: Any, credentials: dict[str, Any] | None) -> list[str]:
    """A sign-in counts against its username and its client; a token failure (no username) against
    its client only: counted by a username of None it would lock every token client at once."""
    if credentials and credentials.get(settings.AXES_USERNAME_FORM_FIELD):
        return ["username", "ip_address"]
    return ["ip_address"]


def lockout_seconds(request: HttpRequest, credentials: dict[str, Any] | None) -> int:
    """Seconds until this client (or username) may try again: the cool-off counts from the latest
    recorded failure of the attempts that lock it (failures while locked out are not recorded)."""
    from axes.helpers import get_client_username, get_cool_off
    from axes.models import AccessAttempt

    clauses = Q(ip_address=client_address(request))
    username = get_client_username(request, credentials)
    if username:
        clauses |= Q(username=username)
    latest = AccessAttempt.objects.filter(clauses).aggregate(latest=Max("attempt_time"))["latest"]
    cool_off = get_cool_off(request) or timedelta(0)
    remaining = (latest + cool_off - timezone.now()).total_seconds() if latest else cool_off.total_seconds()
    return max(1, math.ceil(remaining))


def lockout_response(request: HttpRequest, original_response: HttpResponse | None = None, credentials: dict[str, Any] | None = None) -> HttpResponse:
    """What a refused sign-in gets, 429 with Retry-After: a page saying why, for how long and who
    can lift it; the API answers a problem document instead."""
    seconds = lockout_seconds(request, credentials)
    if request.path.startswith("/api/"):
        detail = f"too many failed API token attempts from this address: try again in {seconds} s, or ask an admin to reset the lockout"
        response = problem_response(429, detail, kind="too-many-attempts", title="Too many failed attempts")
        response["Retry-After"] = str(seconds)
        return response
    context = {"minutes": math.ceil(seconds / 60), "failure_limit": settings.AXES_FAILURE_LIMIT, "admin": request.path.startswith("/admin/")}
    response = render(request, "registration/locked_out.html", context, status=429)
    response["Retry-After"] = str(seconds)
    return response
