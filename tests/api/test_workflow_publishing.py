"""Workflows over the API: YAML bodies, drafts with ``publish=false``, publishing and rolling back
(admins only, 409 with who and when on a stale expected version), runs of the published version,
the structured diff of two versions, and validation with line and column without saving."""

from __future__ import annotations

import pytest
import yaml

from apps.audit.models import AuditEntry
from apps.workflows.models import Workflow, WorkflowVersion
from tests.api.conftest import pointers, problem, signed_in
from tests.factories import definition, llm_node

pytestmark = pytest.mark.django_db

WORKFLOWS = "/api/v1/workflows"
VALIDATE = "/api/v1/workflows/validate"


def v(number: int) -> dict:
    return definition("tiny", [llm_node("answer", f"Version {number} on {{{{ input.topic }}}}.")])


def save(client, body: dict, **query: str):
    suffix = "?" + "&".join(f"{k}={val}" for k, val in query.items()) if query else ""
    return client.post_json(WORKFLOWS + suffix, body)


def publish(client, number: int, **extra):
    return client.post_json(f"{WORKFLOWS}/tiny/publish", {"version": number, **extra})


def test_a_yaml_body_saves_like_json(admin):
    client = signed_in(admin)
    for content_type in ("application/yaml", "text/yaml"):
        response = client.post(WORKFLOWS, yaml.safe_dump(v(1)), content_type=content_type)
        assert response.status_code in (200, 201), response.content
        assert response.json()["version"]["number"] == 1
    assert save(client, v(1)).json()["created"] is False  # the same definition, as JSON


def test_the_schema_states_that_a_definition_may_be_sent_as_yaml(client):
    body = client.get("/api/openapi.json").json()["paths"][WORKFLOWS]["post"]["requestBody"]["content"]
    assert {media: spec["schema"] for media, spec in body.items()} == dict.fromkeys(
        ("application/json", "application/yaml", "text/yaml"), {"$ref": "#/components/schemas/WorkflowSpec"}
    )


def test_a_workflow_may_not_take_the_name_of_the_new_workflow_page(admin):
    response = save(signed_in(admin), definition("new", [llm_node("answer")]))
    assert pointers(problem(response, 422)) == ["/name"]
    assert not Workflow.objects.filter(name="new").exists()


def test_a_yaml_syntax_error_is_a_problem_with_its_line(admin):
    response = signed_in(admin).post(WORKFLOWS, "name: tiny\nnodes: [\n", content_type="application/yaml")

    body = problem(response, 400)
    assert body["detail"].startswith("the request body is not valid YAML: line 3")
    assert body["errors"][0]["pointer"] == ""
    assert body["errors"][0]["line"] == 3


def test_a_bad_yaml_definition_points_at_the_node(admin):
    text = yaml.safe_dump(definition("tiny", [llm_node("draft", temperature=9)]))
    body = problem(signed_in(admin).post(WORKFLOWS, text, content_type="application/yaml"), 422)
    assert pointers(body) == ["/nodes/0/temperature"]
    assert body["errors"][0]["detail"].startswith("node 'draft': ")


def test_saving_publishes_by_default_and_not_with_publish_false(admin):
    client = signed_in(admin)
    first = save(client, v(1)).json()
    draft = save(client, v(2), publish="false").json()

    assert (first["published"], draft["published"], draft["created"]) == (True, False, True)
    detail = client.get(f"{WORKFLOWS}/tiny").json()
    assert (detail["published_version"], detail["published_by"], detail["latest"]["number"]) == (1, admin.username, 2)
    assert detail["published"]["number"] == 1
    assert [(s["number"], s["published"]) for s in detail["versions"]] == [(2, False), (1, True)]
    [listed] = client.get(WORKFLOWS).json()
    assert (listed["latest_version"], listed["published_version"], listed["published_by"]) == (2, 1, admin.username)


def test_a_run_without_a_version_runs_the_published_one(admin, operator):
    client = signed_in(admin)
    save(client, v(1))
    save(client, v(2), publish="false")

    run = signed_in(operator).post_json("/api/v1/runs", {"workflow": "tiny", "input": {"topic": "tides"}})

    assert run.json()["version"] == 1


def test_a_run_of_a_workflow_with_nothing_published_is_a_409(admin, operator):
    save(signed_in(admin), v(1), publish="false")

    body = problem(signed_in(operator).post_json("/api/v1/runs", {"workflow": "tiny", "input": {"topic": "tides"}}), 409)

    assert body["type"].endswith("workflow-not-published")
    assert pointers(body) == ["/version"]
    named = signed_in(operator).post_json("/api/v1/runs", {"workflow": "tiny", "version": 1, "input": {"topic": "tides"}})
    assert named.status_code == 201


