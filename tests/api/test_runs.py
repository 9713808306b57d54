"""Runs through the API: starting one (idempotently), listing them and reading one with its nodes.

Nothing here needs a worker: a started run waits with its first nodes queued, and the detail test
executes its nodes in this process, as tests/runs does.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.runs import services as run_services
from apps.runs.models import NodeRun, Run, RunEvent, RunStatus
from tests.api.conftest import pointers, problem, signed_in
from tests.factories import definition, llm_node, save_workflow, tool_node
from tests.runs import helpers

pytestmark = pytest.mark.django_db

RUNS = "/api/v1/runs"
FAST = {"latency": "fixed:0"}


def start_body(**fields) -> dict:
    return {"workflow": "tiny", "input": {"topic": "harbours"}, **fields}


def rows() -> tuple[int, int, int]:
    return Run.objects.count(), NodeRun.objects.count(), RunEvent.objects.count()


def test_starting_a_run_answers_201_with_the_run_and_its_queued_first_node(operator, version):
    response = signed_in(operator).post_json(RUNS, start_body())
    assert response.status_code == 201
    body = response.json()
    run = Run.objects.get()
    assert body["id"] == str(run.id)
    assert response["Location"] == f"/api/v1/runs/{run.id}"
    assert (body["workflow"], body["version"], body["status"], body["started_by"]) == ("tiny", 1, "running", "otto-operator")
    assert body["input"] == {"topic": "harbours"}
    assert (body["tokens_in"], body["tokens_out"], body["cost"]) == (0, 0, "0.00000000")
    assert [(n["node_id"], n["type"], n["status"]) for n in body["nodes"]] == [("answer", "llm", "queued")]


def test_a_run_can_pin_an_older_version(operator, version):
    save_workflow(definition(nodes=[llm_node("answer", "Tell me about {{ input.topic }}.")]))
    body = signed_in(operator).post_json(RUNS, start_body(version=1)).json()
    assert body["version"] == 1
    assert Run.objects.get().version == version


def test_simulation_settings_reach_the_run_options_as_given(operator, version):
    signed_in(operator).post_json(RUNS, start_body(simulation={"seed": 3, "latency": "fixed:0"}))
    assert Run.objects.get().options == {"simulation": {"seed": 3, "latency": {"kind": "fixed", "a": 0.0, "b": 0.0}}}


@pytest.mark.parametrize(
    ("simulation", "pointer"),
    [({"seed": "many"}, "/simulation/seed"), ({"latency": "sometimes"}, "/simulation/latency"), ({"faults": 1}, "/simulation/faults")],
)
def test_bad_simulation_settings_are_a_422_problem(operator, version, simulation, pointer):
    body = problem(signed_in(operator).post_json(RUNS, start_body(simulation=simulation)), 422)
    assert pointers(body)[0].startswith(pointer)
    assert rows() == (0, 0, 0)


@pytest.mark.parametrize(
    ("simulation", "pointer"),
    [
        pytest.param({"latency": "fixed:99999999"}, "/simulation/latency/a", id="fixed-latency"),
        pytest.param({"latency": {"kind": "uniform", "a": 0, "b": 1e12}}, "/simulation/latency/b", id="uniform-latency"),
        pytest.param({"faults": {"latency_spike": {"rate": 1, "ms": 86_400_000}}}, "/simulation/faults/latency_spike/ms", id="spike"),
        pytest.param({"faults": {"timeout_rate": 1, "timeout_seconds": 3600}}, "/simulation/faults/timeout_seconds", id="timeout"),
    ],
)
def test_a_simulated_duration_past_its_bound_is_refused_at_run_start(operator, version, simulation, pointer):
    """A run's options cannot make a simulated call hold a worker longer than a minute per wait."""
    body = problem(signed_in(operator).post_json(RUNS, start_body(simulation=simulation)), 422)
    assert pointers(body)[0] == pointer
    assert "less than or equal to 60" in json.dumps(body)  # the problem names the bound
    assert rows() == (0, 0, 0)


@pytest.mark.parametrize(
    ("run_input", "pointer", "message"),
    [
        ({"topic": 42}, "/input/topic", "42 is not of type 'string'"),
        ({"topic": ""}, "/input/topic", "should be non-empty"),
        ({}, "/input", "'topic' is a required property"),
    ],
)
def test_an_input_that_breaks_the_input_schema_is_a_422_problem_and_writes_nothing(operator, version, run_input, pointer, message):
    body = problem(signed_in(operator).post_json(RUNS, start_body(input=run_input)), 422)
    assert pointers(body) == [pointer]
    assert message in body["errors"][0]["detail"]
    assert body["type"].endswith(":invalid-input")
    assert rows() == (0, 0, 0)


@pytest.mark.parametrize(
    ("fields", "pointer"),
    [
        ({"input": "harbours"}, "/input"),
        ({"version": 0}, "/version"),
        ({"idempotency_key": "k" * 201}, "/idempotency_key"),
        ({"workflow": None}, "/workflow"),
        ({"inputs": {}}, "/inputs"),
    ],
)
def test_a_body_that_breaks_the_request_schema_is_a_422_problem(operator, version, fields, pointer):
    body = problem(signed_in(operator).post_json(RUNS, start_body(**fields)), 422)
    assert pointer in pointers(body)
    assert rows() == (0, 0, 0)


@pytest.mark.parametrize(
    ("fields", "pointer", "detail"),
    [({"workflow": "ghost"}, "/workflow", "no workflow named 'ghost'"), ({"version": 9}, "/version", "workflow 'tiny' has no version 9")],
)
def test_an_unknown_workflow_or_version_is_a_422_problem(operator, version, fields, pointer, detail):
    body = problem(signed_in(operator).post_json(RUNS, start_body(**fields)), 422)
    assert body["errors"] == [{"pointer": pointer, "detail": detail}]
    assert rows() == (0, 0, 0)


