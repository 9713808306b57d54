"""RFC 9457 problem details: every error the API answers is mapped here, and only here.

A problem is ``{type, title, status, detail, errors}``. Each item of ``errors`` locates one thing
wrong with the request: ``{pointer, detail}`` with an RFC 6901 JSON pointer into the request body
(``/input/topic``, ``/nodes/2/depends_on/0``), or ``{parameter, detail}`` for a query or path
parameter. Problems are served as ``application/problem+json``; a stack trace never is.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist, RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI, Schema
from ninja.errors import AuthenticationError, HttpError, ValidationError

from apps.engine.definition import pydantic_problems
from apps.engine.errors import DefinitionError, InputError, Problem
from apps.reviews.services import DecisionInvalid, ReviewConflict, ReviewForbidden, ReviewNotFound
from apps.runs.operations import RunStateConflict
from apps.runs.services import IdempotencyConflict
from apps.workflows.models import WorkflowNotPublished
from apps.workflows.services import PublishConflict

from .parser import BodyRefused, YAMLBodyError, is_yaml, parse_yaml

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
# Problem types are URIs (RFC 9457 3.1.1); tag URIs name them without promising a page to fetch.
TYPE_PREFIX = "tag:dagwright.dev,2026:problem:"
MAX_DETAIL_MESSAGES = 3


class ProblemErrorOut(Schema):
    pointer: str | None = None
    parameter: str | None = None
    detail: str
    line: int | None = None  # where in a YAML or JSON text body, when the problem is about one (1-based)
    column: int | None = None


class ProblemOut(Schema):
    type: str
    title: str
    status: int
    detail: str
    errors: list[ProblemErrorOut]


def problem_responses(*statuses: int) -> dict[int, type[Schema]]:
    """The problems an operation may answer besides 401, 403, 422, 429 and 500, for the OpenAPI document.

    Any operation may answer 422: a parameter past its range, or a NUL in any parameter
    (apps.api.api refuses those before the operation runs); and 429: too many wrong tokens from the
    client (apps.api.auth)."""
    return dict.fromkeys(sorted({401, 403, 422, 429, 500, *statuses}), ProblemOut)


class UnknownReference(Exception):
    """The request names something that does not exist, such as a workflow or a version: in its
    body (``pointer``) or in a query parameter (``parameter``)."""

    def __init__(self, pointer: str, message: str, *, parameter: str = ""):
        self.problem = Problem(pointer, message)
        self.parameter = parameter
        super().__init__(message)


def problem_response(
    status: int, detail: str, *, kind: str = "", title: str = "", errors: Iterable[dict[str, str]] = (), extra: dict[str, Any] | None = None
) -> HttpResponse:
    """A problem+json response; without ``kind`` the type is ``about:blank`` and the title the status phrase.

    ``extra`` adds extension members (RFC 9457 3.2), such as who decided a review first; they
    never replace a standard member.
    """
    body = {
        **(extra or {}),
        "type": TYPE_PREFIX + kind if kind else "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "errors": list(errors),
    }
    return HttpResponse(json.dumps(body), status=status, content_type=MEDIA_TYPE)


def summary(errors: list[dict[str, str]]) -> str:
    """The first few errors in one line, each with where it is."""
    lines = [f"{e.get('pointer') or e.get('parameter') or 'body'}: {e['detail']}" for e in errors[:MAX_DETAIL_MESSAGES]]
    more = len(errors) - MAX_DETAIL_MESSAGES
    return "; ".join(lines) + (f"; and {more} more" if more > 0 else "")


def _problem_list(problems: list[Problem], status: int, kind: str, title: str, prefix: str = "") -> HttpResponse:
    errors = [{"pointer": prefix + p.pointer, "detail": p.message} for p in problems]
    return problem_response(status, summary(errors), kind=kind, title=title, errors=errors)


def _request_json(request: HttpRequest) -> Any:
    try:
        return parse_yaml(request.body) if is_yaml(request) else json.loads(request.body)
    except (ValueError, RequestDataTooBig):
        return None


def _body_errors(request: HttpRequest, errors: list[dict[str, Any]]) -> list[dict[str, str]]:
    # A body error's loc is ("body", <parameter name>, *path in the body). pydantic_problems drops
    # that prefix and, for a workflow definition, names the node the error is in.
    if errors and not request.body:
        return [{"pointer": "", "detail": "the request needs a JSON body"}]
    raw = _request_json(request)
    problems = [p for e in errors for p in pydantic_problems(raw, [e], prefix=tuple(e["loc"][:2]))]
    return [p.as_dict() for p in problems]


def _parameter_errors(errors: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{"parameter": ".".join(str(part) for part in e["loc"][1:]), "detail": e["msg"]} for e in errors]


def on_validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    in_body = [e for e in exc.errors if e["loc"][0] == "body"]
    errors = _body_errors(request, in_body) + _parameter_errors([e for e in exc.errors if e["loc"][0] != "body"])
    title = "The request does not match the API's schema"
    return problem_response(422, summary(errors), kind="invalid-request", title=title, errors=errors)


def on_definition_error(request: HttpRequest, exc: DefinitionError) -> HttpResponse:
    return _problem_list(exc.problems, 422, "invalid-definition", "The workflow definition is not valid")


def on_input_error(request: HttpRequest, exc: InputError) -> HttpResponse:
    return _problem_list(exc.problems, 422, "invalid-input", "The run input does not match the workflow's input schema", prefix="/input")


def on_unknown_reference(request: HttpRequest, exc: UnknownReference) -> HttpResponse:
    title = "The request refers to something that does not exist"
    if exc.parameter:
        errors = [{"parameter": exc.parameter, "detail": exc.problem.message}]
        return problem_response(422, summary(errors), kind="unknown-reference", title=title, errors=errors)
    return _problem_list([exc.problem], 422, "unknown-reference", title)


def on_run_state_conflict(request: HttpRequest, exc: RunStateConflict) -> HttpResponse:
    return problem_response(409, str(exc), kind="run-state-conflict", title="The run's state does not allow this")


def on_idempotency_conflict(request: HttpRequest, exc: IdempotencyConflict) -> HttpResponse:
    problem = Problem("/idempotency_key", str(exc))
    return _problem_list([problem], 409, "idempotency-conflict", "The idempotency key was used for a different request")


def on_publish_conflict(request: HttpRequest, exc: PublishConflict) -> HttpResponse:
    # Who published which version and when, in the detail for people and as members for programs.
    published_at = exc.published_at.isoformat() if exc.published_at else None
    extra = {"published_version": exc.published, "published_by": exc.published_by, "published_at": published_at, "expected_published": exc.expected}
    errors = [{"pointer": "/expected_published", "detail": str(exc)}]
    title = "Another version was published since you looked"
    return problem_response(409, str(exc), kind="publish-conflict", title=title, errors=errors, extra=extra)


def on_workflow_not_published(request: HttpRequest, exc: WorkflowNotPublished) -> HttpResponse:
    return _problem_list([Problem("/version", str(exc))], 409, "workflow-not-published", "The workflow has no published version")


def on_review_not_found(request: HttpRequest, exc: ReviewNotFound) -> HttpResponse:
    return problem_response(404, f"review {exc} not found")


def on_review_forbidden(request: HttpRequest, exc: ReviewForbidden) -> HttpResponse:
    return problem_response(403, f"user '{request.auth.get_username()}' may read review {exc} but not decide it: it is not assigned to them")


def on_review_conflict(request: HttpRequest, exc: ReviewConflict) -> HttpResponse:
    # Who decided and when, in the detail for people and as members for programs.
    decided_at = exc.decided_at.isoformat() if exc.decided_at else None
    when = f" at {decided_at}" if decided_at else ""
    detail = f"{exc} (decided by {exc.decided_by}{when})" if exc.decided_by else f"{exc} (closed{when})" if when else str(exc)
    extra = {"decided_by": exc.decided_by or None, "decided_at": decided_at, "review_status": exc.task.status, "version": exc.task.version}
    return problem_response(409, detail, kind="review-conflict", title="The review was decided or changed by someone else first", extra=extra)


def on_decision_invalid(request: HttpRequest, exc: DecisionInvalid) -> HttpResponse:
    return _problem_list(exc.problems, 422, "invalid-decision", "The decision cannot be taken as sent")


def _model_words(exc: ObjectDoesNotExist) -> str:
    model = type(exc).__qualname__.split(".")[0]  # "WorkflowVersion.DoesNotExist" -> "WorkflowVersion"
    return re.sub(r"(?<!^)(?=[A-Z])", " ", model).lower() if model != "ObjectDoesNotExist" else "object"


def on_not_found(request: HttpRequest, exc: Exception) -> HttpResponse:
    detail = f"{_model_words(exc)} not found" if isinstance(exc, ObjectDoesNotExist) else f"nothing at {request.path}"
    return problem_response(404, detail)


def on_authentication_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    default = "authentication required: send 'Authorization: Bearer <API token>', or sign in"
    response = problem_response(401, default if exc.message == "Unauthorized" else exc.message)
    response["WWW-Authenticate"] = 'Bearer realm="dagwright"'
    return response


def on_http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    detail = exc.message
    if isinstance(exc.__cause__, YAMLBodyError):
        cause = exc.__cause__
        detail = f"the request body is not valid YAML: {cause}"
        return problem_response(400, detail, errors=[{"pointer": "", "detail": cause.message, "line": cause.line, "column": cause.column}])
    if isinstance(exc.__cause__, BodyRefused):
        cause = exc.__cause__
        errors = [{"pointer": cause.pointer, "detail": cause.message}]
        return problem_response(422, summary(errors), kind="invalid-request", title="The request does not match the API's schema", errors=errors)
    if isinstance(exc.__cause__, ValueError):  # ninja's "Cannot parse request body": say why
        detail = f"the request body is not valid JSON: {exc.__cause__}"
    return problem_response(exc.status_code, detail)


def on_body_too_large(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    return problem_response(413, f"the request body is over the limit of {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes")


def on_unexpected_error(request: HttpRequest, exc: Exception) -> HttpResponse:
    log.error("unexpected error answering %s %s", request.method, request.path, exc_info=exc)
    return problem_response(500, "an unexpected error happened; it has been logged")


HANDLERS: dict[type[Exception], Callable[[HttpRequest, Any], HttpResponse]] = {
    ValidationError: on_validation_error,
    DefinitionError: on_definition_error,
    InputError: on_input_error,
    UnknownReference: on_unknown_reference,
    IdempotencyConflict: on_idempotency_conflict,
    RunStateConflict: on_run_state_conflict,
    PublishConflict: on_publish_conflict,
    WorkflowNotPublished: on_workflow_not_published,
    ReviewNotFound: on_review_not_found,
    ReviewForbidden: on_review_forbidden,
    ReviewConflict: on_review_conflict,
    DecisionInvalid: on_decision_invalid,
    ObjectDoesNotExist: on_not_found,
    Http404: on_not_found,
    AuthenticationError: on_authentication_error,
    HttpError: on_http_error,
    RequestDataTooBig: on_body_too_large,
    Exception: on_unexpected_error,
}


def install(api: NinjaAPI) -> None:
    """Answer every exception an operation raises with a problem (ninja looks handlers up by MRO)."""
    for exc_class, handler in HANDLERS.items():
        api.add_exception_handler(exc_class, handler)
