"""Runs over the JSON API. Reading needs ``can_view``; starting, cancelling, retrying and
re-running a run ``can_start_runs`` (operators and admins)."""

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID

from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from ninja import Field, Router, Schema
from ninja.pagination import paginate
from ninja.responses import Status
from pydantic import ConfigDict

from apps.api.auth import requires
from apps.api.bounds import IsoDate, Number, Page
from apps.api.problems import UnknownReference, problem_responses
from apps.engine.spec import Budget
from apps.providers.pricing import QUANTUM
from apps.providers.simulated import SimulationConfig
from apps.workflows.models import Workflow, WorkflowVersion
from apps.workflows.roles import can_start_runs, can_view
from apps.workflows.selectors import workflow_get

from .models import NodeRun, Run, RunStatus
from .operations import RerunPlan, UnknownNode, run_cancel, run_rerun_from, run_rerun_preview, run_retry_failed
from .selectors import cost_by_day, cost_by_workflow, run_get, run_nodes, run_table
from .services import run_start

router = Router(tags=["runs"], auth=requires(can_view))


def money(value: Decimal | int) -> str:
    """A cost as a plain decimal string with the model's 8 places, the same on every database."""
    return f"{Decimal(value).quantize(QUANTUM):f}"


class RunIn(Schema):
    model_config = ConfigDict(extra="forbid")

    workflow: str = Field(min_length=1, max_length=100, description="The workflow's name.")
    version: Number | None = Field(None, description="A version number; the published version when left out.")
    input: dict[str, Any] = Field(default_factory=dict, description="Checked against the workflow's input schema.")
    idempotency_key: str | None = Field(None, min_length=1, max_length=200, description="The same key from the same user returns the same run.")
    simulation: SimulationConfig | None = Field(None, description="Overrides for the simulated model provider.")
    budget: Budget | None = Field(None, description="Overrides the workflow's budget (max_tokens, max_cost), key by key.")


class NodeRunOut(Schema):
    node_id: str
    type: str
    status: str
    attempt: int
    input_hash: str
    output: Any
    error: str
    error_class: str
    model: str
    tokens_in: int
    tokens_out: int
    cost: str
    queued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    reused: bool = Field(description="Copied from the source run of a re-run: it did not execute here.")
    passed_over: list[dict[str, str]] = Field(description="Models of the node's fallback chain passed over, in order: {model, reason}.")

    @staticmethod
    def resolve_type(node_run: NodeRun) -> str:
        return node_run.node_type

    @staticmethod
    def resolve_cost(node_run: NodeRun) -> str:
        return money(node_run.cost)


class RunOut(Schema):
    id: UUID
    workflow: str
    version: int
    status: str
    tokens_in: int
    tokens_out: int
    cost: str
    error: str
    started_by: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    is_test: bool = Field(description="A test run of a draft: its models were answered by the simulated provider.")

    @staticmethod
    def resolve_workflow(run: Run) -> str:
        return run.workflow.name

    @staticmethod
    def resolve_version(run: Run) -> int:
        return run.version.number

    @staticmethod
    def resolve_cost(run: Run) -> str:
        return money(run.cost)

    @staticmethod
    def resolve_started_by(run: Run) -> str | None:
        return run.started_by.get_username() if run.started_by else None


class RunDetailOut(RunOut):
    input: dict[str, Any]
    budget_tokens: int | None = Field(description="The run's token limit; null: none.")
    budget_cost: str | None = Field(description="The run's cost limit in US dollars; null: none.")
    rerun_of: UUID | None = Field(description="The run this one re-runs from a node, if it is a re-run.")
    rerun_from_node: str
    nodes: list[NodeRunOut]

    @staticmethod
    def resolve_budget_cost(run: Run) -> str | None:
        return None if run.budget_cost is None else money(run.budget_cost)

    @staticmethod
    def resolve_rerun_of(run: Run) -> UUID | None:
        return run.rerun_of_id

    @staticmethod
    def resolve_nodes(run: Run) -> list[NodeRun]:
        return run_nodes(run=run)


def _workflow(name: str) -> Workflow:
    try:
        return workflow_get(name=name)
    except Workflow.DoesNotExist:
        raise UnknownReference("/workflow", f"no workflow named '{name}'") from None


def _options(payload: RunIn) -> dict[str, Any]:
    # Only what the caller set: the site's simulation defaults fill in the rest at execution.
    options = {"simulation": payload.simulation.model_dump(mode="json", exclude_unset=True)} if payload.simulation else {}
    if payload.budget:
        options["budget"] = payload.budget.model_dump(mode="json", exclude_none=True)
    return options


BODY_PROBLEMS = problem_responses(400, 409, 413, 422)


@router.post("/runs", response={200: RunDetailOut, 201: RunDetailOut, **BODY_PROBLEMS}, auth=requires(can_start_runs), summary="Start a run")
def run_create(request: HttpRequest, payload: RunIn, response: HttpResponse) -> Status:
    """Start a run (201). Repeating an idempotency key returns the run it started (200)."""
    asked_at = timezone.now()
    workflow = _workflow(payload.workflow)
    try:
        run = run_start(
            workflow=workflow,
            input=payload.input,
            version_number=payload.version,
            idempotency_key=payload.idempotency_key,
            started_by=request.auth,
            options=_options(payload),
        )
    except WorkflowVersion.DoesNotExist:
        raise UnknownReference("/version", f"workflow '{workflow.name}' has no version {payload.version or ''}".strip()) from None
    response["Location"] = reverse("api:run_get_one", kwargs={"run_id": run.id})
    # run_start does not say whether it created the run; one created before this request is a replay.
    return Status(201 if run.created_at >= asked_at else 200, run_get(run_id=run.id))


