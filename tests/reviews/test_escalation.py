"""Overdue reviews escalate as their definition says (reassign, reject, approve where allowed),
once, recorded in the audit trail; beat schedules it and a real worker runs it."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.audit.audit import audit_verify
from apps.audit.models import AuditEntry
from apps.engine.errors import DefinitionError
from apps.reviews import tasks
from apps.reviews.models import ReviewStatus, ReviewTask
from apps.reviews.services import Decision, ReviewNotFound, review_decide, reviews_escalate_overdue
from apps.runs.models import NodeRun, NodeStatus, RunStatus
from orchestrator_site.celery import app
from tests.factories import UserFactory, save_workflow
from tests.reviews.helpers import gated_definition, start_gated_run
from tests.runs.helpers import drain

pytestmark = pytest.mark.django_db
REASSIGN = {"due_in": "1m", "escalation": {"action": "reassign", "group": "leads"}}
REJECT = {"due_in": "1m", "escalation": {"action": "reject"}}
APPROVE = {"due_in": "1m", "escalation": {"action": "approve", "allow_auto_approve": True}}


def overdue(task: ReviewTask, by: timedelta = timedelta(seconds=1)):
    """A moment just past the task's due time."""
    return task.due_at + by


def gate(run) -> NodeRun:
    return NodeRun.objects.get(run=run, node_id="gate")


def test_the_due_time_comes_from_due_in():
    started = timezone.now()
    _, task = start_gated_run("reassigned", **REASSIGN)

    assert task.due_in_seconds == 60
    assert started + timedelta(minutes=1) <= task.due_at <= timezone.now() + timedelta(minutes=1)


def test_an_overdue_review_is_reassigned_to_the_escalation_group_only(reviewer):
    lead = UserFactory(username="lena-lead", role="leads")
    _, task = start_gated_run("reassigned", assignees=[reviewer.username], **REASSIGN)
    before_due, now = task.due_at, overdue(task)

    assert reviews_escalate_overdue(now=now) == 1

    task.refresh_from_db()
    assert list(task.assigned_groups.values_list("name", flat=True)) == ["leads"]
    assert list(task.assigned_users.all()) == []
    assert task.due_at == now + timedelta(minutes=1)
    assert task.escalated_at == now
    assert task.status == ReviewStatus.PENDING
    entry = AuditEntry.objects.get(review=task, event="escalated")
    assert (entry.actor, entry.decision) == ("system", "reassign")
    assert entry.before == {"due_at": before_due.isoformat(), "groups": ["reviewers"]}
    assert entry.after == {"due_at": task.due_at.isoformat(), "groups": ["leads"]}
    assert audit_verify().ok
    # The reviewers lost it; the leads decide it now.
    with pytest.raises(ReviewNotFound):
        review_decide(review_id=task.pk, user=reviewer, decision=Decision("approve"))
    review_decide(review_id=task.pk, user=lead, decision=Decision("approve"))
    assert gate(task.run).status == NodeStatus.SUCCEEDED


def test_a_rejecting_escalation_fails_the_gate_with_a_decision_by_escalation():
    run, task = start_gated_run("rejected", **REJECT)

    assert reviews_escalate_overdue(now=overdue(task)) == 1
    run = drain(run)

    assert run.status == RunStatus.FAILED
    assert gate(run).status == NodeStatus.FAILED
    assert "rejected by escalation" in gate(run).error
    decision = ReviewTask.objects.get(pk=task.pk).decisions.get()
    assert (decision.decision, decision.reviewer, decision.by_escalation, decision.actor) == ("reject", None, True, "escalation")
    events = list(AuditEntry.objects.filter(review=task).values_list("event", "actor", "decision"))
    assert events[2:] == [("escalated", "system", "reject"), ("decided", "escalation", "reject")]


def test_a_rejecting_escalation_takes_the_on_reject_route():
    run, task = start_gated_run("rerouted", on_reject="redo", **REJECT)

    reviews_escalate_overdue(now=overdue(task))
    run = drain(run)

    assert run.status == RunStatus.SUCCEEDED
    states = dict(run.node_runs.values_list("node_id", "status"))
    assert (states["gate"], states["send"], states["redo"]) == (NodeStatus.SUCCEEDED, NodeStatus.SKIPPED, NodeStatus.SUCCEEDED)
    assert gate(run).output["decided_by"] == ["escalation"]
    assert gate(run).output["route"] == "redo"


