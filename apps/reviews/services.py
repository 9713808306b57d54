"""Review gates: open a task when a run reaches one, decide it, escalate it when overdue.

Lock order everywhere: the run (``run_lock``), then the review task. A decision commits in one
transaction with its audit entries and, when it is final, with the gate's node moving on and the
run's advance step; the nodes that became ready are dispatched after commit.
"""

from __future__ import annotations

import difflib
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone
from jsonschema import Draft202012Validator

from apps.audit.audit import audit_append
from apps.engine.canonical import canonical_json, not_json_data
from apps.engine.errors import Problem, json_pointer
from apps.engine.spec import LlmNode, ReviewNode, duration_seconds
from apps.runs.models import NodeRun, NodeStatus, ProviderCall, Run
from apps.runs.services import ReviewGateClosed, node_run_review_decided, node_runs_dispatch, run_lock

from .access import can_decide, can_read_all, can_view
from .models import DecisionKind, ReviewDecision, ReviewStatus, ReviewTask

log = logging.getLogger(__name__)
MAX_EDIT_BYTES = 256 * 1024
MAX_COMMENT_CHARS = 5000


class ReviewNotFound(Exception):
    """No such review, or not one this user may see."""


class ReviewForbidden(Exception):
    """The user may read this review but not decide it."""


class ReviewConflict(Exception):
    """The review was decided (or changed) by someone else first."""

    def __init__(self, task: ReviewTask, message: str):
        super().__init__(message)
        self.task = task
        last = task.decisions.select_related("reviewer").order_by("-ordinal").first()
        self.decided_by = last.actor if last else ""
        self.decided_at = last.created_at if last else task.decided_at


class DecisionInvalid(Exception):
    """The decision cannot be taken as sent: an edit that fails the schema, a rejection without a reason."""

    def __init__(self, problems: list[Problem]):
        super().__init__("; ".join(f"{p.pointer or '/'}: {p.message}" for p in problems))
        self.problems = problems


# --- opening --------------------------------------------------------------------------------


def review_task_open(*, run: Run, node_run: NodeRun, node: ReviewNode) -> ReviewTask:
    """Create the gate's ReviewTask, in the transaction that moves the node to waiting_review.

    Freezes what is to be approved (the node's rendered input) with its hash, and the context a
    reviewer needs: the run input, the upstream outputs, the model calls behind them and the cost
    so far. Idempotent per (node run, attempt).
    """
    existing = ReviewTask.objects.filter(node_run_id=node_run.pk, attempt=node_run.attempt).first()
    if existing:
        return existing
    full_run = Run.objects.select_related("version").get(pk=run.pk)
    plan = full_run.version.plan
    subject_spec = plan.node(node.subject_id)
    now = timezone.now()
    due_in = duration_seconds(node.due_in) if node.due_in else None
    task = ReviewTask.objects.create(
        run=full_run, node_run_id=node_run.pk, node_id=node.id, attempt=node_run.attempt, subject_node_id=node.subject_id,
        subject=node_run.input.get("output"), subject_hash=node_run.input_hash, current_output=node_run.input.get("output"),
        output_schema=subject_spec.output_schema if isinstance(subject_spec, LlmNode) else None,
        context=_context(full_run, plan.ancestors[node.id]), instructions=node.instructions,
        approvals_required=node.approvals_required, due_at=now + timedelta(seconds=due_in) if due_in else None, due_in_seconds=due_in,
        escalation=node.escalation.model_dump() if node.escalation else None, on_reject=node.on_reject or "",
    )  # fmt: skip
    users = list(get_user_model().objects.filter(username__in=node.assignees))
    groups = [Group.objects.get_or_create(name=name)[0] for name in node.groups]
    task.assigned_users.set(users)
    task.assigned_groups.set(groups)
    audit_append(event="created", review=task, after={"node": node.id, "subject": node.subject_id, "subject_hash": task.subject_hash})
    missing = sorted(set(node.assignees) - {u.get_username() for u in users})
    assignment = {"users": sorted(u.get_username() for u in users), "groups": sorted(node.groups), "unknown_users": missing}
    audit_append(event="assigned", review=task, after=assignment)
    return task


