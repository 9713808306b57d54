"""Operations on runs through the API: cancel, retry a failed run, preview and start a re-run
from a node. Operators and admins only; a run in the wrong state is a 409 problem."""

from __future__ import annotations

import pytest

from apps.api.services import api_token_issue
from apps.runs import services as run_services
from apps.runs.models import NodeRun, ProviderCall, Run, RunEvent, RunStatus
from tests.api.conftest import pointers, problem, signed_in
from tests.factories import definition, fan_out_definition, llm_node, save_workflow, tool_node
from tests.runs import helpers

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("unconsumed_queue")]

FAST = {"simulation": {"latency": "fixed:0"}}
BROKEN = definition("broken", [tool_node("count"), tool_node("bad", "json_pick", {"value": {}, "paths": "not a list"}, depends_on=["count"]),
                               llm_node("after", depends_on=["bad"])])  # fmt: skip


def url(run: Run, action: str) -> str:
    return f"/api/v1/runs/{run.id}/{action}"


def drain(run: Run) -> Run:
    return helpers.drain(run, retries_due=False)  # queued nodes only: a due retry must wait


def rows() -> tuple[int, int, int]:
    return Run.objects.count(), NodeRun.objects.count(), RunEvent.objects.count()


@pytest.fixture
def failed_run(operator) -> Run:
    version = save_workflow(BROKEN)
    run = drain(run_services.run_start(workflow=version.workflow, input={"topic": "tides"}, started_by=operator, options=FAST))
    assert run.status == RunStatus.FAILED
    return run


@pytest.fixture
def fan_run(operator) -> Run:
    version = save_workflow(fan_out_definition())
    run = drain(run_services.run_start(workflow=version.workflow, input={"topic": "tides"}, started_by=operator, options=FAST))
    assert run.status == RunStatus.SUCCEEDED
    return run


# --- cancel -------------------------------------------------------------------------------------


def test_cancelling_an_active_run_answers_the_cancelled_run(run, admin):
    response = signed_in(admin).post(url(run, "cancel"))

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["id"], body["status"], body["error"]) == (str(run.id), "cancelled", "cancelled by ada-admin")
    assert [(n["node_id"], n["status"]) for n in body["nodes"]] == [("answer", "cancelled")]
    assert run.events.get(kind="run_cancelled").data == {"by": "ada-admin"}


def test_cancelling_a_finished_run_is_a_409_problem(fan_run, operator):
    before = rows()

    body = problem(signed_in(operator).post(url(fan_run, "cancel")), 409)

    assert body["type"].endswith(":run-state-conflict")
    assert "already over (succeeded)" in body["detail"]
    assert rows() == before


def test_an_api_token_may_cancel(run, operator):
    token = api_token_issue(username=operator.username)[1]
    response = signed_in().post(url(run, "cancel"), HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.json()["status"] == "cancelled"


def test_a_session_cancel_needs_the_csrf_token(run, operator):
    client = signed_in(operator, enforce_csrf_checks=True)
    client.cookies["csrftoken"] = "k" * 32

    problem(client.post(url(run, "cancel")), 403)
    assert Run.objects.get(pk=run.pk).status == RunStatus.RUNNING
    assert client.post(url(run, "cancel"), HTTP_X_CSRFTOKEN="k" * 32).status_code == 200


def test_an_unknown_run_is_a_404_problem(operator):
    problem(signed_in(operator).post("/api/v1/runs/00000000-0000-0000-0000-000000000000/cancel"), 404)


# --- retry --------------------------------------------------------------------------------------


def test_retrying_a_failed_run_puts_it_back_to_work(failed_run, operator):
    response = signed_in(operator).post(url(failed_run, "retry"))

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["status"], body["error"], body["finished_at"]) == ("running", "", None)
    assert [(n["node_id"], n["status"], n["attempt"]) for n in body["nodes"]] == [("count", "succeeded", 1), ("bad", "queued", 1), ("after", "pending", 0)]


@pytest.mark.parametrize("status", [RunStatus.RUNNING, RunStatus.SUCCEEDED, RunStatus.CANCELLED])
def test_retrying_a_run_that_did_not_fail_is_a_409_problem(run, operator, status):
    Run.objects.filter(pk=run.pk).update(status=status)
    before = rows()

    body = problem(signed_in(operator).post(url(run, "retry")), 409)

    assert "only a failed run can be retried" in body["detail"]
    assert rows() == before


