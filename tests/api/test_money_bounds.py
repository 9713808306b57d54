"""Money and token limits every database stores exactly: one request must never write a run that
breaks the pages and lists reading it (issue 11, point 1)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from apps.engine.spec import MAX_COST, MAX_TOKENS
from apps.runs import services as run_services
from apps.runs.models import NodeRun, Run, RunEvent
from tests.api.conftest import pointers, problem, signed_in

pytestmark = pytest.mark.django_db

RUNS = "/api/v1/runs"


def start_body(**fields) -> dict:
    return {"workflow": "tiny", "input": {"topic": "harbours"}, **fields}


def rows() -> tuple[int, int, int]:
    return Run.objects.count(), NodeRun.objects.count(), RunEvent.objects.count()


def test_a_cost_limit_past_what_every_database_stores_is_a_422_and_writes_nothing(operator, version):
    # The reproduction as the issue has it: it answered 500, wrote the run, and its stored cost
    # then broke the run list, /runs/ and the workflow page for everyone (SQLite).
    client = signed_in(operator)
    body = problem(client.post_json(RUNS, start_body(budget={"max_cost": "99999999.99999999"})), 422)
    assert pointers(body) == ["/budget/max_cost"]
    assert rows() == (0, 0, 0)
    assert client.get(RUNS).status_code == 200
    assert client.get("/runs/").status_code == 200
    assert client.get("/workflows/tiny/").status_code == 200


@pytest.mark.parametrize(
    "budget",
    [{"max_cost": str(MAX_COST + Decimal("0.00000001"))}, {"max_cost": "0.000000001"}, {"max_tokens": MAX_TOKENS + 1}, {"max_tokens": 2**64}],
)
def test_limits_out_of_range_are_a_422_with_the_pointer(operator, version, budget):
    body = problem(signed_in(operator).post_json(RUNS, start_body(budget=budget)), 422)
    assert pointers(body) == [f"/budget/{next(iter(budget))}"]
    assert rows() == (0, 0, 0)


def test_the_largest_limits_are_stored_and_read_back_exactly(operator, version):
    client = signed_in(operator)
    response = client.post_json(RUNS, start_body(budget={"max_cost": str(MAX_COST), "max_tokens": MAX_TOKENS}))
    assert response.status_code == 201, response.content
    run = Run.objects.get()
    assert (run.budget_cost, run.budget_tokens) == (MAX_COST, MAX_TOKENS)
    detail = client.get(f"{RUNS}/{run.id}").json()
    assert (detail["budget_cost"], detail["budget_tokens"]) == ("9999999.99999999", MAX_TOKENS)
    assert client.get(RUNS).status_code == 200
    assert client.get("/runs/").status_code == 200
    assert client.get(f"/runs/{run.id}/").status_code == 200
    assert client.get("/workflows/tiny/").status_code == 200


def test_a_workflow_budget_past_the_limit_is_refused_with_its_pointer(admin, db):
    from tests.factories import definition

    body = problem(signed_in(admin).post_json("/api/v1/workflows", definition(budget={"max_cost": "99999999.99999999"})), 422)
    assert pointers(body) == ["/budget/max_cost"]


def test_a_run_start_that_fails_halfway_leaves_no_row(operator, version, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(NodeRun.objects, "bulk_create", broken)
    with pytest.raises(RuntimeError):
        run_services.run_start(workflow=version.workflow, input={"topic": "harbours"}, started_by=operator)
    assert rows() == (0, 0, 0)
