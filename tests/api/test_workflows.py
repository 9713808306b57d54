"""Workflows through the API: saving a definition as a workflow or a new version, and reading them."""

from __future__ import annotations

import pytest

from apps.engine import definition as engine_definition
from apps.workflows.models import Workflow, WorkflowVersion
from tests.api.conftest import problem, signed_in
from tests.factories import definition, llm_node, save_workflow, tool_node

pytestmark = pytest.mark.django_db

WORKFLOWS = "/api/v1/workflows"


def reworded(name: str = "tiny") -> dict:
    return definition(name, [llm_node("answer", "Tell me about {{ input.topic }}.")])


def test_a_new_definition_creates_the_workflow_and_its_first_version(admin):
    response = signed_in(admin).post_json(WORKFLOWS, definition())
    assert response.status_code == 201
    body = response.json()
    assert body["created"] is True
    assert body["version"]["workflow"] == "tiny"
    assert body["version"]["number"] == 1
    assert body["version"]["created_by"] == "ada-admin"
    assert body["version"]["definition"] == engine_definition.dump(engine_definition.load(definition()).spec)
    assert response["Location"] == "/api/v1/workflows/tiny/versions/1"
    assert WorkflowVersion.objects.get().content_hash == body["version"]["content_hash"]


def test_the_identical_definition_again_reuses_its_version(admin):
    client = signed_in(admin)
    first = client.post_json(WORKFLOWS, definition()).json()
    again = client.post_json(WORKFLOWS, definition())
    assert again.status_code == 200
    assert again.json()["created"] is False
    assert again.json()["version"] == first["version"]
    assert WorkflowVersion.objects.count() == 1


def test_a_changed_definition_becomes_the_next_version(admin):
    client = signed_in(admin)
    client.post_json(WORKFLOWS, definition())
    response = client.post_json(WORKFLOWS, reworded())
    assert response.status_code == 201
    assert response.json()["version"]["number"] == 2
    assert Workflow.objects.count() == 1


def test_every_node_kind_round_trips_through_the_api(admin):
    spec = definition("mixed", [tool_node("stats"), llm_node("summary", "Words: {{ nodes.stats.words }}", depends_on=["stats"], max_tokens=64)])
    saved = signed_in(admin).post_json(WORKFLOWS, spec).json()["version"]["definition"]
    assert engine_definition.load(saved).spec == engine_definition.load(spec).spec


def test_the_list_shows_every_workflow_with_its_latest_version_number(reviewer):
    save_workflow(definition("beta"))
    save_workflow(reworded("beta"))
    save_workflow(definition("alpha"))
    response = signed_in(reviewer).get(WORKFLOWS)
    assert response.status_code == 200
    assert [(w["name"], w["latest_version"]) for w in response.json()] == [("alpha", 1), ("beta", 2)]
    assert response.json()[0]["description"] == "alpha workflow for tests"


def test_a_workflow_shows_its_versions_newest_first_and_its_latest_definition(reviewer):
    save_workflow(definition())
    latest = save_workflow(reworded())
    body = signed_in(reviewer).get(f"{WORKFLOWS}/tiny").json()
    assert body["name"] == "tiny"
    assert [v["number"] for v in body["versions"]] == [2, 1]
    assert body["latest"]["number"] == 2
    assert body["latest"]["definition"] == latest.definition


def test_a_version_is_read_by_its_number(reviewer):
    first = save_workflow(definition())
    save_workflow(reworded())
    body = signed_in(reviewer).get(f"{WORKFLOWS}/tiny/versions/1").json()
    assert (body["workflow"], body["number"], body["content_hash"]) == ("tiny", 1, first.content_hash)
    assert body["definition"] == first.definition


@pytest.mark.parametrize(
    ("path", "detail"),
    [
        ("/api/v1/workflows/ghost", "workflow not found"),
        ("/api/v1/workflows/tiny/versions/7", "workflow version not found"),
        ("/api/v1/workflows/tiny/versions/latest", "nothing at /api/v1/workflows/tiny/versions/latest"),
    ],
)
def test_an_unknown_workflow_or_version_is_a_404_problem(reviewer, version, path, detail):
    body = problem(signed_in(reviewer).get(path), 404)
    assert body["detail"] == detail
