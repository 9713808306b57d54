"""The validation corpus: every bad definition is refused with a pointer and a reason."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from apps.engine import definition
from apps.engine.errors import DefinitionError
from tests.engine.defs import llm, load_problems, tool, workflow

OVERSIZED = workflow(llm("a"), input_schema={"type": "object", "description": "x" * definition.MAX_DEFINITION_BYTES})
TOO_MANY_NODES = workflow(*[tool(f"n{i}", args={"text": "x"}) for i in range(definition.MAX_NODES + 1)])


def _aliased_bomb() -> dict[str, Any]:
    """What YAML anchors and aliases make of a few hundred bytes: one list shared 9**7 times."""
    level: list[Any] = ["lol"] * 9
    for _ in range(7):
        level = [level] * 9
    return workflow(llm("a"), description="bomb", input_schema={"type": "object", "default": level})


# (id, definition, pointer, fragments the message must contain)
BAD_DEFINITIONS = [
    ("cycle", workflow(llm("a", depends_on=["b"]), llm("b", depends_on=["c"]), llm("c", depends_on=["a"])),
     "/nodes/0/depends_on", ["node 'a'", "dependency cycle a -> b -> c -> a"]),
    ("cycle-behind-another-node", workflow(llm("x", depends_on=["a"]), llm("a", depends_on=["b"]), llm("b", depends_on=["a"])),
     "/nodes/1/depends_on", ["node 'a'", "dependency cycle a -> b -> a"]),
    ("self-dependency", workflow(llm("a", depends_on=["a"])), "/nodes/0/depends_on", ["node 'a'", "dependency cycle a -> a"]),
    ("unknown-dependency", workflow(llm("a"), llm("b", depends_on=["a", "zz"])), "/nodes/1/depends_on/1", ["node 'b'", "depends on unknown node 'zz'"]),
    ("duplicate-id", workflow(llm("a"), tool("a")), "/nodes/1/id", ["node 'a'", "duplicate id", "/nodes/0"]),
    ("unknown-node-type", workflow({"id": "a", "type": "shell", "command": "rm"}), "/nodes/0", ["node 'a'", "unknown node type 'shell'", "llm", "tool"]),
    ("node-type-not-a-string", workflow({"id": "a", "type": ["llm"]}), "/nodes/0", ["node 'a'", "unknown node type"]),
    ("missing-node-type", workflow({"id": "a", "model": "sim-fast", "prompt": "hi"}), "/nodes/0", ["node 'a'", "needs a type"]),
    ("node-not-an-object", workflow("a"), "/nodes/0", ["node #0", "valid dictionary"]),
    ("unknown-tool", workflow(tool("a", name="shell")), "/nodes/0/tool", ["node 'a'", "unknown tool 'shell'", "text_stats"]),
    ("llm-without-model", workflow({"id": "a", "type": "llm", "prompt": "hi"}), "/nodes/0/model", ["node 'a'", "Field required"]),
    ("llm-without-prompt", workflow({"id": "a", "type": "llm", "model": "sim-fast"}), "/nodes/0/prompt", ["node 'a'", "Field required"]),
    ("tool-without-tool", workflow({"id": "a", "type": "tool"}), "/nodes/0/tool", ["node 'a'", "Field required"]),
    ("unknown-node-field", workflow(llm("a", retries=3)), "/nodes/0/retries", ["node 'a'", "Extra inputs are not permitted"]),
    ("unknown-top-level-field", workflow(llm("a"), owner="me"), "/owner", ["Extra inputs are not permitted"]),
    ("bad-node-id", workflow(llm("Fetch-Page")), "/nodes/0/id", ["node 'Fetch-Page'", "pattern"]),
    ("bad-dependency-id", workflow(llm("a", depends_on=["Not Valid"])), "/nodes/0/depends_on/0", ["node 'a'", "pattern"]),
    ("bad-workflow-name", {**workflow(llm("a")), "name": "Has Spaces"}, "/name", ["pattern"]),
    ("max-tokens-zero", workflow(llm("a", max_tokens=0)), "/nodes/0/max_tokens", ["node 'a'", "greater than or equal to 1"]),
    ("temperature-too-high", workflow(llm("a", temperature=3)), "/nodes/0/temperature", ["node 'a'", "less than or equal to 2"]),
    ("invalid-output-schema", workflow(llm("a", output_schema={"type": "banana"})), "/nodes/0/output_schema", ["node 'a'", "not a valid JSON Schema"]),
    ("output-schema-bad-keyword-value", workflow(llm("a", output_schema={"type": "array", "minItems": -1})), "/nodes/0/output_schema",
     ["node 'a'", "not a valid JSON Schema"]),
    ("invalid-input-schema", workflow(llm("a"), input_schema={"type": "object", "required": "topic"}), "/input_schema", ["not a valid JSON Schema"]),
    ("prompt-syntax-error", workflow(llm("a", prompt="Hello {{ input.topic ")), "/nodes/0/prompt", ["node 'a'", "template syntax error", "line 1"]),
    ("system-syntax-error", workflow(llm("a", system="{% if input.x %}open")), "/nodes/0/system", ["node 'a'", "template syntax error"]),
    ("tool-arg-syntax-error", workflow(tool("a", args={"text": "{% for %}"})), "/nodes/0/args", ["node 'a'", "template syntax error"]),
    ("template-references-sibling", workflow(llm("root"), llm("left", depends_on=["root"]), llm("right", depends_on=["root"], prompt="{{ nodes.left }}")),
     "/nodes/2/prompt", ["node 'right'", "references node 'left'", "not upstream"]),
    ("template-references-downstream", workflow(llm("first", prompt="{{ nodes.second }}"), llm("second", depends_on=["first"])),
     "/nodes/0/prompt", ["node 'first'", "references node 'second'", "not upstream"]),
    ("tool-arg-references-sibling",
     workflow(llm("root"), llm("left", depends_on=["root"]), tool("right", depends_on=["root"], args={"text": "{{ nodes.left }}"})),
     "/nodes/2/args", ["node 'right'", "references node 'left'", "not upstream"]),
    ("template-references-unknown-node", workflow(llm("a", prompt="{{ nodes.ghost }}")), "/nodes/0/prompt", ["node 'a'", "unknown node 'ghost'"]),
    ("template-subscripts-unknown-node", workflow(llm("a", prompt="{{ nodes['ghost'].text }}")), "/nodes/0/prompt", ["node 'a'", "unknown node 'ghost'"]),
    ("template-unknown-name", workflow(llm("a", prompt="Use {{ secrets.api_key }}")), "/nodes/0/prompt", ["node 'a'", "unknown name 'secrets'"]),
    ("system-unknown-name", workflow(llm("a", system="{{ settings }}")), "/nodes/0/system", ["node 'a'", "unknown name 'settings'"]),
    ("tool-arg-unknown-name", workflow(tool("a", args={"text": "{{ env.HOME }}"})), "/nodes/0/args", ["node 'a'", "unknown name 'env'"]),
    ("loop-variable-outside-its-loop", workflow(llm("a", prompt="{% for x in input.items %}{% endfor %}{{ x }}")), "/nodes/0/prompt",
     ["node 'a'", "unknown name 'x'"]),
    ("empty-workflow", workflow(), "/nodes", ["at least one node"]),
    ("no-nodes-key", {"name": "test-flow"}, "/nodes", ["Field required"]),
    ("over-size-limit", OVERSIZED, "", ["over the limit of 262144"]),
    ("over-node-limit", TOO_MANY_NODES, "/nodes", ["501 nodes", "over the limit of 500"]),
    ("alias-bomb", _aliased_bomb(), "", ["over the size limit"]),
    ("yaml-date", workflow(llm("a"), description=datetime.date(2026, 1, 2)), "/description", ["date is not JSON data"]),
    ("nan", workflow(tool("a", args={"text": "x", "weight": float("nan")})), "/nodes/0/args/weight", ["nan is not a JSON number"]),
    ("non-string-key", workflow(tool("a", args={1: "x"})), "/nodes/0/args", ["key 1 is not a string"]),
    ("a-list", [llm("a")], "", ["must be an object"]),
    ("a-string", "name: test", "", ["must be an object"]),
    ("null", None, "", ["must be an object"]),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "pointer", "fragments"), [pytest.param(*case[1:], id=case[0]) for case in BAD_DEFINITIONS])
def test_bad_definition_is_refused_with_pointer_and_reason(raw: Any, pointer: str, fragments: list[str]) -> None:
    [problem] = load_problems(raw)
    assert problem.pointer == pointer
    for fragment in fragments:
        assert fragment in problem.message
    assert problem.as_dict() == {"pointer": pointer, "detail": problem.message}


def test_every_problem_is_reported_at_once() -> None:
    raw = workflow(llm("a", depends_on=["ghost"]), llm("b", depends_on=["phantom"]), llm("a"))

    with pytest.raises(DefinitionError) as caught:
        definition.load(raw)

    assert [p.pointer for p in caught.value.problems] == ["/nodes/2/id", "/nodes/0/depends_on/0", "/nodes/1/depends_on/0"]
    assert "ghost" in str(caught.value)
    assert "phantom" in str(caught.value)


def test_structural_errors_of_several_nodes_each_name_their_node() -> None:
    raw = workflow({"id": "a", "type": "llm", "prompt": "x"}, {"id": "b", "type": "tool", "tool": "nope"})

    assert {(p.pointer, p.message.split(":")[0]) for p in load_problems(raw)} == {("/nodes/0/model", "node 'a'"), ("/nodes/1/tool", "node 'b'")}


@pytest.mark.parametrize(
    "prompt",
    [
        pytest.param("{% for item in input['items'] %}{{ loop.index }}. {{ item }}\n{% endfor %}", id="for-loop-with-loop-variable"),
        pytest.param("{% set topic = input.topic | upper %}{{ topic }}", id="set-before-use"),
        pytest.param("{% for i in range(3) %}{{ i }}{% endfor %}", id="jinja-global-range"),
        pytest.param("{% macro line(x) %}- {{ x }}{% endmacro %}{{ line(input.topic) }}", id="macro-parameter"),
        pytest.param("{{ nodes.root.words }} and {{ nodes['root'].lines }}", id="ancestor-by-attribute-and-subscript"),
    ],
)
def test_good_templates_pass(prompt: str) -> None:
    plan = definition.load(workflow(tool("root"), llm("a", prompt=prompt, depends_on=["root"])))

    assert plan.order == ("root", "a")


def test_template_may_reference_any_ancestor_not_only_direct_dependencies() -> None:
    raw = workflow(llm("a"), llm("b", depends_on=["a"]), llm("c", depends_on=["b"], prompt="{{ nodes.a }} then {{ nodes.b }}"))

    assert definition.load(raw).order == ("a", "b", "c")


def test_definition_just_under_the_node_limit_loads() -> None:
    plan = definition.load(workflow(*[tool(f"n{i}", args={"text": "x"}) for i in range(definition.MAX_NODES)]))

    assert len(plan.order) == definition.MAX_NODES


def test_check_spec_applies_graph_rules_to_a_parsed_spec() -> None:
    spec = definition.load(workflow(llm("a"))).spec.model_copy(update={"nodes": []})

    with pytest.raises(DefinitionError, match="at least one node"):
        definition.check_spec(spec)
