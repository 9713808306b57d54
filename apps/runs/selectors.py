from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from uuid import UUID

from django.db.models import Count, F, IntegerField, OuterRef, Q, QuerySet, Subquery, Sum, prefetch_related_objects
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from apps.workflows.models import Workflow, WorkflowVersion
from apps.workflows.selectors import version_list, workflow_list_with_published

from .models import ACTIVE_RUN_STATUSES, NodeRun, NodeStatus, ProviderCall, Run, RunEvent, RunStatus


def run_get(*, run_id: UUID | str) -> Run:
    return Run.objects.select_related("workflow", "version", "started_by").get(pk=run_id)


def run_list(*, workflow: str | None = None, status: str | None = None) -> QuerySet[Run]:
    runs = Run.objects.select_related("workflow", "version", "started_by").order_by("-created_at")
    if workflow:
        runs = runs.filter(workflow__name=workflow)
    if status:
        runs = runs.filter(status=status)
    return runs


def run_nodes(*, run: Run) -> list[NodeRun]:
    """The run's nodes in the workflow's topological order."""
    order = {node_id: i for i, node_id in enumerate(run.version.plan.order)}
    return sorted(run.node_runs.all(), key=lambda n: order.get(n.node_id, len(order)))


_HEX = frozenset("0123456789abcdef")


def run_id_prefix(text: str) -> str | None:
    """A run id prefix as PostgreSQL prints uuids (hyphenated, lower case), or None if it cannot be one.

    People paste ids with or without hyphens; the hyphens go back where a uuid has them so
    the same prefix matches on PostgreSQL (native uuid) and SQLite (hex without hyphens).
    """
    digits = text.strip().lower().replace("-", "")
    if not digits or len(digits) > 32 or not set(digits) <= _HEX:
        return None
    cuts = [c for c in (8, 12, 16, 20) if c < len(digits)]
    parts = [digits[a:b] for a, b in zip([0, *cuts], [*cuts, len(digits)], strict=True)]
    return "-".join(parts)


def run_table(
    *,
    workflow: str | None = None,
    status: str | None = None,
    id_prefix: str | None = None,
    started_by: str | None = None,
    created_from: date | None = None,
    created_to: date | None = None,
    is_test: bool | None = None,
    version_number: int | None = None,
) -> QuerySet[Run]:
    """Runs for a list page: ``run_list`` without the large JSON columns, optionally by id prefix,
    by who started them (a username, any case) and by the day they were created.

    An ``id_prefix`` that cannot be part of a uuid matches nothing. ``created_from`` and
    ``created_to`` are inclusive days in the site's time zone, compared as a range of instants
    so that the ``created_at`` indexes serve them. ``is_test`` True lists test runs only, False
    none of them, None both. ``version_number`` keeps the runs of that version (of the
    ``workflow`` when one is named).
    """
    runs = run_list(workflow=workflow, status=status).defer("input", "options", "version__definition")
    if id_prefix:
        prefix = run_id_prefix(id_prefix)
        runs = runs.filter(id__startswith=prefix) if prefix else runs.none()
    if started_by:
        runs = runs.filter(started_by__username__iexact=started_by)
    if created_from is not None:
        runs = runs.filter(created_at__gte=_start_of_day(created_from))
    if created_to is not None:
        runs = runs.filter(created_at__lt=_start_of_day(created_to + timedelta(days=1)))
    if is_test is not None:
        runs = runs.filter(is_test=is_test)
    if version_number is not None:
        runs = runs.filter(version__number=version_number)
    return runs