def _context(run: Run, ancestors: frozenset[str]) -> dict[str, Any]:
    upstream = NodeRun.objects.filter(run=run, node_id__in=ancestors, status=NodeStatus.SUCCEEDED).order_by("id")
    calls = ProviderCall.objects.filter(node_run__run=run, node_run__node_id__in=ancestors).order_by("id").values_list("pk", flat=True)
    spent = NodeRun.objects.filter(run=run).aggregate(cost=Sum("cost"), tokens_in=Sum("tokens_in"), tokens_out=Sum("tokens_out"))
    return {
        "input": run.input,
        "upstream": {n.node_id: n.output for n in upstream.only("node_id", "output")},
        "calls": list(calls),
        "cost_so_far": str(spent["cost"] or 0),
        "tokens_so_far": (spent["tokens_in"] or 0) + (spent["tokens_out"] or 0),
    }


# --- deciding -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """What a reviewer sends: ``kind`` approve | edit | reject; ``output`` the edit; ``version``
    the task version their page showed (None: whatever is current, e.g. a bulk decision)."""

    kind: str
    output: Any = None
    comment: str = ""
    version: int | None = None


def review_get(*, review_id: int, user: Any) -> ReviewTask:
    """The review if ``user`` may see it; raises ReviewNotFound otherwise (its existence is not revealed)."""
    task = ReviewTask.objects.select_related("run").filter(pk=review_id).first()
    if task is None or not can_view(user, task):
        raise ReviewNotFound(review_id)
    return task


def review_decide(*, review_id: int, user: Any, decision: Decision, client_address: str | None = None) -> ReviewTask:
    """Record one reviewer's decision. Takes the run's lock, then the task's.

    Raises ReviewNotFound, ReviewForbidden, DecisionInvalid (nothing written) or ReviewConflict
    (decided already, by this reviewer already, or the page was stale). The final approval or a
    rejection moves the gate on and advances the run in the same transaction.
    """
    task = review_get(review_id=review_id, user=user)
    _check_allowed(task, user)
    edited = _checked(task, decision)
    with transaction.atomic():
        run = run_lock(task.run_id)
        task = ReviewTask.objects.select_for_update().get(pk=review_id)
        _check_allowed(task, user)  # again under the lock: an escalation may have reassigned it since
        _check_current(task, decision, user)
        queued = _apply(task, run, user, decision, edited, client_address)
    node_runs_dispatch(queued)
    return task


def _check_allowed(task: ReviewTask, user: Any) -> None:
    if not can_decide(user, task):
        raise ReviewForbidden(task.pk) if can_read_all(user) else ReviewNotFound(task.pk)


def _checked(task: ReviewTask, decision: Decision) -> Any:
    """Validate the decision before any lock: an edit against the producing node's schema."""
    if decision.kind not in DecisionKind.values:
        raise DecisionInvalid([Problem("/decision", f"unknown decision '{decision.kind}' (approve, edit or reject)")])
    if len(decision.comment) > MAX_COMMENT_CHARS:
        raise DecisionInvalid([Problem("/comment", f"a comment is at most {MAX_COMMENT_CHARS} characters")])
    if "\x00" in decision.comment:
        raise DecisionInvalid([Problem("/comment", "a comment cannot hold a NUL character")])
    if decision.kind == DecisionKind.REJECT and not decision.comment.strip():
        raise DecisionInvalid([Problem("/comment", "a rejection needs a reason")])
    if decision.kind != DecisionKind.EDIT:
        return None
    return validate_edit(task, decision.output)


def validate_edit(task: ReviewTask, output: Any) -> Any:
    """The edited output if it may replace the original; raises DecisionInvalid with pointers."""
    found = not_json_data(output, max_values=100_000)
    if found:
        raise DecisionInvalid([Problem("/output" + json_pointer(found[0]), found[1])])
    if len(canonical_json(output).encode()) > MAX_EDIT_BYTES:
        raise DecisionInvalid([Problem("/output", f"the edit is over {MAX_EDIT_BYTES} bytes")])
    if task.output_schema is not None:
        errors = sorted(Draft202012Validator(task.output_schema).iter_errors(output), key=lambda e: list(e.absolute_path))
        if errors:
            raise DecisionInvalid([Problem("/output" + json_pointer(tuple(e.absolute_path)), e.message) for e in errors])
    elif isinstance(task.subject, str) and not isinstance(output, str):
        raise DecisionInvalid([Problem("/output", "the reviewed output is text: the edit must be text")])
    if output == task.current_output:
        raise DecisionInvalid([Problem("/output", "the edit changes nothing: approve instead")])
    return output