def test_an_allowed_approving_escalation_continues_the_run():
    run, task = start_gated_run("approved", **APPROVE)

    assert reviews_escalate_overdue(now=overdue(task)) == 1
    run = drain(run)

    assert run.status == RunStatus.SUCCEEDED
    assert gate(run).output["decision"] == "approved"
    assert gate(run).output["decided_by"] == ["escalation"]
    assert NodeRun.objects.get(run=run, node_id="send").status == NodeStatus.SUCCEEDED
    task.refresh_from_db()
    assert task.status == ReviewStatus.APPROVED
    assert task.decided_by is None


def test_an_approving_escalation_without_allow_auto_approve_is_refused():
    with pytest.raises(DefinitionError) as caught:
        save_workflow(gated_definition("unattended", due_in="1m", escalation={"action": "approve"}))

    [problem] = caught.value.problems
    assert problem.pointer == "/nodes/1/escalation"
    assert "allow_auto_approve" in problem.message


def test_a_review_not_yet_due_is_left_alone():
    _, task = start_gated_run("reassigned", **REASSIGN)

    assert reviews_escalate_overdue(now=task.due_at - timedelta(seconds=1)) == 0

    task.refresh_from_db()
    assert task.escalated_at is None
    assert list(task.assigned_groups.values_list("name", flat=True)) == ["reviewers"]
    assert not AuditEntry.objects.filter(event="escalated").exists()


def test_a_review_without_an_escalation_is_left_alone():
    _, task = start_gated_run("no-escalation", due_in="1m")

    assert reviews_escalate_overdue(now=overdue(task, timedelta(days=1))) == 0

    assert ReviewTask.objects.get(pk=task.pk).status == ReviewStatus.PENDING


def test_a_decided_review_is_left_alone(reviewer):
    run, task = start_gated_run("rejected", **REJECT)
    review_decide(review_id=task.pk, user=reviewer, decision=Decision("approve"))

    assert reviews_escalate_overdue(now=overdue(task)) == 0

    run = drain(run)
    assert run.status == RunStatus.SUCCEEDED
    assert ReviewTask.objects.get(pk=task.pk).decisions.get().by_escalation is False
    assert not AuditEntry.objects.filter(event="escalated").exists()


@pytest.mark.parametrize("gate_spec", [REASSIGN, REJECT, APPROVE], ids=["reassign", "reject", "approve"])
def test_escalating_twice_does_nothing_the_second_time(gate_spec):
    _, task = start_gated_run("twice", **gate_spec)
    now = overdue(task)

    first, second = reviews_escalate_overdue(now=now), reviews_escalate_overdue(now=now)

    assert (first, second) == (1, 0)
    assert AuditEntry.objects.filter(review=task, event="escalated").count() == 1
    assert ReviewTask.objects.get(pk=task.pk).decisions.count() == (0 if gate_spec is REASSIGN else 1)


def test_a_reassigned_review_overdue_again_stays_with_its_escalation_group():
    _, task = start_gated_run("again", **REASSIGN)
    reviews_escalate_overdue(now=overdue(task))
    task.refresh_from_db()

    assert reviews_escalate_overdue(now=overdue(task, timedelta(hours=1))) == 0

    task.refresh_from_db()
    assert list(task.assigned_groups.values_list("name", flat=True)) == ["leads"]
    assert AuditEntry.objects.filter(review=task, event="escalated").count() == 1


def test_beat_runs_the_escalation():
    scheduled = {entry["task"]: entry for entry in app.conf.beat_schedule.values()}

    assert "reviews.escalate" in scheduled
    assert scheduled["reviews.escalate"]["schedule"] > 0
    assert tasks.escalate.name == "reviews.escalate"


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_escalates_an_overdue_review(celery_worker, unconsumed_queue):
    # The run's own messages go to a queue nobody consumes (drain executes them here); only the
    # escalation message goes to the worker's queue.
    _, task = start_gated_run("by-worker", **REASSIGN)
    ReviewTask.objects.filter(pk=task.pk).update(due_at=task.due_at - timedelta(minutes=5))  # it fell due a while ago

    tasks.escalate.apply_async(queue=celery_worker.queue)

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not ReviewTask.objects.filter(pk=task.pk, escalated_at__isnull=False).exists():
        time.sleep(0.1)
    task.refresh_from_db()
    assert task.escalated_at is not None, f"the worker did not escalate within 30 s; see {celery_worker.log}"
    assert list(task.assigned_groups.values_list("name", flat=True)) == ["leads"]
    assert AuditEntry.objects.filter(review=task, event="escalated").count() == 1
    assert audit_verify().ok
