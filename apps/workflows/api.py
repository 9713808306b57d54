"""Workflows over the JSON API. Reading needs ``can_view``; saving a definition ``can_edit_workflows``.

The request body of ``POST /workflows`` is the engine's ``WorkflowSpec`` itself: the API keeps no
second copy of a definition's shape.
"""

from datetime import datetime
from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from ninja import Router, Schema
from ninja.responses import Status

from apps.api.auth import requires
from apps.api.problems import problem_responses
from apps.engine.spec import WorkflowSpec

from .models import Workflow, WorkflowVersion
from .roles import can_edit_workflows, can_view
from .selectors import version_get, version_list, workflow_get, workflow_list_with_latest_number
from .services import workflow_save

router = Router(tags=["workflows"], auth=requires(can_view))


def _username(user: Any) -> str | None:
    return user.get_username() if user else None


class WorkflowOut(Schema):
    name: str
    description: str
    latest_version: int | None
    created_at: datetime
    updated_at: datetime

    @staticmethod
    def resolve_latest_version(workflow: Workflow) -> int | None:
        return workflow.latest_number


class WorkflowVersionSummaryOut(Schema):
    number: int
    content_hash: str
    created_at: datetime
    created_by: str | None

    @staticmethod
    def resolve_created_by(version: WorkflowVersion) -> str | None:
        return _username(version.created_by)


class WorkflowVersionOut(Schema):
    workflow: str
    number: int
    content_hash: str
    created_at: datetime
    created_by: str | None
    definition: WorkflowSpec

    @staticmethod
    def resolve_workflow(version: WorkflowVersion) -> str:
        return version.workflow.name

    @staticmethod
    def resolve_created_by(version: WorkflowVersion) -> str | None:
        return _username(version.created_by)


class WorkflowDetailOut(Schema):
    name: str
    description: str
    created_at: datetime
    updated_at: datetime
    versions: list[WorkflowVersionSummaryOut]
    latest: WorkflowVersionOut

    @staticmethod
    def resolve_versions(workflow: Workflow) -> QuerySet[WorkflowVersion]:
        return version_list(workflow=workflow)

    @staticmethod
    def resolve_latest(workflow: Workflow) -> WorkflowVersion:
        return version_get(workflow=workflow)


class WorkflowSaveOut(Schema):
    created: bool
    version: WorkflowVersionOut


BODY_PROBLEMS = problem_responses(400, 413, 422)


@router.post(
    "/workflows",
    response={200: WorkflowSaveOut, 201: WorkflowSaveOut, **BODY_PROBLEMS},
    auth=requires(can_edit_workflows),
    summary="Save a workflow definition",
)
def workflow_create(request: HttpRequest, spec: WorkflowSpec, response: HttpResponse) -> Status:
    """Save a definition: a new workflow or a new version (201), or the identical version again (200)."""
    version, created = workflow_save(spec=spec, user=request.auth)
    response["Location"] = reverse("api:workflow_version_get", kwargs={"name": version.workflow.name, "number": version.number})
    return Status(201 if created else 200, {"created": created, "version": version})


@router.get("/workflows", response={200: list[WorkflowOut], **problem_responses()}, summary="List workflows")
def workflow_list_get(request: HttpRequest) -> QuerySet[Workflow]:
    """Every workflow, by name, with the number of its latest version."""
    return workflow_list_with_latest_number()


@router.get("/workflows/{name}", response={200: WorkflowDetailOut, **problem_responses(404)}, summary="Get a workflow")
def workflow_get_one(request: HttpRequest, name: str) -> Workflow:
    """A workflow with the list of its versions, newest first, and its latest definition."""
    return workflow_get(name=name)


@router.get("/workflows/{name}/versions/{int:number}", response={200: WorkflowVersionOut, **problem_responses(404)}, summary="Get a workflow version")
def workflow_version_get(request: HttpRequest, name: str, number: int) -> WorkflowVersion:
    """One immutable version of a workflow, with its definition."""
    return version_get(workflow=workflow_get(name=name), number=number)