def _check_current(task: ReviewTask, decision: Decision, user: Any) -> None:
    if task.status != ReviewStatus.PENDING:
        raise ReviewConflict(task, f"this review was already {task.status}")
    if decision.version is not None and decision.version != task.version:
        raise ReviewConflict(task, f"this review changed since your page was loaded (version {decision.version}, now {task.version}): reload it")
    if decision.version is None and decision.kind != DecisionKind.REJECT and task.decisions.filter(decision=DecisionKind.EDIT).exists():
        # an approval sent without the version it saw (bulk, or the API) must not approve an edit
        # its sender has never been shown
        raise ReviewConflict(task, "this review was edited by an earlier approver: open it to see the edit before approving")
    if user is not None and task.decisions.filter(reviewer=user).exists():
        raise ReviewConflict(task, "you already approved this review; it waits for another reviewer")


def _apply(task: ReviewTask, run: Run, user: Any, decision: Decision, edited: Any, client_address: str | None, *, by_escalation: bool = False) -> list[int]:
    before = task.current_output
    after = edited if decision.kind == DecisionKind.EDIT else before
    reviewer = user if getattr(user, "is_authenticated", False) else None
    ReviewDecision.objects.create(
        task=task, ordinal=task.decisions.count() + 1, reviewer=reviewer, by_escalation=by_escalation, decision=decision.kind,
        original=before, edited=edited if decision.kind == DecisionKind.EDIT else None,
        diff=output_diff(before, after) if decision.kind == DecisionKind.EDIT else "", comment=decision.comment, client_address=client_address,
    )  # fmt: skip
    actor = reviewer or "escalation"
    if decision.kind == DecisionKind.EDIT:
        audit_append(
            event="edited", review=task, actor=actor, client_address=client_address, decision="edit", comment=decision.comment, before=before, after=edited
        )
    audit_append(
        event="decided", review=task, actor=actor, client_address=client_address, decision=decision.kind, comment=decision.comment, before=before, after=after
    )
    now = timezone.now()
    task.version += 1
    task.current_output = after
    if decision.kind != DecisionKind.REJECT:
        task.approvals += 1
        if task.approvals < task.approvals_required and not by_escalation:  # an escalation approves for all
            task.save(update_fields=["version", "current_output", "approvals"])
            return []
    task.status = ReviewStatus.REJECTED if decision.kind == DecisionKind.REJECT else ReviewStatus.APPROVED
    task.decided_at, task.decided_by = now, reviewer
    task.save(update_fields=["version", "current_output", "approvals", "status", "decided_at", "decided_by"])
    return _gate_moves_on(task, run, decision)


def _gate_moves_on(task: ReviewTask, run: Run, decision: Decision) -> list[int]:
    deciders = list(task.decisions.order_by("ordinal").values_list("reviewer__username", "by_escalation"))
    names = [name or "escalation" for name, _ in deciders]
    edited = task.decisions.filter(decision=DecisionKind.EDIT).exists()
    rejected = decision.kind == DecisionKind.REJECT
    kind = "rejected" if rejected else "edited" if edited else "approved"
    route = task.on_reject if rejected and task.on_reject else None
    output = {"decision": kind, "output": None if rejected else task.current_output, "route": route, "comment": decision.comment, "decided_by": names}
    error = f"rejected by {names[-1]}: {decision.comment}" if rejected and not route else ""
    try:
        return node_run_review_decided(run=run, node_id=task.node_id, attempt=task.attempt, decision=output, error=error)
    except ReviewGateClosed:
        # Cannot happen while cancels close their reviews under the run's lock; if it ever does,
        # refuse the whole decision (rolled back) rather than record one that moved nothing.
        raise ReviewConflict(task, "the gate no longer waits: its run ended before this decision") from None


def output_diff(before: Any, after: Any) -> str:
    """A unified diff of two outputs, as pretty-printed JSON (text as it is)."""

    def lines(value: Any) -> list[str]:
        text = value if isinstance(value, str) else json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
        return text.splitlines()

    return "\n".join(difflib.unified_diff(lines(before), lines(after), "produced", "approved", lineterm=""))


