"""Run execution: starting runs, claiming and completing nodes, advancing the run.

The contract (shared/DESIGN.md): state lives here, in the database; every transition is a
compare-and-set with its RunEvent in the same transaction; the run advances in one place,
``_advance``, under a row lock on the run; Celery messages carry node-run ids only and are sent
after commit.
"""

from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from apps.engine import definition, retry, routing, scheduler
from apps.engine.canonical import content_hash
from apps.engine.errors import TemplateError
from apps.engine.graph import Plan
from apps.engine.spec import RetryPolicy
from apps.providers.registry import SIMULATE_ALL_MODELS
from apps.workflows.models import Workflow, WorkflowVersion
from apps.workflows.selectors import version_get, version_plan

from . import budgets, executors, signals, telemetry
from .leases import lease_kept, lease_until
from .models import ACTIVE_RUN_STATUSES, NodeRun, NodeStatus, Run, RunStatus

log = logging.getLogger(__name__)
_jitter = random.Random()  # backoff jitter needs no reproducibility, only spread
RUN_LOCK_FIELDS = ("id", "status", "version_id", "version__id", "version__content_hash")


class IdempotencyConflict(Exception):
    """The idempotency key was used before for a different request."""

    def __init__(self, run: Run):
        self.run = run
        super().__init__(f"idempotency key already used for run {run.id} with a different workflow or input")


def node_runs_dispatch(node_run_ids: list[int]) -> None:
    """Send the node runs to the broker once the transaction commits.

    A send that fails (the broker is down) is logged, not raised: the rows are committed by then,
    so raising would turn a started run into an error for its caller (who may start it again) and
    stop a worker's task halfway; the sweeper sends a queued node whose message never came again.
    """
    for node_run_id in node_run_ids:
        _send_on_commit(node_run_id)


def _send_on_commit(node_run_id: int, countdown: float | None = None) -> None:
    from .tasks import execute_node

    def send() -> None:
        execute_node.apply_async((node_run_id,), countdown=countdown)

    transaction.on_commit(telemetry.carry(send), robust=True)  # sent after commit, under the span current now


def run_start(
    *,
    workflow: Workflow,
    input: dict[str, Any],
    version_number: int | None = None,
    idempotency_key: str | None = None,
    started_by: Any = None,
    options: dict[str, Any] | None = None,
    is_test: bool = False,
) -> Run:
    """Validate the input, create the run and its node rows, and queue the first nodes.

    Without ``version_number`` the run pins the workflow's published version. The same
    ``idempotency_key`` from the same user returns the run it started the first time; raises
    InputError (nothing written), IdempotencyConflict, WorkflowVersion.DoesNotExist or
    WorkflowNotPublished. ``is_test`` marks a test run (use ``run_start_test``).
    """
    version = version_get(workflow=workflow, number=version_number)
    plan = version.plan
    definition.validate_input(plan.spec.input_schema, input)
    limits = budgets.run_limits(plan.spec.budget, options or {})  # a malformed budget override: InputError, nothing written
    user = started_by if getattr(started_by, "is_authenticated", False) else None
    if idempotency_key:
        existing = _idempotent_run(user, idempotency_key, version, input)
        if existing:
            return existing
    try:
        with transaction.atomic():
            return _create_run(plan, version, input, idempotency_key, user, options or {}, limits, is_test)
    except IntegrityError:
        existing = _idempotent_run(user, idempotency_key, version, input) if idempotency_key else None
        if existing is None:
            raise
        return existing


def run_start_test(
    *,
    workflow: Workflow,
    version_number: int,
    input: dict[str, Any],
    started_by: Any = None,
    real_providers: bool = False,
    simulation: dict[str, Any] | None = None,
) -> Run:
    """Start a test run of any version, published or not (a draft being edited): marked
    ``is_test`` and, unless ``real_providers``, with every model answered by the simulated
    provider (``apps.providers.registry.SIMULATE_ALL_MODELS``), so it costs nothing real.
    ``simulation`` tunes the simulated provider as a run's options do. Raises as ``run_start``."""
    options: dict[str, Any] = {} if real_providers else {SIMULATE_ALL_MODELS: True}
    if simulation:
        options["simulation"] = simulation
    return run_start(workflow=workflow, input=input, version_number=version_number, started_by=started_by, options=options, is_test=True)


