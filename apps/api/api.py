"""The JSON API: one NinjaAPI under ``/api/``, a router per app under ``/v1``, problems for every error.

OpenAPI is served at ``/api/openapi.json`` and the interactive docs at ``/api/docs``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from django.urls import URLPattern, URLResolver, re_path
from django.views.decorators.csrf import csrf_exempt
from ninja import NinjaAPI
from ninja.openapi.schema import OpenAPISchema

from apps.providers.api import router as providers_router
from apps.reviews.api import router as reviews_router
from apps.runs.api import router as runs_router
from apps.workflows.api import router as workflows_router
from apps.workflows.roles import can_view

from . import problems
from .auth import requires
from .parser import StrictJSONParser

DESCRIPTION = """Start and read workflow runs, publish workflow definitions, and decide review gates.

Authenticate with `Authorization: Bearer dw_...` (`manage.py create_api_token <username>`) or a
signed-in session (unsafe methods then need the `X-CSRFToken` header). Every error is an RFC 9457
`application/problem+json` document whose `errors` point into the request body."""


def _problem_view(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Answers that ninja gives outside its operations (a wrong method, the bare root) as problems."""

    @wraps(view)  # keeps ninja's csrf_exempt mark: CSRF is checked by the session auth instead
    def view_with_problems(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        refused = _nul_parameters(request, kwargs)
        if refused is not None:
            return refused
        try:
            response = view(request, *args, **kwargs)
        except Http404 as exc:
            return problems.on_not_found(request, exc)
        if response.status_code == 405 and response.get("Content-Type") != problems.MEDIA_TYPE:
            allowed = response["Allow"]
            response = problems.problem_response(405, f"{request.method} is not allowed here; use {allowed}")
            response["Allow"] = allowed
        return response

    return view_with_problems


def _nul_parameters(request: HttpRequest, path_params: dict[str, Any]) -> HttpResponse | None:
    # A NUL in a query or path parameter, like one in a body (.parser.refuse_nul), would reach the
    # database as a filter PostgreSQL refuses: a 422 for every operation, here, before any of them.
    params = [*((k, str(v)) for k, v in path_params.items()), *((k, v) for k, values in request.GET.lists() for v in values)]
    names = sorted({name for name, value in params if "\x00" in name or "\x00" in value})
    if not names:
        return None
    errors = [{"parameter": name.replace("\x00", "\\u0000"), "detail": "a parameter cannot hold a NUL character (\\u0000)"} for name in names]
    return problems.problem_response(422, problems.summary(errors), kind="invalid-request", title="The request does not match the API's schema", errors=errors)


@csrf_exempt
def _no_endpoint(request: HttpRequest) -> HttpResponse:
    return problems.on_not_found(request, Http404())


def _problems_as_problem_json(schema: dict[str, Any]) -> None:
    # ninja documents every answer as application/json; error answers are problem+json
    for operations in schema["paths"].values():
        for operation in operations.values():
            for status, answer in operation["responses"].items():
                if int(status) >= 400 and "application/json" in answer.get("content", {}):
                    answer["content"] = {problems.MEDIA_TYPE: answer["content"]["application/json"]}


class DagwrightAPI(NinjaAPI):
    def get_openapi_schema(self, *, path_prefix: str | None = None, path_params: dict[str, Any] | None = None) -> OpenAPISchema:
        schema = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        _problems_as_problem_json(schema)
        return schema

    @property
    def urls(self) -> tuple[list[URLPattern | URLResolver], str, str]:
        patterns, app_name, namespace = super().urls
        for pattern in patterns:
            if isinstance(pattern, URLPattern):
                pattern.callback = _problem_view(pattern.callback)
        # last: any other path under /api/ is a 404 problem, not Django's HTML page
        return [*patterns, re_path(r"", _no_endpoint, name="no-endpoint")], app_name, namespace


api = DagwrightAPI(
    title="Dagwright API",
    version="1",
    description=DESCRIPTION,
    urls_namespace="api",
    auth=requires(can_view),  # the default; operations that change something ask for more
    parser=StrictJSONParser(),
)
problems.install(api)
api.add_router("/v1", workflows_router)
api.add_router("/v1", runs_router)
api.add_router("/v1", providers_router)
api.add_router("/v1", reviews_router)
