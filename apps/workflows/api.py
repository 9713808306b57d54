"""Workflows over the JSON API. Reading needs ``can_view``; saving, publishing and validating a
definition ``can_edit_workflows``.

The request body of ``POST /workflows`` is the engine's ``WorkflowSpec`` itself, as JSON or as
YAML (``Content-Type: application/yaml`` or ``text/yaml``): the API keeps no second copy of a
definition's shape. A save publishes its version unless ``?publish=false`` (the default keeps
what clients relied on before drafts existed); ``?expected_published=N`` (0: none) refuses the
save with a 409 when someone published another version since the client looked.
"""

from datetime import datetime
from typing import Annotated, Any, Literal

from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from ninja import Field, Router, Schema
from ninja.responses import Status
from pydantic import ConfigDict

from apps.api.auth import requires
from apps.api.bounds import MAX_INT32, Number
from apps.api.problems import UnknownReference, problem_response, problem_responses
from apps.engine.spec import WorkflowSpec

from .models import Workflow, WorkflowVersion
from .roles import can_edit_workflows, can_view
from .selectors import version_diff, version_get, version_latest, version_list, workflow_get, workflow_list_with_numbers
from .services import definition_validate, workflow_publish, workflow_save

router = Router(tags=["workflows"], auth=requires(can_view))


def _username(user: Any) -> str | None:
    return user.get_username() if user else None


class WorkflowOut(Schema):
    name: str
    description: str
    latest_version: int | None
    published_version: int | None = Field(description="What runs started without a version number run; null: nothing published.")
    published_by: str | None
    published_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @staticmethod
    def resolve_latest_version(workflow: Workflow) -> int | None:
        return workflow.latest_number

    @staticmethod
    def resolve_published_version(workflow: Workflow) -> int | None:
        return workflow.published_number

    @staticmethod
    def resolve_published_by(workflow: Workflow) -> str | None:
        return _username(workflow.published_by)


class WorkflowVersionSummaryOut(Schema):
    number: int
    content_hash: str
    created_at: datetime
    created_by: str | None
    published: bool

    @staticmethod
    def resolve_created_by(version: WorkflowVersion) -> str | None:
        return _username(version.created_by)

    @staticmethod
    def resolve_published(version: WorkflowVersion) -> bool:
        return version.pk == version.workflow.published_version_id


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
    published_version: int | None
    published_by: str | None
    published_at: datetime | None
    versions: list[WorkflowVersionSummaryOut]
    latest: WorkflowVersionOut
    published: WorkflowVersionOut | None

    @staticmethod
    def resolve_published_version(workflow: Workflow) -> int | None:
        return workflow.published_version.number if workflow.published_version_id else None

    @staticmethod
    def resolve_published_by(workflow: Workflow) -> str | None:
        return _username(workflow.published_by)

    @staticmethod
    def resolve_versions(workflow: Workflow) -> list[WorkflowVersion]:
        versions = list(version_list(workflow=workflow))
        for version in versions:
            version.workflow = workflow  # the summaries read the pointer: no query per version
        return versions

    @staticmethod
    def resolve_latest(workflow: Workflow) -> WorkflowVersion | None:
        return version_latest(workflow=workflow)

    @staticmethod
    def resolve_published(workflow: Workflow) -> WorkflowVersion | None:
        return version_get(workflow=workflow) if workflow.published_version_id else None


class WorkflowSaveOut(Schema):
    created: bool
    published: bool = Field(description="Whether this version is the published one now.")
    version: WorkflowVersionOut


BODY_PROBLEMS = problem_responses(400, 409, 413, 422)


@router.post(
    "/workflows",
    response={200: WorkflowSaveOut, 201: WorkflowSaveOut, **BODY_PROBLEMS},
    auth=requires(can_edit_workflows),
    summary="Save a workflow definition",
    # the same definition as YAML, read by apps.api.parser: one shape, two spellings
    openapi_extra={"requestBody": {"content": {t: {"schema": {"$ref": "#/components/schemas/WorkflowSpec"}} for t in ("application/yaml", "text/yaml")}}},
)
def workflow_create(
    request: HttpRequest,
    spec: WorkflowSpec,
    response: HttpResponse,
    publish: bool = True,
    expected_published: Annotated[int, Field(ge=0, le=MAX_INT32)] | None = None,
) -> Status:
    """Save a definition (JSON, or YAML with ``Content-Type: application/yaml``): a new workflow
    or a new version (201), or the identical version again (200). Published unless
    ``publish=false``; 409 when ``expected_published`` is no longer the published version."""
    version, created = workflow_save(spec=spec, user=request.auth, publish=publish, expected_published=expected_published)
    response["Location"] = reverse("api:workflow_version_get", kwargs={"name": version.workflow.name, "number": version.number})
    published = version.workflow.published_version_id == version.pk
    return Status(201 if created else 200, {"created": created, "published": published, "version": version})


class PublishIn(Schema):
    model_config = ConfigDict(extra="forbid")

    version: Number = Field(description="The version to publish; an older one than the published is a rollback.")
    expected_published: int | None = Field(None, ge=0, le=MAX_INT32, description="The version you saw published (0: none); 409 if another is by now.")


