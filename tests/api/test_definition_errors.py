"""A bad definition sent to the API: a 4xx problem that points at the mistake and names the node,
never a 500, and nothing written."""

from __future__ import annotations

import pytest

from apps.engine.definition import MAX_DEFINITION_BYTES
from apps.workflows.models import Workflow, WorkflowVersion
from tests.api.conftest import pointers, problem, signed_in
from tests.factories import definition, llm_node, save_workflow

pytestmark = pytest.mark.django_db

WORKFLOWS = "/api/v1/workflows"
BIG_PROMPT = "lorem ipsum " * 8000  # 96 kB: under a prompt's own limit


def rows() -> tuple[int, int]:
    return Workflow.objects.count(), WorkflowVersion.objects.count()


CASES = {
    "cycle": (
        [llm_node("draft", depends_on=["review"]), llm_node("review", depends_on=["draft"])],
        "/nodes/0/depends_on",
        "node 'draft': dependency cycle draft -> review -> draft",
    ),
    "unknown dependency": (
        [llm_node("draft"), llm_node("review", depends_on=["draft", "ghost"])],
        "/nodes/1/depends_on/1",
        "node 'review': depends on unknown node 'ghost'",
    ),
    "duplicate id": (
        [llm_node("draft"), llm_node("review"), llm_node("draft")],
        "/nodes/2/id",
        "node 'draft': duplicate id (also at /nodes/0)",
    ),
    "unknown type": (
        [llm_node("draft"), {"id": "query", "type": "sql"}],
        "/nodes/1",
        "node 'query': unknown node type 'sql' (known: llm, tool, router, review)",
    ),
    "template reads a node that is not upstream": (
        [llm_node("draft"), llm_node("review", "Check {{ nodes.draft }}.")],
        "/nodes/1/prompt",
        "node 'review': template references node 'draft', which is not upstream of it",
    ),
    "field out of range in a node": (
        [llm_node("draft"), llm_node("review", temperature=9)],
        "/nodes/1/temperature",
        "node 'review': Input should be less than or equal to 2",
    ),
    "no nodes": ([], "/nodes", "a workflow needs at least one node"),
    "over the definition size limit": (
        [llm_node(f"part_{i}", BIG_PROMPT) for i in range(3)],
        "",
        f"over the limit of {MAX_DEFINITION_BYTES}",
    ),
}


@pytest.mark.parametrize(("nodes", "pointer", "message"), CASES.values(), ids=CASES.keys())
def test_a_bad_definition_is_a_422_problem_pointing_at_the_mistake(admin, nodes, pointer, message):
    save_workflow(definition("tiny"))  # a bad new version must not touch the good one either
    before = rows()
    body = problem(signed_in(admin).post_json(WORKFLOWS, definition("tiny", nodes)), 422)
    assert pointers(body) == [pointer]
    assert message in body["errors"][0]["detail"]
    assert message in body["detail"]
    assert rows() == before


def test_every_problem_in_a_definition_is_reported_at_once(admin):
    nodes = [llm_node("draft", model=""), {"id": "query", "type": "sql"}, {"id": "Bad Id", "type": "tool", "tool": "text_stats"}]
    body = problem(signed_in(admin).post_json(WORKFLOWS, definition("tiny", nodes)), 422)
    assert pointers(body) == ["/nodes/0/model", "/nodes/1", "/nodes/2/id"]
    assert [e["detail"].split(":")[0] for e in body["errors"]] == ["node 'draft'", "node 'query'", "node 'Bad Id'"]


def test_a_definition_with_an_unknown_field_points_at_it(admin):
    body = problem(signed_in(admin).post_json(WORKFLOWS, {**definition(), "timeout": 5}), 422)
    assert body["errors"] == [{"pointer": "/timeout", "detail": "Extra inputs are not permitted"}]
    assert rows() == (0, 0)


def test_a_definition_over_the_request_size_limit_is_a_413_problem(admin):
    nodes = [llm_node(f"part_{i}", BIG_PROMPT) for i in range(12)]  # about 1.1 MB of JSON
    body = problem(signed_in(admin).post_json(WORKFLOWS, definition("tiny", nodes)), 413)
    assert "1048576 bytes" in body["detail"]
    assert rows() == (0, 0)


def test_a_definition_that_is_not_an_object_is_a_422_problem(admin):
    body = problem(signed_in(admin).post_json(WORKFLOWS, ["tiny"]), 422)
    assert pointers(body) == [""]
    assert rows() == (0, 0)