def _idempotent_run(user: Any, key: str, version: WorkflowVersion, input: dict[str, Any]) -> Run | None:
    run = Run.objects.filter(started_by=user, idempotency_key=key).first()
    if run and (run.workflow_id != version.workflow_id or content_hash(run.input) != content_hash(input)):
        raise IdempotencyConflict(run)
    return run


def _create_run(
    plan: Plan,
    version: WorkflowVersion,
    input: dict[str, Any],
    key: str | None,
    user: Any,
    options: dict[str, Any],
    limits: tuple[int | None, Decimal | None],
    is_test: bool = False,
) -> Run:
    budget_tokens, budget_cost = limits
    run = Run(
        workflow_id=version.workflow_id, version=version, input=input, idempotency_key=key or None, started_by=user, options=options,
        budget_tokens=budget_tokens, budget_cost=budget_cost, is_test=is_test,
    )  # fmt: skip
    with telemetry.run_span(run, plan.spec.name):  # the run's root span: its traceparent goes in the row
        run.save(force_insert=True)
        NodeRun.objects.bulk_create([NodeRun(run=run, node_id=n, node_type=plan.node(n).type) for n in plan.order])
        signals.run_created.send(sender=Run, run=run)
        node_runs_dispatch(run_advance(run, plan))
    return run


def run_advance(run: Run, plan: Plan) -> list[int]:
    """Skip the nodes routing or trigger rules rule out, then queue the nodes that became ready,
    or finish the run. Caller holds the run's lock.

    ``scheduler.advance`` propagates skips through the whole graph in one pass, so one step is
    stable: nothing it skips can make another node ready that it did not report.
    Returns the ids of the node runs it queued; the caller dispatches them after commit.
    """
    rows = list(NodeRun.objects.filter(run=run).order_by().values_list("node_id", "status", "id"))  # no Meta ordering: no join
    states = {node_id: status for node_id, status, _ in rows}
    step = scheduler.advance(plan, states, _router_choices(run, plan, states))
    if step.skip:
        _nodes_skip(run, step, states)
    if step.outcome is not None:
        _run_finish(run, step.outcome)
        return []
    ready = step.ready
    _run_pause_or_resume(run, bool(ready) or any(s in BUSY_NODE_STATUSES for s in states.values()), states)
    if not ready:
        return []
    NodeRun.objects.filter(run=run, node_id__in=ready, status=NodeStatus.PENDING).update(status=NodeStatus.QUEUED, queued_at=timezone.now())
    if run.status == RunStatus.PENDING:
        Run.objects.filter(pk=run.pk, status=RunStatus.PENDING).update(status=RunStatus.RUNNING, started_at=timezone.now())
        run.status = RunStatus.RUNNING
        signals.run_started.send(sender=Run, run=run)
    signals.nodes_queued.send(sender=Run, run=run, node_ids=ready)
    ids = {node_id: pk for node_id, _, pk in rows}
    return [ids[n] for n in ready]


BUSY_NODE_STATUSES = frozenset({NodeStatus.QUEUED, NodeStatus.RUNNING, NodeStatus.RETRY_WAIT})


def _run_pause_or_resume(run: Run, busy: bool, states: dict[str, str]) -> None:
    """running -> waiting_review when nothing can go on but review gates; back when something can."""
    if run.status == RunStatus.RUNNING and not busy and NodeStatus.WAITING_REVIEW in states.values():
        if Run.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(status=RunStatus.WAITING_REVIEW):
            run.status = RunStatus.WAITING_REVIEW
            signals.run_paused.send(sender=Run, run=run)
    elif run.status == RunStatus.WAITING_REVIEW and busy and Run.objects.filter(pk=run.pk, status=RunStatus.WAITING_REVIEW).update(status=RunStatus.RUNNING):
        run.status = RunStatus.RUNNING
        signals.run_resumed.send(sender=Run, run=run)


