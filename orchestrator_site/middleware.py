"""Response headers every page gets: ``Permissions-Policy``, ``Cache-Control`` for signed-in
answers, and no ``Server`` banner from the application.

The Content-Security-Policy itself comes from django-csp (``CONTENT_SECURITY_POLICY`` in settings).
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils.cache import patch_cache_control


def security_headers(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    policy = ", ".join(f"{feature}={allowed}" for feature, allowed in settings.DAGWRIGHT_PERMISSIONS_POLICY.items())

    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        response.headers.setdefault("Permissions-Policy", policy)
        # A signed-in page (or an API answer to a token) shows what only that caller may read:
        # no shared cache keeps it and no browser stores it for the next person at this machine.
        if request.user.is_authenticated or "Authorization" in request.headers:
            patch_cache_control(response, private=True, no_store=True)
        # Which server and version answer is nobody's business; the WSGI server in front adds its
        # own unless the proxy strips it (see the README's production notes).
        if "Server" in response.headers:
            del response.headers["Server"]
        return response

    return middleware
