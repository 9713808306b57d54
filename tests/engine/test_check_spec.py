"""A spec parsed outside ``load`` (the API body) gets the same JSON-data and depth guard."""

import pytest

from apps.engine import definition
from apps.engine.errors import DefinitionError
from apps.engine.spec import WorkflowSpec


def nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize("depth", [150, 400])
def test_deeply_nested_tool_arguments_are_refused_with_a_pointer(depth):
    spec = WorkflowSpec.model_validate({"name": "deep", "nodes": [{"id": "t", "type": "tool", "tool": "json_merge", "args": {"objects": nested(depth)}}]})
    with pytest.raises(DefinitionError) as caught:
        definition.check_spec(spec)
    problem = caught.value.problems[0]
    assert problem.pointer.startswith("/nodes/0/args/objects/a/a")
    assert "deeper than" in problem.message