def _router_choices(run: Run, plan: Plan, states: dict[str, str]) -> dict[str, str | None]:
    """The routes chosen by the routers that succeeded and still have a pending route; the only
    outputs the advance step reads, and only while they matter (no query otherwise)."""
    deciding = [r for r, routes in plan.routes.items() if states.get(r) == NodeStatus.SUCCEEDED and any(states.get(t) == NodeStatus.PENDING for t in routes)]
    if not deciding:
        return {}
    outputs = NodeRun.objects.filter(run=run, node_id__in=deciding).order_by().values_list("node_id", "output")
    return {node_id: routing.chosen_route(output) for node_id, output in outputs}


def _nodes_skip(run: Run, step: scheduler.Step, states: dict[str, str]) -> None:
    """Pending -> skipped (compare-and-set; pending rows only change under the run's lock)."""
    NodeRun.objects.filter(run=run, node_id__in=step.skip, status=NodeStatus.PENDING).update(status=NodeStatus.SKIPPED, finished_at=timezone.now())
    states.update(dict.fromkeys(step.skip, NodeStatus.SKIPPED))
    signals.nodes_skipped.send(sender=Run, run=run, node_ids=step.skip, reasons=step.reasons)


def _run_finish(run: Run, status: str) -> None:
    error = ""
    if status == RunStatus.FAILED:
        failed = NodeRun.objects.filter(run=run, status=NodeStatus.FAILED).order_by("finished_at").first()
        error = f"node '{failed.node_id}' failed: {failed.error}" if failed else "a node failed"
    run_end(run, status, error, reason="run failed")


IDLE_NODE_STATUSES = (NodeStatus.PENDING, NodeStatus.QUEUED, NodeStatus.RETRY_WAIT, NodeStatus.WAITING_REVIEW)


def node_runs_lock(run: Run, statuses: tuple[str, ...]) -> list[str]:
    """The run's nodes in these statuses, their rows locked: a claim racing with the operation
    either committed first (and the node is no longer listed) or waits and then finds the node
    changed (its compare-and-set fails)."""
    rows = NodeRun.objects.select_for_update().filter(run=run, status__in=statuses).order_by("id")
    return list(rows.values_list("node_id", flat=True))


def run_end(run: Run, status: str, error: str, *, reason: str) -> bool:
    """End an active run; the caller holds its lock. Its idle nodes (not started, waiting for a
    retry or a review) are cancelled first, rows locked; running nodes are abandoned, not
    interrupted: their completion records the node's own result and advances nothing. The run
    moves to ``status`` by compare-and-set; False when it was already over."""
    now = timezone.now()
    idle = node_runs_lock(run, IDLE_NODE_STATUSES) if status != RunStatus.SUCCEEDED else []
    if idle:
        NodeRun.objects.filter(run=run, node_id__in=idle, status__in=IDLE_NODE_STATUSES).update(
            status=NodeStatus.CANCELLED, finished_at=now, next_attempt_at=None
        )
        signals.nodes_cancelled.send(sender=Run, run=run, node_ids=idle, reason=reason)
    if not Run.objects.filter(pk=run.pk, status__in=ACTIVE_RUN_STATUSES).update(status=status, finished_at=now, error=error):
        return False
    run.status, run.error, run.finished_at = status, error, now
    signals.run_finished.send(sender=Run, run=run, status=status, error=error)
    return True


CLAIM_FIELDS = (
    *("run_id", "node_id", "status", "attempt", "deferrals", "attempt_base", "next_attempt_at", "passed_over"),
    *("run__version_id", "run__version__content_hash", "run__input", "run__options", "run__status", "run__budget_tokens", "run__budget_cost"),
    "run__traceparent",
)


def _claimable(row: dict[str, Any], now: datetime) -> bool:
    if row["status"] == NodeStatus.QUEUED:
        return True
    return row["status"] == NodeStatus.RETRY_WAIT and row["next_attempt_at"] is not None and row["next_attempt_at"] <= now


