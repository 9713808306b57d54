"""Tokens and cost rolled up per node, run, workflow and day (``apps.runs.selectors``)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest
from django.utils import timezone

from apps.runs import selectors, services
from apps.runs.models import ProviderCall, Run
from tests.factories import definition, fan_out_definition, llm_node, save_workflow

pytestmark = pytest.mark.django_db


def start(version) -> Run:
    return services.run_start(workflow=version.workflow, input={"topic": "harbours"})


def paid(run: Run, node_id: str, day: date, tokens_in: int, tokens_out: int, cost: str) -> ProviderCall:
    """A provider call stored for ``node_id`` of ``run`` at noon of ``day``."""
    node_run = run.node_runs.get(node_id=node_id)
    call = ProviderCall.objects.create(
        run=run, node_run=node_run, attempt=1, provider="simulated", model="sim-fast", request={},
        tokens_in=tokens_in, tokens_out=tokens_out, cost=Decimal(cost),
    )  # fmt: skip
    noon = timezone.make_aware(datetime(day.year, day.month, day.day, 12))
    ProviderCall.objects.filter(pk=call.pk).update(created_at=noon)
    return call


@pytest.fixture
def spending():
    """Two workflows, three runs, calls on two days."""
    tiny, fan = save_workflow(definition("tiny", [llm_node("answer")])), save_workflow(fan_out_definition("fan"))
    a, b, c = start(tiny), start(tiny), start(fan)
    paid(a, "answer", date(2026, 3, 1), 100, 10, "0.00100000")
    paid(b, "answer", date(2026, 3, 2), 200, 20, "0.00200000")
    paid(c, "branch_0", date(2026, 3, 2), 1000, 100, "0.01000000")
    paid(c, "branch_1", date(2026, 3, 2), 1, 1, "0.00000003")
    return a, b, c


def test_cost_per_day_sums_every_call_of_that_day(spending, django_assert_num_queries):
    with django_assert_num_queries(1):
        rows = selectors.cost_by_day()

    assert rows == [
        {"day": date(2026, 3, 1), "calls": 1, "tokens_in": 100, "tokens_out": 10, "cost": Decimal("0.001")},
        {"day": date(2026, 3, 2), "calls": 3, "tokens_in": 1201, "tokens_out": 121, "cost": Decimal("0.01200003")},
    ]


def test_cost_per_workflow_sums_its_runs_costliest_first(spending, django_assert_num_queries):
    with django_assert_num_queries(1):
        rows = selectors.cost_by_workflow()

    assert rows == [
        {"workflow": "fan", "calls": 2, "tokens_in": 1001, "tokens_out": 101, "cost": Decimal("0.01000003")},
        {"workflow": "tiny", "calls": 2, "tokens_in": 300, "tokens_out": 30, "cost": Decimal("0.003")},
    ]


def test_since_and_until_are_inclusive_days(spending):
    assert [r["day"] for r in selectors.cost_by_day(since=date(2026, 3, 2))] == [date(2026, 3, 2)]
    assert [r["day"] for r in selectors.cost_by_day(until=date(2026, 3, 1))] == [date(2026, 3, 1)]
    only_first = selectors.cost_by_workflow(since=date(2026, 3, 1), until=date(2026, 3, 1))
    assert only_first == [{"workflow": "tiny", "calls": 1, "tokens_in": 100, "tokens_out": 10, "cost": Decimal("0.001")}]


def test_per_node_and_per_run_totals_come_from_the_stored_rows():
    version = save_workflow(fan_out_definition("fan"))
    run = start(version)
    run.node_runs.filter(node_id="branch_1").update(model="sim-fast", tokens_in=5, tokens_out=7, cost=Decimal("0.00000123"))
    Run.objects.filter(pk=run.pk).update(tokens_in=5, tokens_out=7, cost=Decimal("0.00000123"))
    run = selectors.run_get(run_id=run.pk)

    nodes = selectors.run_cost_by_node(run=run)

    assert [n["node_id"] for n in nodes] == ["start", "branch_0", "branch_1", "branch_2", "join"]
    assert nodes[2] == {"node_id": "branch_1", "model": "sim-fast", "tokens_in": 5, "tokens_out": 7, "cost": Decimal("0.00000123")}
    assert selectors.run_cost_totals(run=run) == {"tokens_in": 5, "tokens_out": 7, "cost": Decimal("0.00000123")}