@router.get("/runs", response={200: list[RunOut], **problem_responses(422)}, summary="List runs")
@paginate(Page)
def run_list_get(request: HttpRequest, workflow: str | None = None, status: RunStatus | None = None, is_test: bool | None = None) -> Any:
    """Runs, newest first, optionally of one workflow, in one status, and test runs only
    (``is_test=true``) or none of them (``false``)."""
    return run_table(workflow=workflow, status=status, is_test=is_test)  # without the inputs and definitions it would not show


@router.get("/runs/{uuid:run_id}", response={200: RunDetailOut, **problem_responses(404)}, summary="Get a run")
def run_get_one(request: HttpRequest, run_id: UUID) -> Run:
    """A run with its input, totals and the state of each node in topological order."""
    return run_get(run_id=run_id)


# --- operations ---------------------------------------------------------------------------------


class RerunIn(Schema):
    model_config = ConfigDict(extra="forbid")

    node: str = Field(min_length=1, max_length=64, description="The node to execute again, with everything downstream of it.")


class RerunNodeOut(Schema):
    node_id: str
    type: str
    model: str
    tokens_in: int
    tokens_out: int
    cost: str = Field(description="Estimated, in US dollars.")
    basis: str = Field(description="recorded: the source run's tokens for this node; max_tokens: it never ran there (worst case); tool: no model call.")


class RerunPreviewOut(Schema):
    run: UUID
    node: str
    execute: list[RerunNodeOut] = Field(description="Nodes that execute again, in topological order.")
    reuse: list[str] = Field(description="Nodes whose stored outputs are reused: nothing is paid again for them.")
    estimated_cost: str


def _preview_out(rerun: RerunPlan) -> dict[str, Any]:
    execute = [{**vars(n), "cost": money(n.cost)} for n in rerun.execute]
    return {"run": rerun.run.id, "node": rerun.node_id, "execute": execute, "reuse": list(rerun.reuse), "estimated_cost": money(rerun.estimated_cost)}


OPERATION_PROBLEMS = problem_responses(404, 409)


@router.post("/runs/{uuid:run_id}/cancel", response={200: RunDetailOut, **OPERATION_PROBLEMS}, auth=requires(can_start_runs), summary="Cancel a run")
def run_cancel_post(request: HttpRequest, run_id: UUID) -> Any:
    """Cancel an active run: nodes not started are cancelled, running ones are abandoned. 409 if it is finished."""
    run_cancel(run=run_get(run_id=run_id), by=request.auth)  # RunStateConflict: 409 (apps.api.problems)
    return run_get(run_id=run_id)


@router.post("/runs/{uuid:run_id}/retry", response={200: RunDetailOut, **OPERATION_PROBLEMS}, auth=requires(can_start_runs), summary="Retry a failed run")
def run_retry_post(request: HttpRequest, run_id: UUID) -> Any:
    """Resume a failed run from its failed nodes, keeping what succeeded. 409 unless the run failed."""
    run_retry_failed(run=run_get(run_id=run_id), by=request.auth)  # RunStateConflict: 409 (apps.api.problems)
    return run_get(run_id=run_id)


@router.get(
    "/runs/{uuid:run_id}/rerun-preview",
    response={200: RerunPreviewOut, **problem_responses(404, 422)},
    auth=requires(can_start_runs),
    summary="Preview a re-run from a node",
)
def run_rerun_preview_get(request: HttpRequest, run_id: UUID, node: str) -> Any:
    """Which nodes a re-run from ``node`` executes again, which it reuses, and its estimated cost."""
    try:
        rerun = run_rerun_preview(run=run_get(run_id=run_id), node_id=node)
    except UnknownNode as exc:
        raise UnknownReference("", str(exc), parameter="node") from None
    return _preview_out(rerun)


@router.post(
    "/runs/{uuid:run_id}/rerun",
    response={201: RunDetailOut, **problem_responses(400, 404, 422)},
    auth=requires(can_start_runs),
    summary="Re-run from a node as a new run",
)
def run_rerun_post(request: HttpRequest, run_id: UUID, payload: RerunIn, response: HttpResponse) -> Status:
    """Start a new run of the same version and input that executes ``node`` and everything
    downstream of it again and reuses the other outputs of this run (201)."""
    try:
        new = run_rerun_from(run=run_get(run_id=run_id), node_id=payload.node, by=request.auth)
    except UnknownNode as exc:
        raise UnknownReference("/node", str(exc)) from None
    response["Location"] = reverse("api:run_get_one", kwargs={"run_id": new.id})
    return Status(201, run_get(run_id=new.id))


# --- costs --------------------------------------------------------------------------------------


class CostOut(Schema):
    key: str = Field(description="The day (YYYY-MM-DD, the site's time zone) or the workflow's name.")
    calls: int = Field(description="Provider calls made, failed attempts included.")
    tokens_in: int
    tokens_out: int
    cost: str = Field(description="In US dollars.")


@router.get("/costs", response={200: list[CostOut], **problem_responses(422)}, summary="Tokens and cost per day or per workflow")
def cost_list(
    request: HttpRequest, group: Literal["day", "workflow"] = "day", since: IsoDate | None = None, until: IsoDate | None = None, test_runs: bool = False
) -> Any:
    """What model calls made from ``since`` to ``until`` (inclusive dates) cost, per day (oldest
    first) or per workflow (costliest first). Answers reused from a cache cost nothing. Test runs
    (simulated drafts) are left out unless ``test_runs=true``."""
    totals = cost_by_day if group == "day" else cost_by_workflow
    rows = totals(since=since, until=until, test_runs=test_runs)
    return [{**row, "key": str(row[group]), "cost": money(row["cost"] or 0)} for row in rows]