@dataclass(frozen=True)
class BulkResult:
    review_id: int
    status: str  # decided | conflict | forbidden | not_found | invalid
    detail: str = ""


def reviews_decide_bulk(*, review_ids: list[int], user: Any, decision: Decision, client_address: str | None = None) -> list[BulkResult]:
    """Decide each review on its own (its own transaction); one failing does not stop the others."""
    results = []
    for review_id in dict.fromkeys(review_ids):
        try:
            review_decide(review_id=review_id, user=user, decision=decision, client_address=client_address)
            results.append(BulkResult(review_id, "decided"))
        except ReviewNotFound:
            results.append(BulkResult(review_id, "not_found", "no such review"))
        except ReviewForbidden:
            results.append(BulkResult(review_id, "forbidden", "you may not decide this review"))
        except ReviewConflict as exc:
            results.append(BulkResult(review_id, "conflict", str(exc)))
        except DecisionInvalid as exc:
            results.append(BulkResult(review_id, "invalid", str(exc)))
    return results


# --- closing and escalating -------------------------------------------------------------------


def reviews_close_for_nodes(*, run: Run, node_ids: list[str], reason: str) -> int:
    """Pending reviews of gates that were cancelled (their run ended) close as cancelled."""
    closed = 0
    for task in ReviewTask.objects.select_for_update().filter(run_id=run.pk, node_id__in=node_ids, status=ReviewStatus.PENDING):
        task.status, task.version, task.decided_at = ReviewStatus.CANCELLED, task.version + 1, timezone.now()
        task.save(update_fields=["status", "version", "decided_at"])
        audit_append(event="cancelled", review=task, comment=reason)
        closed += 1
    return closed


ESCALATED = {"approve": "approved", "reject": "rejected"}


def reviews_escalate_overdue(*, now: datetime | None = None) -> int:
    """Escalate every pending review past its due time, as its definition says. Run by beat."""
    now = now or timezone.now()
    # Escalated once: a reassigned review that is overdue again stays with its escalation group
    # (it shows as overdue) rather than being handed over again and again.
    overdue = ReviewTask.objects.filter(status=ReviewStatus.PENDING, due_at__lt=now, escalated_at=None).exclude(escalation=None)
    escalated = 0
    for pk in overdue.values_list("pk", flat=True)[:500]:
        try:
            escalated += _escalate(pk, now)
        except Exception:  # one broken review must not stop the others' escalation
            log.exception("escalating review %s failed", pk)
    return escalated


def _escalate(review_id: int, now: datetime) -> int:
    run_id = ReviewTask.objects.filter(pk=review_id).values_list("run_id", flat=True).first()
    with transaction.atomic():
        run = run_lock(run_id)
        task = ReviewTask.objects.select_for_update().get(pk=review_id)
        if task.status != ReviewStatus.PENDING or task.due_at is None or task.due_at >= now or task.escalated_at is not None:
            return 0  # decided, or escalated by another sweeper, since it was listed
        action = task.escalation["action"]
        before = {"due_at": task.due_at.isoformat(), "groups": sorted(task.assigned_groups.values_list("name", flat=True))}
        task.escalated_at = now
        if action == "reassign":
            group = Group.objects.get_or_create(name=task.escalation["group"])[0]
            task.assigned_groups.set([group])
            task.assigned_users.clear()
            task.due_at, task.version = now + timedelta(seconds=task.due_in_seconds or 0), task.version + 1
            task.save(update_fields=["escalated_at", "due_at", "version"])
            after = {"due_at": task.due_at.isoformat(), "groups": [group.name]}
            audit_append(event="escalated", review=task, decision="reassign", comment="overdue: reassigned", before=before, after=after)
            return 1
        task.save(update_fields=["escalated_at"])
        audit_append(event="escalated", review=task, decision=action, comment=f"overdue: {ESCALATED[action]} by the definition's escalation", before=before)
        decision = Decision(
            kind=DecisionKind.APPROVE if action == "approve" else DecisionKind.REJECT,
            comment=f"overdue since {task.due_at:%Y-%m-%d %H:%M} UTC: escalation {action}",
        )
        queued = _apply(task, run, None, decision, None, None, by_escalation=True)
    node_runs_dispatch(queued)
    return 1
