"""A NUL character (\\u0000), which PostgreSQL stores in no text or jsonb column, is refused with
422 and its pointer from every body, parameter and console form: never a 500 (issue 11, point 2)."""

from __future__ import annotations

import json
import re
import uuid

import pytest

from apps.runs.models import Run
from apps.workflows.models import Workflow, WorkflowVersion
from tests.api.conftest import problem, signed_in
from tests.factories import definition, llm_node, tool_node

pytestmark = pytest.mark.django_db

NUL = "\x00"


def with_nul(path: tuple, value: dict) -> dict:
    """``value`` with a NUL appended to the string at ``path`` (or to the key, when the path ends in ``("key", name)``)."""
    *parents, last = path
    target = value
    for part in parents:
        target = target[part]
    if isinstance(last, tuple):
        target[last[1] + NUL] = target.pop(last[1])
    else:
        target[last] = target[last] + NUL
    return value


def spec() -> dict:
    return definition(nodes=[llm_node("answer", system="Be brief."), tool_node("stats", depends_on=["answer"])])


@pytest.mark.parametrize(
    ("path", "pointer"),
    [
        (("description",), "/description"),
        (("nodes", 0, "prompt"), "/nodes/0/prompt"),
        (("nodes", 0, "system"), "/nodes/0/system"),
        (("nodes", 1, "args", "text"), "/nodes/1/args/text"),
        (("input_schema", "properties", ("key", "topic")), "/input_schema/properties/topic\x00"),
    ],
)
def test_a_definition_with_a_nul_anywhere_is_refused_with_its_pointer(admin, path, pointer):
    body = problem(signed_in(admin).post_json("/api/v1/workflows", with_nul(path, spec())), 422)
    assert [e["pointer"] for e in body["errors"]] == [pointer]
    assert "NUL" in body["errors"][0]["detail"]
    assert (Workflow.objects.count(), WorkflowVersion.objects.count()) == (0, 0)


@pytest.mark.parametrize(
    ("fields", "pointer"),
    [
        ({"input": {"topic": "tides" + NUL}}, "/input/topic"),
        ({"input": {"topic": "tides", "note" + NUL: "x"}}, "/input/note\x00"),
        ({"input": {"topic": "tides", "list": ["a", ["b" + NUL]]}}, "/input/list/1/0"),
        ({"idempotency_key": "k" + NUL}, "/idempotency_key"),
        ({"workflow": "tiny" + NUL}, "/workflow"),
    ],
)
def test_a_run_start_with_a_nul_is_refused_with_its_pointer(operator, version, fields, pointer):
    body = problem(signed_in(operator).post_json("/api/v1/runs", {"workflow": "tiny", "input": {"topic": "tides"}, **fields}), 422)
    assert [e["pointer"] for e in body["errors"]] == [pointer]
    assert Run.objects.count() == 0


def test_a_yaml_definition_with_a_nul_is_a_problem_not_a_500(admin):
    response = signed_in(admin).post("/api/v1/workflows", 'name: tiny\ndescription: "a\\0b"\nnodes: []\n', content_type="application/yaml")
    body = problem(response, 422)
    assert [e["pointer"] for e in body["errors"]] == ["/description"]


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/api/v1/runs?workflow=ti%00ny", "workflow"),
        ("/api/v1/reviews?workflow=%00", "workflow"),
        ("/api/v1/workflows/ti%00ny", "name"),
        ("/api/v1/workflows/tiny/versions/1?x%00=1", "x\\u0000"),
    ],
)
def test_a_nul_in_a_query_or_path_parameter_is_refused_with_its_name(operator, version, path, parameter):
    body = problem(signed_in(operator).get(path), 422)
    assert [e["parameter"] for e in body["errors"]] == [parameter]


def test_the_editor_refuses_a_nul_with_its_pointer_and_saves_nothing(admin):
    text = json.dumps(with_nul(("nodes", 0, "prompt"), spec()))
    response = signed_in(admin).post("/workflows/new/", {"text": text, "action": "save"})
    assert response.status_code == 422
    assert "/nodes/0/prompt" in response.content.decode()
    assert Workflow.objects.count() == 0


@pytest.mark.parametrize("data", [{"mode": "json", "input_json": json.dumps({"topic": "ti\x00des"})}, {"mode": "form", "input-topic": "ti\x00des"}])
def test_the_start_form_refuses_a_nul_and_starts_nothing(operator, version, data):
    response = signed_in(operator).post("/workflows/tiny/run/", {"submission": str(uuid.uuid4()), **data})
    assert response.status_code == 200  # the form again, with the problem on its field
    assert re.search(r"/topic: text cannot hold a NUL character|Null characters are not allowed", response.content.decode())
    assert Run.objects.count() == 0