# --- re-run from a node -------------------------------------------------------------------------


def test_the_preview_lists_what_executes_again_what_is_reused_and_the_cost(fan_run, reviewer, operator):
    response = signed_in(operator).get(url(fan_run, "rerun-preview"), {"node": "branch_2"})

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["run"], body["node"]) == (str(fan_run.id), "branch_2")
    assert [(n["node_id"], n["type"], n["model"], n["basis"]) for n in body["execute"]] == [
        ("branch_2", "llm", "sim-fast", "recorded"), ("join", "llm", "sim-fast", "recorded"),
    ]  # fmt: skip
    assert body["reuse"] == ["start", "branch_0", "branch_1"]
    assert float(body["estimated_cost"]) > 0
    assert len(body["estimated_cost"].split(".")[1]) == 8  # money as elsewhere in the API


def test_a_preview_of_an_unknown_node_is_a_422_naming_the_parameter(fan_run, operator):
    body = problem(signed_in(operator).get(url(fan_run, "rerun-preview"), {"node": "nowhere"}), 422)
    assert [(e.get("parameter"), "nowhere" in e["detail"]) for e in body["errors"]] == [("node", True)]


def test_a_preview_needs_a_node(fan_run, operator):
    body = problem(signed_in(operator).get(url(fan_run, "rerun-preview")), 422)
    assert [e["parameter"] for e in body["errors"]] == ["node"]


def test_a_rerun_answers_201_with_the_new_run(fan_run, operator):
    calls = ProviderCall.objects.count()

    response = signed_in(operator).post_json(url(fan_run, "rerun"), {"node": "join"})

    assert response.status_code == 201, response.content
    body = response.json()
    new = Run.objects.get(pk=body["id"])
    assert response["Location"] == f"/api/v1/runs/{new.id}"
    assert (body["rerun_of"], body["rerun_from_node"], body["version"], body["input"]) == (str(fan_run.id), "join", 1, {"topic": "tides"})
    nodes = {n["node_id"]: n for n in body["nodes"]}
    assert {n: (v["status"], v["reused"]) for n, v in nodes.items()} == {
        "start": ("succeeded", True), "branch_0": ("succeeded", True), "branch_1": ("succeeded", True), "branch_2": ("succeeded", True),
        "join": ("queued", False),
    }  # fmt: skip
    assert nodes["branch_0"]["cost"] == "0.00000000"
    assert ProviderCall.objects.count() == calls  # nothing paid for yet; the join executes on a worker


def test_a_rerun_from_an_unknown_node_is_a_422_pointing_at_it(fan_run, operator):
    before = rows()
    body = problem(signed_in(operator).post_json(url(fan_run, "rerun"), {"node": "nowhere"}), 422)
    assert pointers(body) == ["/node"]
    assert rows() == before


@pytest.mark.parametrize(("payload", "pointer"), [({}, "/node"), ({"node": ""}, "/node"), ({"node": "join", "extra": 1}, "/extra")])
def test_a_rerun_body_is_checked(fan_run, operator, payload, pointer):
    body = problem(signed_in(operator).post_json(url(fan_run, "rerun"), payload), 422)
    assert pointers(body) == [pointer]


# --- who may ------------------------------------------------------------------------------------

ROLES = ["admin", "operator", "reviewer", "outsider", "anonymous"]
ALLOWED = {"admin", "operator"}


@pytest.fixture
def targets(run, failed_run, fan_run) -> dict[str, tuple[str, str, dict | None, int]]:
    return {
        "cancel": ("post", url(run, "cancel"), None, 200),
        "retry": ("post", url(failed_run, "retry"), None, 200),
        "preview": ("get", url(fan_run, "rerun-preview") + "?node=join", None, 200),
        "rerun": ("post", url(fan_run, "rerun"), {"node": "join"}, 201),
    }


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("operation", ["cancel", "retry", "preview", "rerun"])
def test_each_operation_answers_each_role(request, targets, role, operation):
    method, path, body, ok = targets[operation]
    client = signed_in(None if role == "anonymous" else request.getfixturevalue(role))
    before = rows()

    response = client.post_json(path, body or {}) if method == "post" and body else getattr(client, method)(path)

    if role in ALLOWED:
        assert response.status_code == ok, response.content
    elif role == "anonymous":
        assert problem(response, 401)["detail"].startswith("authentication required")
        assert rows() == before
    else:
        assert "may not" in problem(response, 403)["detail"]
        assert rows() == before
