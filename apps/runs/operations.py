"""Operations on runs, for operators and admins: cancel, retry a failed run in place, re-run from
a node as a new run (with a preview of what executes again and what it may cost).

They follow the execution contract of ``services``: the run's lock, compare-and-set on node rows,
events through signals in the same transaction, messages sent after commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from apps.engine.graph import Plan
from apps.providers.pricing import call_cost

from . import budgets, signals, telemetry
from .models import ACTIVE_RUN_STATUSES, NodeRun, NodeStatus, Run, RunStatus
from .services import node_runs_dispatch, node_runs_lock, run_advance, run_end, run_lock


class RunStateConflict(Exception):
    """The run is not in a state that allows the operation (cancel a finished run, retry a run
    that did not fail)."""

    def __init__(self, run: Run, message: str):
        self.run = run
        super().__init__(message)


class UnknownNode(LookupError):
    """The node is not in the workflow version the run pinned."""

    def __init__(self, run: Run, node_id: str):
        self.node_id = node_id
        super().__init__(f"workflow '{run.workflow.name}' v{run.version.number} has no node '{node_id}'")


# Nodes no worker is executing: cancelling the run cancels them. A node waiting for a review
# decision is one of them, since nothing else would ever end it.
# Only a failed run is retried in place: a cancelled run was stopped on purpose, and a run over
# its budget would only hit it again; both can be re-run from a node as a new run instead.
RETRYABLE_RUN_STATUSES = (RunStatus.FAILED,)


def _username(user: Any) -> str:
    return user.get_username() if getattr(user, "is_authenticated", False) else ""


def run_cancel(*, run: Run, by: Any) -> Run:
    """Cancel an active run. Takes the run's lock (``run_lock``) and the rows of its idle nodes.

    The run ends ``cancelled`` (compare-and-set from an active status, recording who cancelled in
    the event log and in ``error``); its pending, queued, retry-waiting and review-waiting nodes
    are cancelled, so nothing new is dispatched (claims refuse nodes of a finished run anyway).
    Running nodes are abandoned, not interrupted: their completion still records the node's own
    result (and its cost, which was paid) but advances nothing. Raises RunStateConflict when the
    run is already finished.
    """
    with transaction.atomic():
        locked = run_lock(run.pk)
        if locked.status not in ACTIVE_RUN_STATUSES:
            raise RunStateConflict(locked, f"the run is already over ({locked.status.replace('_', ' ')}): only an active run can be cancelled")
        who = _username(by)
        error = f"cancelled by {who}" if who else "cancelled"
        signals.run_cancelled.send(sender=Run, run=locked, by=by)
        run_end(locked, RunStatus.CANCELLED, error, reason=error)
    run.status, run.error, run.finished_at = locked.status, locked.error, locked.finished_at
    return run


def run_retry_failed(*, run: Run, by: Any) -> Run:
    """Resume a failed run in place. Takes the run's lock and the rows of the nodes it resets.

    Its failed nodes, and the nodes cancelled because of the failure, go back to pending; the run
    goes back to running and advances (ready nodes are queued, and sent after commit). Succeeded
    nodes are kept with their outputs: nothing they did is paid for again. ``attempt`` is the
    fencing token and never goes back: a reset node keeps it and records the attempts spent so
    far in ``attempt_base``, so it gets its retry policy's ``max_attempts`` afresh (its next claim
    is attempt + 1). Raises RunStateConflict unless the run failed.
    """
    with transaction.atomic():
        locked = run_lock(run.pk)
        if locked.status not in RETRYABLE_RUN_STATUSES:
            raise RunStateConflict(locked, f"the run is {locked.status.replace('_', ' ')}: only a failed run can be retried")
        again = node_runs_lock(locked, (NodeStatus.FAILED, NodeStatus.CANCELLED))
        NodeRun.objects.filter(run=locked, node_id__in=again, status__in=(NodeStatus.FAILED, NodeStatus.CANCELLED)).update(
            status=NodeStatus.PENDING, attempt_base=F("attempt") - F("deferrals"), error="", error_class="",
            queued_at=None, started_at=None, finished_at=None, next_attempt_at=None, lease_expires_at=None,
        )  # fmt: skip
        Run.objects.filter(pk=locked.pk, status=RunStatus.FAILED).update(status=RunStatus.RUNNING, finished_at=None, error="")
        locked.status = RunStatus.RUNNING
        signals.run_retried.send(sender=Run, run=locked, by=by, node_ids=again)
        node_runs_dispatch(run_advance(locked, locked.version.plan))
    run.status, run.error, run.finished_at = RunStatus.RUNNING, "", None
    return run


# A prompt's tokens, roughly, when the node never ran and nothing measured them.
CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class RerunNode:
    """A node that executes again, with the estimated cost of its model call.

    ``basis`` says where the estimate comes from: ``recorded`` (the tokens the source run
    recorded for this node, at today's prices), ``max_tokens`` (the node never ran there: its
    prompt's length for the input and its ``max_tokens`` for the output, a worst case), or
    ``tool`` (no model call, nothing to pay).
    """

    node_id: str
    type: str
    model: str
    tokens_in: int
    tokens_out: int
    cost: Decimal
    basis: str


@dataclass(frozen=True)
class RerunPlan:
    """What a re-run from ``node_id`` would do: the nodes that execute again (the node and all
    its descendants, plus any node that had not succeeded in the source run) in topological
    order, and the nodes whose outputs are reused."""

    run: Run
    node_id: str
    execute: tuple[RerunNode, ...]
    reuse: tuple[str, ...]

    @property
    def estimated_cost(self) -> Decimal:
        return sum((n.cost for n in self.execute), Decimal(0))


def _estimate(plan: Plan, node_id: str, row: NodeRun | None) -> RerunNode:
    node = plan.node(node_id)
    if node.type != "llm":
        return RerunNode(node_id, node.type, "", 0, 0, Decimal(0), "tool")
    if row is not None and (row.tokens_in or row.tokens_out):
        model = row.model or node.model
        return RerunNode(node_id, node.type, model, row.tokens_in, row.tokens_out, call_cost(model, row.tokens_in, row.tokens_out), "recorded")
    rendered = row.input if row is not None and row.input else {"prompt": node.prompt, "system": node.system}
    prompt = f"{rendered.get('prompt', '')}{rendered.get('system', '')}"
    tokens_in = -(-len(prompt) // CHARS_PER_TOKEN)
    return RerunNode(node_id, node.type, node.model, tokens_in, node.max_tokens, call_cost(node.model, tokens_in, node.max_tokens), "max_tokens")


def _rerun_plan(run: Run, node_id: str, rows: dict[str, NodeRun]) -> RerunPlan:
    plan = run.version.plan
    if node_id not in plan.deps:
        raise UnknownNode(run, node_id)
    # A node runs again when it is the chosen one, had no output to reuse, or is downstream of one.
    again: set[str] = set()
    for n in plan.order:  # topological: a node's ancestors are decided before it
        row = rows.get(n)
        if n == node_id or row is None or row.status != NodeStatus.SUCCEEDED or plan.ancestors[n] & again:
            again.add(n)
    execute = tuple(_estimate(plan, n, rows.get(n)) for n in plan.order if n in again)
    return RerunPlan(run=run, node_id=node_id, execute=execute, reuse=tuple(n for n in plan.order if n not in again))


def _source_nodes(run: Run) -> dict[str, NodeRun]:
    return {row.node_id: row for row in NodeRun.objects.filter(run=run)}


def run_rerun_preview(*, run: Run, node_id: str) -> RerunPlan:
    """What ``run_rerun_from`` would execute again and reuse, and what it would cost. Takes no lock
    and writes nothing; raises UnknownNode."""
    return _rerun_plan(run, node_id, _source_nodes(run))


def _reused_node(new: Run, source: NodeRun, now: datetime) -> NodeRun:
    # Succeeded with attempt 0: never claimed here. Tokens and cost stay 0: nothing is paid again.
    return NodeRun(
        run=new, node_id=source.node_id, node_type=source.node_type, status=NodeStatus.SUCCEEDED, output=source.output,
        input=source.input, input_hash=source.input_hash, model=source.model, finished_at=now,
    )  # fmt: skip


def run_rerun_from(*, run: Run, node_id: str, by: Any) -> Run:
    """Start a new run that executes ``node_id`` and everything downstream of it again, reusing
    the source run's other outputs. Takes no lock: the source run is only read, and the new run is
    invisible to workers until this transaction commits.

    The new run pins the same version and has the same input and options, links to its source
    (``rerun_of``, ``rerun_from_node``), and is started by ``by``. Reused nodes are created
    succeeded with the source's output, input, input hash and model, and 0 tokens and cost; the
    others start pending, and the run advances. Raises UnknownNode (nothing written).
    """
    with transaction.atomic():
        rows = _source_nodes(run)
        rerun = _rerun_plan(run, node_id, rows)
        user = by if getattr(by, "is_authenticated", False) else None
        budget_tokens, budget_cost = budgets.run_limits(run.version.plan.spec.budget, run.options)
        new = Run(
            workflow_id=run.workflow_id, version_id=run.version_id, input=run.input, options=run.options, started_by=user,
            rerun_of=run, rerun_from_node=node_id, budget_tokens=budget_tokens, budget_cost=budget_cost,
        )  # fmt: skip
        with telemetry.run_span(new, run.version.plan.spec.name, source=run.traceparent):  # a trace of its own, linked to its source's
            new.save(force_insert=True)
        now, plan = timezone.now(), run.version.plan
        reused = {n: _reused_node(new, rows[n], now) for n in rerun.reuse}
        NodeRun.objects.bulk_create([reused.get(n) or NodeRun(run=new, node_id=n, node_type=plan.node(n).type) for n in plan.order])
        signals.run_created.send(sender=Run, run=new)
        signals.run_rerun_created.send(sender=Run, run=new, source=run, node_id=node_id, by=by, reused=list(rerun.reuse))
        node_runs_dispatch(run_advance(new, plan))
    return new