def _start_of_day(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def workflow_list_with_run_stats() -> QuerySet[Workflow]:
    """Workflows with their published version (see ``workflow_list_with_published``), ``runs_count``
    and ``last_run_status``, in one query."""
    runs = Run.objects.filter(workflow=OuterRef("pk"))
    counted = runs.order_by().values("workflow").annotate(n=Count("pk")).values("n")
    return workflow_list_with_published().annotate(
        runs_count=Coalesce(Subquery(counted, output_field=IntegerField()), 0),
        last_run_status=Subquery(runs.order_by("-created_at").values("status")[:1]),
        last_run_at=Subquery(runs.order_by("-created_at").values("created_at")[:1]),
    )


@dataclass(frozen=True)
class RunStats:
    total: int
    finished: int
    succeeded: int

    @property
    def success_rate(self) -> float | None:
        """Succeeded runs over finished runs (active runs do not count), or None if none finished."""
        return self.succeeded / self.finished if self.finished else None


def version_list_with_run_stats(*, workflow: Workflow) -> QuerySet[WorkflowVersion]:
    """The workflow's versions (``version_list``: newest first, no definitions), each annotated
    with its runs: ``runs_count``, ``finished_count`` and ``succeeded_count`` of the runs that are
    not test runs, and ``test_runs_count``; one query whatever the number of versions and runs."""
    real = Q(runs__is_test=False)
    return version_list(workflow=workflow).annotate(
        runs_count=Count("runs", filter=real),
        finished_count=Count("runs", filter=real & ~Q(runs__status__in=ACTIVE_RUN_STATUSES)),
        succeeded_count=Count("runs", filter=real & Q(runs__status=RunStatus.SUCCEEDED)),
        test_runs_count=Count("runs", filter=Q(runs__is_test=True)),
    )


def workflow_run_stats(*, workflow: Workflow) -> RunStats:
    counts = Run.objects.filter(workflow=workflow).aggregate(
        total=Count("pk"),
        finished=Count("pk", filter=~Q(status__in=ACTIVE_RUN_STATUSES)),
        succeeded=Count("pk", filter=Q(status=RunStatus.SUCCEEDED)),
    )
    return RunStats(**counts)


def workflow_recent_runs(*, workflow: Workflow, limit: int = 10) -> list[Run]:
    return list(run_table(workflow=workflow.name)[:limit])


def run_node_table(*, run: Run) -> list[NodeRun]:
    """``run_nodes`` without each node's rendered input (only the detail view shows it)."""
    order = {node_id: i for i, node_id in enumerate(run.version.plan.order)}
    rows = run.node_runs.defer("input")
    return sorted(rows, key=lambda n: order.get(n.node_id, len(order)))


def node_run_detail(*, run: Run, node_id: str) -> NodeRun:
    """One node of a run with its provider calls (every attempt, failed ones included) and, for a
    review gate, its review tasks (``reviews``) with their decisions."""
    node = run.node_runs.prefetch_related("calls").get(node_id=node_id)
    if node.node_type == "review":
        # apps.reviews' reverse relations, named rather than imported: runs sits below reviews.
        prefetch_related_objects([node], "reviews__decided_by", "reviews__decisions__reviewer")
    return node


def node_events(*, run: Run, node_id: str) -> list[RunEvent]:
    """Everything the event log says about one node of the run, oldest first."""
    return list(RunEvent.objects.filter(run=run, node_id=node_id).order_by("id"))


def node_idempotency_key(*, run_id: UUID | str, node_id: str) -> str:
    """The idempotency key a tool node receives: stable per (run, node), whatever the attempt
    (``apps.runs.executors.execute_tool`` hands tools this same key)."""
    return f"{run_id}:{node_id}"


@dataclass(frozen=True)
class AttemptStep:
    """One attempt of a node, as the event log tells it: when it started, how it ended, and
    when the next one was due (a retry's backoff, or a deferral while a circuit was open)."""

    attempt: int
    started_at: datetime | None = None
    ended_at: datetime | None = None
    outcome: str = "running"  # succeeded, failed, retrying, deferred, waiting_review, lease_expired
    error_class: str = ""
    error: str = ""
    next_attempt_at: datetime | None = None

    @property
    def duration(self) -> float | None:
        if self.started_at and self.ended_at:
            return (self.ended_at - self.started_at).total_seconds()
        return None


_ENDINGS = {
    "node_succeeded": "succeeded",
    "node_failed": "failed",
    "node_retrying": "retrying",
    "node_waiting_review": "waiting_review",
    "node_lease_expired": "lease_expired",
    "node_reviewed": "reviewed",  # a gate's decision: its data names the node's new status
}


def node_retry_timeline(events: list[RunEvent]) -> list[AttemptStep]:
    """A node's attempts in order, from its events (see ``node_events``); no query."""
    steps: dict[int, AttemptStep] = {}
    for event in events:
        if event.attempt is None or (event.kind != "node_started" and event.kind not in _ENDINGS):
            continue
        step = steps.get(event.attempt) or AttemptStep(attempt=event.attempt)
        if event.kind == "node_started":
            steps[event.attempt] = AttemptStep(attempt=event.attempt, started_at=event.created_at)
            continue
        data = event.data or {}
        outcome = "deferred" if event.kind == "node_retrying" and data.get("deferred") else _ENDINGS[event.kind]
        if event.kind == "node_reviewed":
            outcome = str(data.get("status") or outcome)
        due = data.get("next_attempt_at")
        steps[event.attempt] = AttemptStep(
            attempt=event.attempt,
            started_at=step.started_at,
            ended_at=event.created_at,
            outcome=outcome,
            error_class=data.get("error_class", ""),
            error=data.get("error", ""),
            next_attempt_at=datetime.fromisoformat(due) if isinstance(due, str) else None,
        )
    return sorted(steps.values(), key=lambda step: step.attempt)


def run_pending_reviews(*, run: Run, nodes: list[NodeRun]) -> dict[str, int]:
    """The pending review tasks of the run's gates that wait for one: ``{node_id: review id}``,
    in one query (none when no node waits for a review).

    Read through apps.reviews' reverse relation (runs sits below reviews and does not import
    it); "pending" is ReviewStatus.PENDING.
    """
    if not any(node.status == NodeStatus.WAITING_REVIEW for node in nodes):
        return {}
    return dict(run.reviews.filter(status="pending").order_by("created_at").values_list("node_id", "pk"))


def run_models(*, run: Run) -> list[str]:
    """The models the run's llm nodes call, from its pinned definition (no query)."""
    return sorted({node.model for node in run.version.plan.spec.nodes if node.type == "llm"})


# --- tokens and cost roll-ups ---------------------------------------------------------------------
# Per node and per run they are stored totals (NodeRun, Run). Per workflow and per day they are
# summed over ProviderCall, the record of what was actually paid: an answer reused from the cache
# or a re-run's source made no call, so it costs nothing here either.


def run_cost_by_node(*, run: Run) -> list[dict[str, Any]]:
    """Each node's model, tokens and cost in the run, in topological order."""
    fields = ("node_id", "model", "tokens_in", "tokens_out", "cost")
    order = {node_id: i for i, node_id in enumerate(run.version.plan.order)}
    return sorted(run.node_runs.values(*fields), key=lambda n: order.get(n["node_id"], len(order)))


def run_cost_totals(*, run: Run) -> dict[str, Any]:
    """The run's tokens and cost (kept up to date as each attempt completes)."""
    return {"tokens_in": run.tokens_in, "tokens_out": run.tokens_out, "cost": run.cost}


def _provider_calls(since: date | None, until: date | None, test_runs: bool) -> QuerySet[ProviderCall]:
    # A test run's calls are simulated (unless an admin asked for real providers): priced at the
    # named model's rate as an estimate, they are not spending and stay out unless asked for.
    calls = ProviderCall.objects.order_by() if test_runs else ProviderCall.objects.order_by().filter(run__is_test=False)
    if since is not None:
        calls = calls.filter(created_at__date__gte=since)
    if until is not None:
        calls = calls.filter(created_at__date__lte=until)
    return calls


_TOTALS = {"calls": Count("pk"), "tokens_in": Sum("tokens_in"), "tokens_out": Sum("tokens_out"), "cost": Sum("cost")}


def cost_by_day(*, since: date | None = None, until: date | None = None, test_runs: bool = False) -> list[dict[str, Any]]:
    """Calls, tokens and cost per day (in the site's time zone), oldest first, in one query.
    ``since`` and ``until`` are inclusive; test runs' calls only with ``test_runs``."""
    rows = _provider_calls(since, until, test_runs).annotate(day=TruncDate("created_at")).values("day").annotate(**_TOTALS)
    return list(rows.order_by("day"))


def cost_by_workflow(*, since: date | None = None, until: date | None = None, test_runs: bool = False) -> list[dict[str, Any]]:
    """Calls, tokens and cost per workflow, costliest first, in one query; test runs' calls only with ``test_runs``."""
    rows = _provider_calls(since, until, test_runs).values(workflow=F("run__workflow__name")).annotate(**_TOTALS)
    return list(rows.order_by("-cost", "workflow"))