def node_run_claim(*, node_run_id: int) -> executors.Claim | None:
    """Take a node for one attempt (queued, or a retry that is due -> running, attempt + 1),
    with a lease, and render its input.

    Returns None when another worker already took it, its retry is not due yet, or its run is
    over. A node whose input cannot be rendered fails here, permanently.
    """
    now = timezone.now()
    row = NodeRun.objects.filter(pk=node_run_id).values(*CLAIM_FIELDS).first()
    if row is None or not _claimable(row, now):
        return None
    if row["run__status"] not in ACTIVE_RUN_STATUSES:
        _node_cancel_waiting(node_run_id, row["run_id"], row["node_id"])
        return None
    plan = version_plan(version_id=row["run__version_id"], content_hash=row["run__version__content_hash"])
    node = plan.node(row["node_id"])
    upstream = NodeRun.objects.filter(run_id=row["run_id"], node_id__in=plan.ancestors[node.id], status=NodeStatus.SUCCEEDED)
    outputs = dict(upstream.order_by().values_list("node_id", "output"))
    context = scheduler.upstream_context(plan, node.id, row["run__input"], outputs)
    try:
        prepared, render_error = executors.PREPARE[node.type](node, context), ""
    except TemplateError as exc:
        prepared, render_error = {}, f"template failed: {exc}"
    attempt = row["attempt"] + 1
    budgeted = row["run__budget_tokens"] is not None or row["run__budget_cost"] is not None
    claim = executors.Claim(
        node_run_id, row["run_id"], node, attempt, prepared, content_hash(prepared), row["run__options"], row["deferrals"], row["attempt_base"],
        tuple(row["passed_over"] or ()), budgeted, traceparent=row["run__traceparent"], workflow=plan.spec.name,
    )  # fmt: skip
    with transaction.atomic():
        won = NodeRun.objects.filter(pk=node_run_id, status=row["status"], attempt=row["attempt"]).update(
            status=NodeStatus.RUNNING, attempt=attempt, started_at=now, lease_expires_at=lease_until(now), input=prepared, input_hash=claim.input_hash
        )
        if not won:
            return None
        node_run = NodeRun(pk=node_run_id, run_id=row["run_id"], node_id=node.id, attempt=attempt)
        signals.node_started.send(sender=NodeRun, run=Run(pk=row["run_id"]), node_run=node_run)
    if render_error:
        node_run_complete(claim=claim, outcome=executors.Outcome(ok=False, error=render_error, error_class="template_error"))
        return None
    return claim


def _node_cancel_waiting(node_run_id: int, run_id: UUID, node_id: str) -> None:
    with transaction.atomic():
        waiting = NodeRun.objects.filter(pk=node_run_id, status__in=(NodeStatus.QUEUED, NodeStatus.RETRY_WAIT))
        if waiting.update(status=NodeStatus.CANCELLED, finished_at=timezone.now()):
            signals.nodes_cancelled.send(sender=Run, run=Run(pk=run_id), node_ids=[node_id], reason="run is over")


def run_lock(run_id: UUID) -> Run:
    """Lock the run row: the advance step runs one at a time per run.

    FOR NO KEY UPDATE OF the run alone: inserts that reference the run (events, provider calls)
    and other runs of the same version are not blocked.
    """
    runs = Run.objects.select_for_update(no_key=True, of=("self",)).select_related("version")
    return runs.only(*RUN_LOCK_FIELDS).get(pk=run_id)


def _attempt_result(claim: executors.Claim, outcome: executors.Outcome, policy: RetryPolicy, now: datetime) -> dict[str, Any]:
    """The row's new fields after this attempt: succeeded, failed, or waiting for a retry.

    The node's tokens and cost add up every attempt's calls; ``model`` is the last one called
    (on success, the model that produced the output). A retryable failure that spent the last
    attempt on a model moves on to the next model of the node's chain, with attempts afresh.
    """
    passed = [*claim.passed_over, *outcome.passed_over]
    chain = {"passed_over": passed} if outcome.passed_over else {}
    usage: dict[str, Any] = {"tokens_in": F("tokens_in") + outcome.tokens_in, "tokens_out": F("tokens_out") + outcome.tokens_out, **chain}
    usage["cost"] = F("cost") + outcome.cost
    if outcome.model:
        usage["model"] = outcome.model
    if outcome.ok:
        return {"status": NodeStatus.SUCCEEDED, "output": outcome.output, "error": "", "error_class": "", "finished_at": now, **usage}
    if outcome.awaits_review:
        return {"status": NodeStatus.WAITING_REVIEW, "error": "", "error_class": "", "lease_expires_at": None}
    errors = {"error": outcome.error, "error_class": outcome.error_class, "lease_expires_at": None}
    if outcome.deferred_until is not None:  # the call was never made: this attempt is not spent
        return {"status": NodeStatus.RETRY_WAIT, "deferrals": claim.deferrals + 1, "next_attempt_at": outcome.deferred_until, **errors, **chain}
    spent = claim.attempt - claim.deferrals - claim.attempt_base
    if retry.should_retry(policy, spent, outcome.retryable):
        delay = retry.retry_delay(policy, spent, _jitter, outcome.retry_after)
        return {"status": NodeStatus.RETRY_WAIT, "next_attempt_at": now + timedelta(seconds=delay), **errors, **usage}
    if outcome.retryable and _next_model(claim.node, passed, outcome.model):
        reason = f"{spent} attempts failed, the last with {outcome.error_class}: {outcome.error}"
        usage["passed_over"] = [*passed, {"model": outcome.model, "reason": reason}]
        return {"status": NodeStatus.RETRY_WAIT, "next_attempt_at": now, "attempt_base": claim.attempt - claim.deferrals, **errors, **usage}
    return {"status": NodeStatus.FAILED, "finished_at": now, **errors, **usage}


