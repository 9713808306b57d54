"""The support-triage demo (apps/workflows/demos/support-triage.yaml) loads with load_demos and
runs in this process: parallel enrichment, an llm router, and a structured draft, an outbox
marker, or (when the router is unsure) a careful draft that waits at a human review gate and is
sent, edited or handed off as the reviewer decides, within its budget."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from jsonschema import Draft202012Validator

from apps.reviews.models import ReviewTask
from apps.reviews.services import Decision, review_decide
from apps.runs import services
from apps.runs.models import NodeStatus, OutboxMessage, Run, RunStatus
from apps.workflows.models import Workflow
from tests.runs.helpers import drain

pytestmark = pytest.mark.django_db
TICKET = {"customer": "Ada", "message": "I was charged twice for my subscription this month.", "plan": "pro"}
ROUTES = {"draft", "escalate", "needs_human"}


@pytest.fixture
def triage() -> Workflow:
    call_command("load_demos", stdout=StringIO())
    return Workflow.objects.get(name="support-triage")


def run_ticket(workflow: Workflow, seed: int) -> Run:
    options = {"simulation": {"latency": "fixed:0", "seed": seed}}
    return drain(services.run_start(workflow=workflow, input=TICKET, options=options))


def test_the_demo_loads_with_its_budget_router_and_schema(triage):
    spec = triage.versions.get().plan.spec

    assert spec.budget is not None
    assert spec.budget.max_cost is not None
    router = spec.node("triage")
    assert router.llm.low_confidence_route == "needs_human"
    assert 0 < router.llm.min_confidence < 1
    assert spec.node("draft").output_schema is not None


@pytest.mark.parametrize("seed", range(6))
def test_a_ticket_goes_down_exactly_one_route(triage, seed):
    run = run_ticket(triage, seed)

    states = dict(run.node_runs.values_list("node_id", "status"))
    unsure = states["needs_human"] == NodeStatus.SUCCEEDED
    # An unsure ticket's careful draft waits for a person; the other routes finish on their own.
    assert run.status == (RunStatus.WAITING_REVIEW if unsure else RunStatus.SUCCEEDED), run.error
    if unsure:
        assert (states["human_review"], states["send_reply"], states["handoff"]) == (NodeStatus.WAITING_REVIEW, NodeStatus.PENDING, NodeStatus.PENDING)
    assert {states[n] for n in ("customer_history", "sentiment", "policy", "triage")} == {NodeStatus.SUCCEEDED}
    decision = run.node_runs.get(node_id="triage").output
    taken = decision["route"]
    assert taken in ROUTES
    assert states[taken] == NodeStatus.SUCCEEDED
    assert {states[r] for r in ROUTES - {taken}} == {NodeStatus.SKIPPED}
    assert (taken == "needs_human") == (decision["confidence"] < 0.6 or decision["proposed"] == "needs_human")
    assert 0 < run.cost <= triage.versions.get().plan.spec.budget.max_cost


def test_the_draft_follows_its_schema(triage):
    drafts = [run_ticket(triage, seed).node_runs.get(node_id="draft") for seed in range(20)]
    drafted = [d for d in drafts if d.status == NodeStatus.SUCCEEDED]

    assert drafted, "no seed in 20 routed to draft"
    schema = triage.versions.get().plan.spec.node("draft").output_schema
    for draft in drafted:
        assert not list(Draft202012Validator(schema).iter_errors(draft.output))


def unsure_run(workflow: Workflow) -> Run:
    for seed in range(20):
        run = run_ticket(workflow, seed)
        if run.node_runs.get(node_id="triage").output["route"] == "needs_human":
            return run
    raise AssertionError("no seed in 20 routed to needs_human")


def test_a_low_confidence_ticket_waits_for_the_reviewers_with_instructions(triage):
    run = unsure_run(triage)

    task = ReviewTask.objects.get(run=run)
    assert run.status == RunStatus.WAITING_REVIEW
    assert task.subject == run.node_runs.get(node_id="needs_human").output
    assert list(task.assigned_groups.values_list("name", flat=True)) == ["reviewers"]
    assert task.instructions.startswith("The router was not confident")
    assert task.due_at is not None
    assert task.escalation == {"action": "reassign", "group": "operators", "allow_auto_approve": False}
    assert task.output_schema == triage.versions.get().plan.spec.node("needs_human").output_schema


def test_an_edited_draft_is_what_is_sent(triage, reviewer):
    run = unsure_run(triage)
    task = ReviewTask.objects.get(run=run)
    edited = {**task.subject, "body": "A colleague will call you today about the double charge."}

    review_decide(review_id=task.pk, user=reviewer, decision=Decision("edit", output=edited, comment="be concrete"))
    run = drain(run)

    assert run.status == RunStatus.SUCCEEDED, run.error
    sent = OutboxMessage.objects.get(run=run, node_id="send_reply")
    assert sent.topic == "support.replies"
    assert sent.payload["body"] == edited["body"]
    assert sent.payload["approved_by"] == reviewer.username
    assert run.node_runs.get(node_id="handoff").status == NodeStatus.SKIPPED


def test_a_rejected_draft_leaves_a_needs_human_marker_with_the_reason(triage, reviewer):
    run = unsure_run(triage)
    task = ReviewTask.objects.get(run=run)

    review_decide(review_id=task.pk, user=reviewer, decision=Decision("reject", comment="needs a refund specialist"))
    run = drain(run)

    assert run.status == RunStatus.SUCCEEDED, run.error
    message = OutboxMessage.objects.get(run=run, node_id="handoff")
    assert message.topic == "support.needs-human"
    assert message.payload["marker"] == "needs_human"
    assert message.payload["customer"] == "Ada"
    assert message.payload["rejected_because"] == "needs a refund specialist"
    assert run.node_runs.get(node_id="send_reply").status == NodeStatus.SKIPPED
