"""Who may call what: each endpoint for an admin, an operator, a reviewer, an outsider and nobody.

Reading needs a role (any of the three); starting runs needs operator or admin; saving workflows
needs admin. Nobody signed in: 401. Signed in without the right: 403, and nothing written.
"""

from __future__ import annotations

import pytest

from apps.runs.models import Run
from apps.workflows.models import WorkflowVersion
from tests.api.conftest import problem, signed_in
from tests.factories import definition

pytestmark = pytest.mark.django_db

READERS = {"admin", "operator", "reviewer"}
STARTERS = {"admin", "operator"}
EDITORS = {"admin"}

ENDPOINTS = {
    "list workflows": ("get", "/api/v1/workflows", None, READERS, 200),
    "get a workflow": ("get", "/api/v1/workflows/tiny", None, READERS, 200),
    "get a version": ("get", "/api/v1/workflows/tiny/versions/1", None, READERS, 200),
    "save a workflow": ("post", "/api/v1/workflows", definition("fresh"), EDITORS, 201),
    "start a run": ("post", "/api/v1/runs", {"workflow": "tiny", "input": {"topic": "tides"}}, STARTERS, 201),
    "list runs": ("get", "/api/v1/runs", None, READERS, 200),
    "get a run": ("get", "/api/v1/runs/{run}", None, READERS, 200),
}
ROLES = ["admin", "operator", "reviewer", "outsider", "anonymous"]


def call(client, method: str, path: str, body):
    return client.post_json(path, body) if method == "post" else client.get(path)


def written() -> tuple[int, int]:
    return WorkflowVersion.objects.count(), Run.objects.count()


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("method", "path", "body", "allowed", "ok"), ENDPOINTS.values(), ids=ENDPOINTS.keys())
def test_each_endpoint_answers_each_role(request, run, role, method, path, body, allowed, ok):
    client = signed_in(None if role == "anonymous" else request.getfixturevalue(role))
    before = written()
    response = call(client, method, path.format(run=run.id), body)
    if role in allowed:
        assert response.status_code == ok, response.content
    elif role == "anonymous":
        assert problem(response, 401)["detail"].startswith("authentication required")
        assert written() == before
    else:
        assert "may not" in problem(response, 403)["detail"]
        assert written() == before


def test_a_role_check_comes_before_the_body_is_read(reviewer):
    body = problem(signed_in(reviewer).post_json("/api/v1/workflows", {"nonsense": True}), 403)
    assert body["detail"] == "user 'rita-reviewer' may not create or change workflows"


def test_an_inactive_user_is_treated_as_signed_out(operator):
    client = signed_in(operator)
    operator.is_active = False
    operator.save()
    problem(client.get("/api/v1/workflows"), 401)