def _next_model(node: Any, passed: list[dict[str, str]], model: str) -> str | None:
    """The model after ``model`` in the node's chain that has not been passed over, if any."""
    if node.type not in ("llm", "router") or not model:
        return None
    chain = executors.model_chain(node)
    gone = {entry["model"] for entry in passed} | {model}
    later = chain[chain.index(model) + 1 :] if model in chain else []
    return next((m for m in later if m not in gone), None)


def node_run_complete(*, claim: executors.Claim, outcome: executors.Outcome) -> list[int]:
    """Record an attempt's outcome and advance the run, in one transaction under the run's lock.

    The write only lands while the claim still holds (status running, same attempt): a worker
    whose claim was taken over cannot overwrite anything. A retryable failure with attempts left
    waits in retry_wait until its ``next_attempt_at`` (a short wait is also sent as a Celery
    countdown; the sweeper catches the rest). Returns node-run ids newly queued.
    """
    now = timezone.now()
    with transaction.atomic():
        run = run_lock(claim.run_id)
        plan = run.version.plan
        fields = _attempt_result(claim, outcome, plan.spec.retry_policy(claim.node.id), now)
        if fields["status"] == NodeStatus.WAITING_REVIEW and run.status not in ACTIVE_RUN_STATUSES:
            # The run ended while this gate was being claimed: nobody may review for a dead run.
            fields = {"status": NodeStatus.CANCELLED, "finished_at": now, "lease_expires_at": None}
        won = NodeRun.objects.filter(pk=claim.node_run_id, status=NodeStatus.RUNNING, attempt=claim.attempt).update(**fields)
        if not won:
            log.info("node run %s attempt %s lost its claim; outcome dropped", claim.node_run_id, claim.attempt)
            return []
        # The run's tokens and cost were added when each call was stored (``budgets.budget_settle``).
        node_run = NodeRun(pk=claim.node_run_id, run_id=run.pk, node_id=claim.node.id, attempt=claim.attempt)
        _signal_outcome(run, node_run, outcome, fields, claim)
        if fields["status"] == NodeStatus.RETRY_WAIT:
            _schedule_retry(claim.node_run_id, (fields["next_attempt_at"] - now).total_seconds())
            return []
        if run.status not in ACTIVE_RUN_STATUSES:
            return []
        if fields["status"] == NodeStatus.FAILED and outcome.error_class == budgets.OVER_BUDGET:
            _run_stop_over_budget(run, claim.node.id, outcome.error)
            return []
        return run_advance(run, plan)


def _run_stop_over_budget(run: Run, node_id: str, reason: str) -> None:
    """The run ends ``budget_exceeded`` at once, whatever the graph could still do: the nodes not
    started are cancelled; nodes in flight finish (within their reservations) and advance nothing."""
    run_end(run, RunStatus.BUDGET_EXCEEDED, f"node '{node_id}' stopped the run: {reason}", reason="run over budget")


