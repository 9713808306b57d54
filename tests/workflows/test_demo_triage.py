"""The support-triage demo (apps/workflows/demos/support-triage.yaml) loads with load_demos and
runs in this process to success: parallel enrichment, an llm router, a structured draft or an
outbox marker, within its budget."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from jsonschema import Draft202012Validator

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
def test_a_ticket_runs_to_success_down_exactly_one_route(triage, seed):
    run = run_ticket(triage, seed)

    assert run.status == RunStatus.SUCCEEDED, run.error
    states = dict(run.node_runs.values_list("node_id", "status"))
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


def test_a_low_confidence_decision_leaves_a_needs_human_marker(triage):
    runs = [run_ticket(triage, seed) for seed in range(20)]
    unsure = [r for r in runs if r.node_runs.get(node_id="triage").output["route"] == "needs_human"]

    assert unsure, "no seed in 20 routed to needs_human"
    message = OutboxMessage.objects.get(run=unsure[0], node_id="needs_human")
    assert message.topic == "support.needs-human"
    assert message.payload["marker"] == "needs_human"
    assert message.payload["customer"] == "Ada"