def test_the_same_idempotency_key_from_the_same_user_returns_the_same_run(operator, version):
    client = signed_in(operator)
    first = client.post_json(RUNS, start_body(idempotency_key="order-17"))
    again = client.post_json(RUNS, start_body(idempotency_key="order-17"))
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert Run.objects.count() == 1


def test_the_same_idempotency_key_for_another_input_is_a_409_problem(operator, version):
    client = signed_in(operator)
    first = client.post_json(RUNS, start_body(idempotency_key="order-17")).json()
    body = problem(client.post_json(RUNS, start_body(idempotency_key="order-17", input={"topic": "lighthouses"})), 409)
    assert pointers(body) == ["/idempotency_key"]
    assert first["id"] in body["detail"]
    assert Run.objects.count() == 1


def test_idempotency_keys_belong_to_their_user(operator, admin, version):
    mine = signed_in(operator).post_json(RUNS, start_body(idempotency_key="order-17")).json()
    theirs = signed_in(admin).post_json(RUNS, start_body(idempotency_key="order-17"))
    assert theirs.status_code == 201
    assert theirs.json()["id"] != mine["id"]


def start(version, topic: str, user) -> Run:
    return run_services.run_start(workflow=version.workflow, input={"topic": topic}, started_by=user)


def test_the_run_list_is_newest_first_and_filters_by_workflow_and_status(reviewer, operator, version):
    other = save_workflow(definition("other"))
    older, newer, elsewhere = start(version, "a", operator), start(version, "b", operator), start(other, "c", operator)
    Run.objects.filter(pk=older.pk).update(status=RunStatus.SUCCEEDED)
    client = signed_in(reviewer)
    everything = client.get(RUNS).json()
    assert [r["id"] for r in everything["items"]] == [str(elsewhere.id), str(newer.id), str(older.id)]
    assert everything["count"] == 3
    assert [r["id"] for r in client.get(RUNS, {"workflow": "tiny"}).json()["items"]] == [str(newer.id), str(older.id)]
    assert [r["id"] for r in client.get(RUNS, {"workflow": "tiny", "status": "succeeded"}).json()["items"]] == [str(older.id)]


def test_the_run_list_is_paginated(reviewer, operator, version):
    runs = [start(version, f"topic {i}", operator) for i in range(5)]
    page = signed_in(reviewer).get(RUNS, {"limit": 2, "offset": 1}).json()
    assert page["count"] == 5
    assert [r["id"] for r in page["items"]] == [str(runs[3].id), str(runs[2].id)]
    assert set(page["items"][0]) == {
        "id", "workflow", "version", "status", "tokens_in", "tokens_out", "cost", "error", "started_by", "created_at", "started_at", "finished_at", "is_test",
    }  # fmt: skip


@pytest.mark.parametrize(("query", "parameter"), [({"status": "sleeping"}, "status"), ({"limit": 0}, "limit"), ({"offset": -1}, "offset")])
def test_a_bad_list_parameter_is_a_422_problem_naming_it(reviewer, query, parameter):
    body = problem(signed_in(reviewer).get(RUNS, query), 422)
    assert [e["parameter"] for e in body["errors"]] == [parameter]


def drain(run: Run) -> None:
    """Execute the run's queued nodes in this process until none is left (what a worker does)."""
    helpers.drain(run, retries_due=False)


def test_a_run_shows_its_totals_and_its_nodes_in_topological_order(reviewer, operator):
    # "summary" is written first but runs second: the answer follows the graph, not the file
    chain = definition("chain", [llm_node("summary", "Summarise: {{ nodes.stats.words }} words", depends_on=["stats"]), tool_node("stats")])
    version = save_workflow(chain)
    run = run_services.run_start(workflow=version.workflow, input={"topic": "tide tables"}, started_by=operator, options={"simulation": FAST})
    drain(run)
    run.refresh_from_db()
    body = signed_in(reviewer).get(f"{RUNS}/{run.id}").json()
    assert body["status"] == "succeeded"
    assert body["finished_at"] is not None
    assert [(n["node_id"], n["type"], n["status"], n["attempt"]) for n in body["nodes"]] == [
        ("stats", "tool", "succeeded", 1),
        ("summary", "llm", "succeeded", 1),
    ]
    summary = body["nodes"][1]
    assert summary["model"] == "sim-fast"
    assert summary["tokens_in"] > 0
    assert summary["tokens_out"] > 0
    assert summary["output"] == NodeRun.objects.get(run=run, node_id="summary").output
    assert re.fullmatch(r"[a-f0-9]{64}", summary["input_hash"])
    assert (body["tokens_in"], body["tokens_out"]) == (run.tokens_in, run.tokens_out)
    assert re.fullmatch(r"\d+\.\d{8}", body["cost"])
    assert Decimal(body["cost"]) == run.cost > 0


def test_an_unknown_run_is_a_404_problem(reviewer):
    body = problem(signed_in(reviewer).get(f"{RUNS}/00000000-0000-4000-8000-000000000000"), 404)
    assert body["detail"] == "run not found"


def queries_for(client, path: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(path).status_code == 200
    return len(captured)


@pytest.mark.parametrize("path", [RUNS, "/api/v1/workflows"])
def test_a_list_costs_the_same_queries_for_many_rows_as_for_few(reviewer, operator, version, path):
    client = signed_in(reviewer)
    start(version, "first", operator)
    few = queries_for(client, path)
    for i in range(5):
        start(save_workflow(definition(f"more-{i}")), "more", operator)
    assert queries_for(client, path) == few
