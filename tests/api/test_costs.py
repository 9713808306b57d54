"""GET /api/v1/costs: tokens and cost per day or per workflow, for anyone who may view runs."""

from __future__ import annotations

from datetime import date

import pytest

from apps.runs import services
from apps.runs.models import Run
from tests.api.conftest import problem, signed_in
from tests.factories import definition, llm_node, save_workflow
from tests.runs.test_cost_rollups import paid

pytestmark = pytest.mark.django_db
COSTS = "/api/v1/costs"


@pytest.fixture
def spending():
    tiny, other = save_workflow(definition("tiny", [llm_node("answer")])), save_workflow(definition("other", [llm_node("answer")]))
    a, b = (services.run_start(workflow=v.workflow, input={"topic": "harbours"}) for v in (tiny, other))
    paid(a, "answer", date(2026, 3, 1), 100, 10, "0.001")
    paid(b, "answer", date(2026, 3, 2), 7, 3, "0.00000003")


def test_costs_per_day(reviewer, spending):
    response = signed_in(reviewer).get(COSTS, {"group": "day"})

    assert response.status_code == 200
    assert response.json() == [
        {"key": "2026-03-01", "calls": 1, "tokens_in": 100, "tokens_out": 10, "cost": "0.00100000"},
        {"key": "2026-03-02", "calls": 1, "tokens_in": 7, "tokens_out": 3, "cost": "0.00000003"},
    ]


def test_costs_per_workflow_within_dates(operator, spending):
    response = signed_in(operator).get(COSTS, {"group": "workflow", "since": "2026-03-02", "until": "2026-03-02"})

    assert response.status_code == 200
    assert response.json() == [{"key": "other", "calls": 1, "tokens_in": 7, "tokens_out": 3, "cost": "0.00000003"}]


def test_test_runs_are_left_out_unless_asked_for(operator, spending):
    Run.objects.filter(workflow__name="other").update(is_test=True)  # a draft's simulated test run

    client = signed_in(operator)
    assert [row["key"] for row in client.get(COSTS, {"group": "workflow"}).json()] == ["tiny"]
    assert [row["key"] for row in client.get(COSTS, {"group": "workflow", "test_runs": "true"}).json()] == ["tiny", "other"]
    assert [row["key"] for row in client.get(COSTS, {"group": "day"}).json()] == ["2026-03-01"]


def test_no_calls_no_rows(operator, db):
    assert signed_in(operator).get(COSTS).json() == []


def test_an_unknown_grouping_or_a_bad_date_is_422(operator, db):
    client = signed_in(operator)
    problem(client.get(COSTS, {"group": "model"}), 422)
    problem(client.get(COSTS, {"since": "yesterday"}), 422)


def test_costs_need_a_signed_in_user(db):
    assert signed_in().get(COSTS).status_code in (401, 403)