class ValidationProblemOut(Schema):
    pointer: str
    detail: str
    line: int | None
    column: int | None
    end_line: int | None = None
    end_column: int | None = None
    offset: int | None = None
    end_offset: int | None = None
    exact: bool = True


class ValidationNodeOut(Schema):
    id: str
    type: str
    depends_on: list[str]


class ValidationOut(Schema):
    valid: bool
    problems: list[ValidationProblemOut]
    nodes: list[ValidationNodeOut] = Field(description="The definition's nodes when it is valid (a graph preview draws them).")


TEXT_TYPES = frozenset({"application/yaml", "text/yaml", "application/x-yaml", "application/json", "text/plain"})


@router.post(
    "/workflows/validate",
    response={200: ValidationOut, **problem_responses(400, 413, 415)},
    auth=requires(can_edit_workflows),
    summary="Validate a definition without saving it",
    openapi_extra={"requestBody": {"content": {t: {"schema": {"type": "string"}} for t in sorted(TEXT_TYPES)}}},
)
def workflow_validate(request: HttpRequest) -> Any:
    """Check a YAML or JSON text exactly as a save would, models included, and answer every
    problem with its JSON pointer and its line and column in the text. Nothing is saved."""
    if request.content_type not in TEXT_TYPES:
        return problem_response(415, f"send the definition as text: one of {', '.join(sorted(TEXT_TYPES))}")
    try:
        text = request.body.decode()
    except UnicodeDecodeError:
        return problem_response(400, "the request body is not UTF-8 text", errors=[{"pointer": "", "detail": "not UTF-8"}])
    validation = definition_validate(text=text)
    nodes = [{"id": n.id, "type": n.type, "depends_on": n.depends_on} for n in validation.plan.spec.nodes] if validation.plan else []
    return {"valid": validation.ok, "problems": [p.as_dict() for p in validation.problems], "nodes": nodes}


@router.get("/workflows", response={200: list[WorkflowOut], **problem_responses()}, summary="List workflows")
def workflow_list_get(request: HttpRequest) -> QuerySet[Workflow]:
    """Every workflow, by name, with the numbers of its latest and its published version."""
    return workflow_list_with_numbers()


@router.get("/workflows/{name}", response={200: WorkflowDetailOut, **problem_responses(404)}, summary="Get a workflow")
def workflow_get_one(request: HttpRequest, name: str) -> Workflow:
    """A workflow with the list of its versions, newest first, its latest and its published definition."""
    return workflow_get(name=name)


@router.post(
    "/workflows/{name}/publish",
    response={200: WorkflowDetailOut, **problem_responses(400, 404, 409, 422)},
    auth=requires(can_edit_workflows),
    summary="Publish a version (or roll back to an older one)",
)
def workflow_publish_post(request: HttpRequest, name: str, payload: PublishIn) -> Workflow:
    """Make ``version`` the one runs use when they name none. 409 (who published which version and
    when) if ``expected_published`` is stale; concurrent publishes serialise on the workflow."""
    workflow = workflow_get(name=name)
    try:
        workflow_publish(workflow=workflow, version_number=payload.version, user=request.auth, expected_published=payload.expected_published)
    except WorkflowVersion.DoesNotExist:
        raise UnknownReference("/version", f"workflow '{name}' has no version {payload.version}") from None
    return workflow_get(name=name)


class TextSegmentOut(Schema):
    op: Literal["equal", "insert", "delete"]
    text: str


class FieldChangeOut(Schema):
    field: str
    pointer: str
    before: Any
    after: Any
    text: list[TextSegmentOut] | None
    added: list[Any] | None
    removed: list[Any] | None


class NodeChangeOut(Schema):
    id: str
    type: str
    changes: list[FieldChangeOut]


class DiffOut(Schema):
    workflow: str
    before: int
    after: int
    identical: bool
    added: list[dict[str, Any]] = Field(description="Node definitions in ``after`` only.")
    removed: list[dict[str, Any]] = Field(description="Node definitions in ``before`` only.")
    changed: list[NodeChangeOut]
    top: list[FieldChangeOut] = Field(description="Changes outside the nodes: description, input_schema, retry, budget.")
    unified: str = Field(description="The unified diff of both definitions as YAML.")


@router.get(
    "/workflows/{name}/versions/{int:before}/diff/{int:after}",
    response={200: DiffOut, **problem_responses(404)},
    summary="Compare two versions",
)
def workflow_version_diff(request: HttpRequest, name: str, before: Number, after: Number) -> dict[str, Any]:
    """What changed from version ``before`` to version ``after``: nodes added, removed and changed
    field by field (text fields as word diffs), top-level changes, and the unified YAML diff."""
    diff = version_diff(workflow=workflow_get(name=name), before=before, after=after)
    return {"workflow": name, "before": before, "after": after, **diff.as_dict()}


@router.get("/workflows/{name}/versions/{int:number}", response={200: WorkflowVersionOut, **problem_responses(404)}, summary="Get a workflow version")
def workflow_version_get(request: HttpRequest, name: str, number: Number) -> WorkflowVersion:
    """One immutable version of a workflow, with its definition."""
    return version_get(workflow=workflow_get(name=name), number=number)
