"""The edges of review gates that a review of the change found: a gate reached while its run ends,
escalations that approve for several approvers, audit entries whose numbers PostgreSQL rewrites,
NUL characters, approvals sent without a version after an edit, retries and re-runs of gates."""

from __future__ import annotations

from datetime import timedelta

import pytest

from apps.audit.audit import audit_append, audit_verify
from apps.audit.models import AuditEntry
from apps.reviews.models import ReviewStatus, ReviewTask
from apps.reviews.services import Decision, DecisionInvalid, ReviewConflict, review_decide, reviews_decide_bulk, reviews_escalate_overdue
from apps.runs import executors
from apps.runs.models import NodeRun, RunStatus
from apps.runs.operations import run_cancel, run_rerun_from, run_retry_failed
from apps.runs.services import node_run_claim, node_run_complete, run_start
from tests.factories import UserFactory, save_workflow
from tests.reviews.helpers import gated_definition, start_gated_run
from tests.runs.helpers import drain

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("unconsumed_queue")]
APPROVE = {"due_in": "1m", "escalation": {"action": "approve", "allow_auto_approve": True}}
EDIT = {"reply": "Edited reply", "priority": 2}


@pytest.fixture(autouse=True)
def instant_model(settings) -> None:
    settings.DAGWRIGHT_SIMULATION = {**settings.DAGWRIGHT_SIMULATION, "latency": "fixed:0"}


def test_a_gate_claimed_just_before_its_run_is_cancelled_opens_no_review(operator):
    run = run_start(workflow=save_workflow(gated_definition("zombie")).workflow, input={"topic": "a refund"})
    draft = node_run_claim(node_run_id=NodeRun.objects.get(run=run, node_id="draft").pk)
    [gate_id] = node_run_complete(claim=draft, outcome=executors.execute(draft))
    claim = node_run_claim(node_run_id=gate_id)  # a worker takes the gate...
    run_cancel(run=run, by=operator)  # ...the operator cancels meanwhile...
    node_run_complete(claim=claim, outcome=executors.execute(claim))  # ...and the worker completes it

    assert NodeRun.objects.get(pk=gate_id).status == "cancelled"
    assert not ReviewTask.objects.filter(run=run).exists()


def test_an_approving_escalation_approves_for_every_required_approver():
    run, task = start_gated_run("auto2", approvals_required=2, **APPROVE)

    assert reviews_escalate_overdue(now=task.due_at + timedelta(seconds=1)) == 1

    task.refresh_from_db()
    assert task.status == ReviewStatus.APPROVED
    assert drain(run).status == RunStatus.SUCCEEDED
    assert AuditEntry.objects.get(review=task, event="escalated").comment == "overdue: approved by the definition's escalation"


@pytest.mark.parametrize("value", [1e16, -0.0, 2.5e20, 0.1])
def test_the_audit_chain_verifies_whatever_numbers_an_entry_holds(value):
    entry = audit_append(event="decided", after={"amount": value})

    assert audit_verify().ok
    assert AuditEntry.objects.get(pk=entry.pk).after == {"amount": value}


@pytest.mark.parametrize(
    ("decision", "pointer"),
    [(Decision("reject", comment="bad\x00reason"), "/comment"), (Decision("edit", output={"reply": "ok\x00", "priority": 2}), "/output/reply")],
    ids=["comment", "edit"],
)
def test_a_nul_character_in_a_decision_is_refused_with_a_pointer(reviewer, decision, pointer):
    _, task = start_gated_run("nul")

    with pytest.raises(DecisionInvalid) as caught:
        review_decide(review_id=task.pk, user=reviewer, decision=decision)

    assert [p.pointer for p in caught.value.problems] == [pointer]
    assert task.decisions.count() == 0


def test_an_approval_without_a_version_cannot_approve_an_edit_its_sender_never_saw(reviewer):
    other = UserFactory(username="otto-second-reviewer", role="reviewers")
    _, task = start_gated_run("unseen", approvals_required=2)
    review_decide(review_id=task.pk, user=reviewer, decision=Decision("edit", output=EDIT))

    [result] = reviews_decide_bulk(review_ids=[task.pk], user=other, decision=Decision("approve"))
    assert result.status == "conflict"
    with pytest.raises(ReviewConflict):
        review_decide(review_id=task.pk, user=other, decision=Decision("approve"))

    task.refresh_from_db()
    review_decide(review_id=task.pk, user=other, decision=Decision("approve", version=task.version))  # having seen it
    assert ReviewTask.objects.get(pk=task.pk).status == ReviewStatus.APPROVED


def test_retrying_a_run_whose_gate_was_rejected_opens_a_new_review(reviewer, operator):
    run, task = start_gated_run("retry")
    review_decide(review_id=task.pk, user=reviewer, decision=Decision("reject", comment="no"))
    assert drain(run).status == RunStatus.FAILED

    run_retry_failed(run=run, by=operator)
    run = drain(run)

    assert run.status == RunStatus.WAITING_REVIEW
    assert list(ReviewTask.objects.filter(run=run).order_by("id").values_list("status", "attempt")) == [(ReviewStatus.REJECTED, 1), (ReviewStatus.PENDING, 2)]
    review_decide(review_id=ReviewTask.objects.get(run=run, status=ReviewStatus.PENDING).pk, user=reviewer, decision=Decision("approve"))
    assert drain(run).status == RunStatus.SUCCEEDED


def test_a_rerun_below_an_edited_gate_reuses_the_edit_without_a_new_review(reviewer, operator):
    run, task = start_gated_run("rerun")
    review_decide(review_id=task.pk, user=reviewer, decision=Decision("edit", output=EDIT))
    assert drain(run).status == RunStatus.SUCCEEDED

    new = drain(run_rerun_from(run=run, node_id="send", by=operator))

    assert new.status == RunStatus.SUCCEEDED
    assert NodeRun.objects.get(run=new, node_id="send").input["args"]["text"] == "Edited reply"
    assert not ReviewTask.objects.filter(run=new).exists()