def _signal_outcome(run: Run, node_run: NodeRun, outcome: executors.Outcome, fields: dict[str, Any], claim: executors.Claim) -> None:
    if outcome.reused_call_id is not None:
        signals.provider_response_reused.send(sender=NodeRun, run=run, node_run=node_run, call_id=outcome.reused_call_id)
    if fields["status"] == NodeStatus.CANCELLED:
        signals.nodes_cancelled.send(sender=NodeRun, run=run, node_ids=[node_run.node_id], reason="run is over")
    elif fields["status"] == NodeStatus.WAITING_REVIEW:
        node_run.input, node_run.input_hash = claim.input, claim.input_hash
        signals.node_waiting_review.send(sender=NodeRun, run=run, node_run=node_run, node=claim.node)
    elif fields["status"] == NodeStatus.SUCCEEDED:
        signals.node_succeeded.send(sender=NodeRun, run=run, node_run=node_run)
    elif fields["status"] == NodeStatus.RETRY_WAIT:
        deferred = outcome.deferred_until is not None
        signals.node_retrying.send(
            sender=NodeRun, run=run, node_run=node_run, error=outcome.error, error_class=outcome.error_class,
            next_attempt_at=fields["next_attempt_at"], deferred=deferred,
        )  # fmt: skip
    else:
        signals.node_failed.send(sender=NodeRun, run=run, node_run=node_run, error=outcome.error, error_class=outcome.error_class)


def _schedule_retry(node_run_id: int, delay: float) -> None:
    """Send the retry as a countdown when it is short; a long wait is left to the sweeper, since
    a countdown longer than the broker's visibility timeout would be delivered twice."""
    if delay <= settings.DAGWRIGHT_MAX_COUNTDOWN_SECONDS:
        _send_on_commit(node_run_id, countdown=max(0.0, delay))


def node_run_review_decided(*, run: Run, node_id: str, attempt: int, decision: dict[str, Any], error: str = "") -> list[int]:
    """A review gate's decision lands: waiting_review -> succeeded with ``decision`` as its output,
    or failed with ``error`` (a rejection without an on_reject route), then the run advances.

    The caller holds the run's lock (``run_lock``) in its transaction and dispatches the returned
    node runs. Compare-and-set on (status, attempt): raises ReviewGateClosed when the gate no
    longer waits (the run was cancelled, or the decision already landed).
    """
    fields: dict[str, Any] = {"finished_at": timezone.now(), "output": decision}
    fields |= {"status": NodeStatus.FAILED, "error": error, "error_class": "review_rejected"} if error else {"status": NodeStatus.SUCCEEDED}
    waiting = NodeRun.objects.filter(run=run, node_id=node_id, status=NodeStatus.WAITING_REVIEW, attempt=attempt)
    node_run = waiting.only("pk", "node_id", "attempt").first()
    if node_run is None or not waiting.update(**fields):
        raise ReviewGateClosed(node_id)
    signals.node_reviewed.send(sender=NodeRun, run=run, node_run=node_run, decision=decision, status=fields["status"])
    if error:
        signals.node_failed.send(sender=NodeRun, run=run, node_run=node_run, error=error, error_class="review_rejected")
    else:
        signals.node_succeeded.send(sender=NodeRun, run=run, node_run=node_run)
    if run.status not in ACTIVE_RUN_STATUSES:
        return []
    return run_advance(run, run.version.plan)


class ReviewGateClosed(Exception):
    """The review gate no longer waits for a decision."""


def node_run_execute(*, node_run_id: int) -> None:
    """Claim, execute and complete a node; then run a lone successor here, without a broker hop.

    When several successors become ready, all but the first go to the broker and the first runs
    in this worker; each is claimed by compare-and-set, so a duplicate message is harmless.
    """
    next_id: int | None = node_run_id
    while next_id is not None:
        claiming = telemetry.now()
        claim = node_run_claim(node_run_id=next_id)
        if claim is None:
            return
        with telemetry.node_span(claim, claiming):  # a child of the run's span, from the claim to the completion
            with lease_kept(claim.node_run_id, claim.attempt):
                outcome = telemetry.attempt(claim, executors.execute)
            queued = node_run_complete(claim=claim, outcome=outcome)
            node_runs_dispatch(queued[1:])  # their messages carry this node's span: Celery's spans join the run's trace
        next_id = queued[0] if queued else None