def test_publish_and_roll_back(admin):
    client = signed_in(admin)
    save(client, v(1))
    save(client, v(2), publish="false")

    published = publish(client, 2, expected_published=1)
    rolled = publish(client, 1)

    assert (published.status_code, published.json()["published_version"]) == (200, 2)
    assert rolled.json()["published_version"] == 1
    events = list(AuditEntry.objects.filter(workflow_name="tiny").values_list("event", flat=True))
    assert events == ["saved", "published", "saved", "published", "rolled_back"]


def test_a_stale_publish_is_a_409_saying_who_published_which_version_and_when(admin):
    client = signed_in(admin)
    save(client, v(1))
    save(client, v(2))

    response = publish(client, 1, expected_published=1)

    assert response.status_code == 409
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    published_at = Workflow.objects.get(name="tiny").published_at.isoformat()
    assert body["detail"] == f"workflow 'tiny': version 2 is published by {admin.username} at {published_at}, not version 1 as expected"
    assert (body["published_version"], body["published_by"], body["published_at"], body["expected_published"]) == (2, admin.username, published_at, 1)
    assert pointers(body) == ["/expected_published"]
    stale_save = save(client, v(3), expected_published="1")
    assert stale_save.status_code == 409
    assert WorkflowVersion.objects.count() == 2


def test_publishing_an_unknown_version_or_workflow(admin):
    client = signed_in(admin)
    save(client, v(1))
    assert pointers(problem(publish(client, 7), 422)) == ["/version"]
    assert problem(client.post_json(f"{WORKFLOWS}/ghost/publish", {"version": 1}), 404)["detail"] == "workflow not found"
    assert pointers(problem(client.post_json(f"{WORKFLOWS}/tiny/publish", {"version": 0}), 422)) == ["/version"]


@pytest.mark.parametrize(("role", "status"), [("operator", 403), ("reviewer", 403), ("outsider", 403)])
def test_only_admins_publish_and_validate(request, admin, role, status):
    save(signed_in(admin), v(1))
    client = signed_in(request.getfixturevalue(role))
    assert problem(publish(client, 1), status)
    assert problem(client.post(VALIDATE, "name: x", content_type="application/yaml"), status)


def test_the_diff_of_two_versions(admin, reviewer):
    client = signed_in(admin)
    save(client, v(1))
    save(client, definition("tiny", [llm_node("answer", "Version 2 on {{ input.topic }}."), llm_node("extra")], description="more"))

    body = signed_in(reviewer).get(f"{WORKFLOWS}/tiny/versions/1/diff/2").json()

    assert (body["before"], body["after"], body["identical"]) == (1, 2, False)
    assert [n["id"] for n in body["added"]] == ["extra"]
    [change] = body["changed"][0]["changes"]
    assert (change["field"], change["pointer"]) == ("prompt", "/nodes/0/prompt")
    assert {"op": "delete", "text": "1"} in change["text"]
    assert {"op": "insert", "text": "2"} in change["text"]
    assert [t["field"] for t in body["top"]] == ["description"]
    assert body["unified"].startswith("--- tiny v1\n+++ tiny v2\n")
    assert problem(client.get(f"{WORKFLOWS}/tiny/versions/1/diff/9"), 404)["detail"] == "workflow version not found"


def test_validate_answers_problems_with_line_and_column_and_saves_nothing(admin):
    text = "name: tiny\nnodes:\n  - id: a\n    type: llm\n    model: gpt-99\n    prompt: Hi\n    depends_on: [ghost]\n"

    body = signed_in(admin).post(VALIDATE, text, content_type="application/yaml").json()

    assert body["valid"] is False
    found = {p["pointer"]: (p["line"], p["column"]) for p in body["problems"]}
    assert found == {"/nodes/0/depends_on/0": (7, 18)}
    fixed = signed_in(admin).post(VALIDATE, text.replace("    depends_on: [ghost]\n", ""), content_type="text/yaml").json()
    assert [(p["pointer"], p["line"]) for p in fixed["problems"]] == [("/nodes/0/model", 5)]
    good = signed_in(admin).post(VALIDATE, text.replace("    depends_on: [ghost]\n", "").replace("gpt-99", "sim-fast"), content_type="application/json")
    assert good.json() == {"valid": True, "problems": [], "nodes": [{"id": "a", "type": "llm", "depends_on": []}]}
    assert not Workflow.objects.exists()


def test_validate_reports_syntax_errors_and_refuses_other_media_types(admin):
    client = signed_in(admin)
    body = client.post(VALIDATE, '{"name": "x",\n "nodes": [}', content_type="application/json").json()
    [syntax] = body["problems"]
    assert (syntax["pointer"], syntax["line"]) == ("", 2)
    assert problem(client.post(VALIDATE, b"name: x", content_type="application/octet-stream"), 415)
