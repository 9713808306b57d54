"""A review gate pauses its branch, and a decision moves the run on (executed in this process)."""

from __future__ import annotations

import pytest

from apps.audit.audit import audit_verify
from apps.audit.models import AuditEntry
from apps.engine.canonical import content_hash
from apps.reviews.models import ReviewStatus
from apps.reviews.services import Decision, DecisionInvalid, review_decide
from apps.runs.models import NodeRun, NodeStatus, ProviderCall, RunStatus
from apps.runs.operations import run_cancel
from apps.runs.services import run_start
from tests.factories import save_workflow
from tests.reviews.helpers import gated_definition, start_gated_run
from tests.runs.helpers import drain

# These runs execute in this process (drain): their messages go to a queue no worker consumes, or
# the session's worker (started by any test that uses it) would race drain for them.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("unconsumed_queue")]


def states(run) -> dict[str, str]:
    return dict(NodeRun.objects.filter(run=run).values_list("node_id", "status"))


def test_a_gate_pauses_the_run_and_freezes_what_is_approved(reviewer):
    run, task = start_gated_run()

    assert run.status == RunStatus.WAITING_REVIEW
    assert states(run) == {"draft": "succeeded", "gate": "waiting_review", "send": "pending"}
    draft = NodeRun.objects.get(run=run, node_id="draft")
    assert task.subject == draft.output
    assert task.subject_hash == content_hash({"subject": "draft", "output": draft.output})
    assert task.context["input"] == {"topic": "a refund"}
    assert task.context["upstream"] == {"draft": draft.output}
    assert task.context["calls"] == list(ProviderCall.objects.filter(node_run=draft).values_list("pk", flat=True))
    assert task.instructions == "Check the reply."
    assert task.approvals_required == 1
    assert list(task.assigned_groups.values_list("name", flat=True)) == ["reviewers"]


def test_other_branches_go_on_while_a_gate_waits():
    version = save_workflow(gated_definition("side", side_branch=True))
    run = drain(run_start(workflow=version.workflow, input={"topic": "x"}))

    assert states(run)["side"] == "succeeded"
    assert states(run)["gate"] == "waiting_review"
    assert run.status == RunStatus.WAITING_REVIEW


def test_approval_continues_the_run_without_running_anything_upstream_again(reviewer):
    run, task = start_gated_run()
    calls = ProviderCall.objects.count()

    review_decide(review_id=task.pk, user=reviewer, decision=Decision("approve", version=task.version))
    run = drain(run)

    assert run.status == RunStatus.SUCCEEDED
    assert ProviderCall.objects.count() == calls
    gate = NodeRun.objects.get(run=run, node_id="gate")
    assert gate.output["decision"] == "approved"
    assert gate.output["decided_by"] == [reviewer.username]
    assert NodeRun.objects.get(run=run, node_id="draft").attempt == 1


def test_an_edit_is_what_downstream_nodes_receive(reviewer):
    run, task = start_gated_run()
    edited = {"reply": "We refund you in full today", "priority": 2}

    review_decide(review_id=task.pk, user=reviewer, decision=Decision("edit", output=edited, comment="warmer"))
    run = drain(run)

    assert run.status == RunStatus.SUCCEEDED
    send = NodeRun.objects.get(run=run, node_id="send")
    assert send.input["args"]["text"] == "We refund you in full today"
    decision = task.decisions.get()
    assert decision.original == task.subject
    assert decision.edited == edited
    assert '+  "reply": "We refund you in full today"' in decision.diff


def test_an_edit_that_breaks_the_producing_nodes_schema_is_refused_with_pointers(reviewer):
    run, task = start_gated_run()

    with pytest.raises(DecisionInvalid) as caught:
        review_decide(review_id=task.pk, user=reviewer, decision=Decision("edit", output={"reply": "", "priority": 9}))

    assert {p.pointer for p in caught.value.problems} == {"/output/reply", "/output/priority"}
    task.refresh_from_db()
    assert task.status == ReviewStatus.PENDING
    assert task.decisions.count() == 0
    assert states(run)["gate"] == "waiting_review"


def test_a_rejection_needs_a_reason_and_fails_the_gate(reviewer):
    run, task = start_gated_run()
    with pytest.raises(DecisionInvalid):
        review_decide(review_id=task.pk, user=reviewer, decision=Decision("reject", comment="  "))

    review_decide(review_id=task.pk, user=reviewer, decision=Decision("reject", comment="wrong customer"))
    run = drain(run)

    assert run.status == RunStatus.FAILED
    gate = NodeRun.objects.get(run=run, node_id="gate")
    assert gate.status == NodeStatus.FAILED
    assert gate.error_class == "review_rejected"
    assert "wrong customer" in gate.error
    assert states(run)["send"] == "cancelled"


def test_a_rejection_follows_the_on_reject_route(reviewer):
    run, task = start_gated_run("rejectable", on_reject="redo")

    review_decide(review_id=task.pk, user=reviewer, decision=Decision("reject", comment="too curt"))
    run = drain(run)

    assert run.status == RunStatus.SUCCEEDED
    assert states(run) == {"draft": "succeeded", "gate": "succeeded", "send": "skipped", "redo": "succeeded"}
    assert NodeRun.objects.get(run=run, node_id="redo").input["args"]["text"] == "rejected: too curt"


def test_approval_skips_the_on_reject_route(reviewer):
    run, task = start_gated_run("approvable", on_reject="redo")

    review_decide(review_id=task.pk, user=reviewer, decision=Decision("approve"))
    run = drain(run)

    assert states(run) == {"draft": "succeeded", "gate": "succeeded", "send": "succeeded", "redo": "skipped"}


def test_two_approvals_required_means_two_different_reviewers(reviewer, admin):
    run, task = start_gated_run("two", approvals_required=2)

    review_decide(review_id=task.pk, user=reviewer, decision=Decision("approve"))
    run = drain(run)
    assert states(run)["gate"] == "waiting_review"

    review_decide(review_id=task.pk, user=admin, decision=Decision("approve"))
    run = drain(run)
    assert run.status == RunStatus.SUCCEEDED
    assert list(task.decisions.values_list("ordinal", "reviewer__username")) == [(1, reviewer.username), (2, admin.username)]


def test_cancelling_the_run_closes_its_pending_review(operator):
    run, task = start_gated_run()

    run_cancel(run=run, by=operator)

    task.refresh_from_db()
    assert task.status == ReviewStatus.CANCELLED
    assert list(AuditEntry.objects.filter(review=task).values_list("event", flat=True)) == ["created", "assigned", "cancelled"]


def test_every_step_is_in_a_verifying_audit_chain(reviewer):
    run, task = start_gated_run()
    review_decide(review_id=task.pk, user=reviewer, decision=Decision("edit", output={"reply": "ok then", "priority": 1}), client_address="10.0.0.7")

    events = list(AuditEntry.objects.filter(review=task).values_list("event", "actor", "client_address"))
    assert events == [
        ("created", "system", ""),
        ("assigned", "system", ""),
        ("edited", reviewer.username, "10.0.0.7"),
        ("decided", reviewer.username, "10.0.0.7"),
    ]
    assert audit_verify().ok
