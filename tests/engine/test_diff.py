"""The structured diff of two definitions: nodes added, removed and changed field by field, for
every field of every node type; prompts as word diffs; top-level changes; the unified YAML diff."""

from __future__ import annotations

from typing import Any

import pytest

from apps.engine import definition
from apps.engine.diff import TextSegment, definition_diff, word_diff
from apps.engine.spec import NODE_TYPES, WorkflowSpec
from tests.engine.defs import llm, tool, workflow

BASES: dict[str, dict[str, Any]] = {
    "llm": llm("node", depends_on=["up"]),
    "tool": tool("node", depends_on=["up"]),
    "router": {"id": "node", "type": "router", "depends_on": ["up"], "routes": ["a", "b"], "rules": [{"when": "input.x", "route": "a"}], "default": "b"},
    "review": {"id": "node", "type": "review", "depends_on": ["up"]},
}

# A different value for every field of every node type (``id`` and ``type`` identify the node).
ALTERED: dict[str, dict[str, Any]] = {
    "llm": {
        "depends_on": ["up", "other"], "description": "A new description", "retry": {"max_attempts": 9, "backoff_seconds": 1.0, "backoff_cap_seconds": 60.0},
        "trigger_rule": "all_done", "model": "sim-smart", "prompt": "Tell me more about {{ input.topic }}.", "system": "Be brief.",
        "output_schema": {"type": "object"}, "max_tokens": 99, "temperature": 0.5, "cache": {"ttl_seconds": 60}, "fallbacks": ["sim-mini"],
    },
    "tool": {
        "depends_on": [], "description": "Counts", "retry": {"max_attempts": 1, "backoff_seconds": 1.0, "backoff_cap_seconds": 60.0},
        "trigger_rule": "one_success", "tool": "json_pick", "args": {"value": "{{ input }}", "paths": ["a"]},
    },
    "router": {
        "depends_on": ["up", "x"], "description": "Routes", "retry": {"max_attempts": 2, "backoff_seconds": 1.0, "backoff_cap_seconds": 60.0},
        "trigger_rule": "all_done", "routes": ["a", "b", "c"], "rules": [{"when": "input.y", "route": "b"}], "default": "a",
        "llm": {
            "model": "sim-fast", "prompt": "Pick", "system": "", "min_confidence": 0.5, "low_confidence_route": "b",
            "max_tokens": 256, "temperature": 0.0, "fallbacks": [],
        },
        "cache": {"ttl_seconds": 5},
    },
    "review": {
        "depends_on": ["up", "more"], "description": "Check", "retry": {"max_attempts": 4, "backoff_seconds": 1.0, "backoff_cap_seconds": 60.0},
        "trigger_rule": "all_done", "subject": "up", "instructions": "Look closely", "assignees": ["rita"], "groups": ["editors"],
        "approvals_required": 2, "due_in": "30m", "escalation": {"action": "reject", "group": None, "allow_auto_approve": False}, "on_reject": "fix",
    },
}  # fmt: skip


def dumped(kind: str) -> dict[str, Any]:
    return NODE_TYPES[kind].model_validate(BASES[kind]).model_dump(mode="json")


def test_every_field_of_every_node_type_has_an_altered_value():
    for kind, model in NODE_TYPES.items():
        assert set(ALTERED[kind]) == set(model.model_fields) - {"id", "type"}, kind


@pytest.mark.parametrize(("kind", "name"), [(k, f) for k, fields in ALTERED.items() for f in fields])
def test_a_change_of_any_field_is_reported_for_that_field(kind, name):
    before = dumped(kind)
    after = {**before, name: ALTERED[kind][name]}
    diff = definition_diff(workflow(before), workflow(after))

    [node] = diff.changed
    assert (node.id, node.type, diff.added, diff.removed, diff.top) == ("node", kind, [], [], [])
    fields = {c.field.split(".")[0] for c in node.changes}
    assert fields == {name}
    for change in node.changes:
        assert change.pointer == "/nodes/0/" + change.field.replace(".", "/")


def test_nested_models_are_compared_field_by_field():
    before = dumped("llm")
    after = {**before, "retry": {"max_attempts": 9, "backoff_seconds": 1.0, "backoff_cap_seconds": 60.0}}
    before["retry"] = {"max_attempts": 3, "backoff_seconds": 1.0, "backoff_cap_seconds": 60.0}
    [change] = definition_diff(workflow(before), workflow(after)).changed[0].changes
    assert (change.field, change.pointer, change.before, change.after) == ("retry.max_attempts", "/nodes/0/retry/max_attempts", 3, 9)


def test_a_router_prompt_is_a_word_diff_inside_its_llm():
    node = {**dumped("router"), "rules": None, "default": None}
    routing = {"model": "sim-fast", "prompt": "Pick the best route", "system": "", "min_confidence": 0.5, "low_confidence_route": "b"}
    before, after = {**node, "llm": routing}, {**node, "llm": {**routing, "prompt": "Pick the safest route", "model": "sim-smart"}}
    changes = {c.field: c for c in definition_diff(workflow(before), workflow(after)).changed[0].changes}
    assert set(changes) == {"llm.prompt", "llm.model"}
    expected = [TextSegment("equal", "Pick the "), TextSegment("delete", "best"), TextSegment("insert", "safest"), TextSegment("equal", " route")]
    assert changes["llm.prompt"].text == expected
    assert (changes["llm.model"].before, changes["llm.model"].after) == ("sim-fast", "sim-smart")


def test_a_prompt_diff_is_by_word_and_joins_back_into_each_side():
    before, after = "Summarise {{ input.text }} in three short lines.", "Summarise {{ input.text }} in two lines, politely."
    segments = word_diff(before, after)
    assert "".join(s.text for s in segments if s.op != "insert") == before
    assert "".join(s.text for s in segments if s.op != "delete") == after
    assert TextSegment("delete", "three short") in segments
    assert {s.op for s in segments} == {"equal", "insert", "delete"}


def test_dependencies_and_models_show_before_after_and_what_was_added_or_removed():
    before = {**dumped("llm"), "depends_on": ["up", "old"], "fallbacks": ["sim-mini", "sim-smart"]}
    after = {**before, "depends_on": ["up", "new"], "fallbacks": ["sim-smart"]}
    changes = {c.field: c for c in definition_diff(workflow(before), workflow(after)).changed[0].changes}
    deps, fallbacks = changes["depends_on"], changes["fallbacks"]
    assert (deps.before, deps.after, deps.added, deps.removed) == (["up", "old"], ["up", "new"], ["new"], ["old"])
    assert (fallbacks.added, fallbacks.removed) == ([], ["sim-mini"])


def test_nodes_added_removed_and_unchanged():
    before = workflow(llm("keep"), llm("gone"), description="v1")
    after = workflow(llm("keep"), tool("fresh"), description="v1")
    diff = definition_diff(before, after)
    assert [n["id"] for n in diff.added] == ["fresh"]
    assert [n["id"] for n in diff.removed] == ["gone"]
    assert diff.changed == []
    assert diff.top == []
    assert not diff.identical


def test_top_level_changes_input_schema_budget_retry_description():
    before = definition.dump(definition.load(workflow(llm("a"), description="Old text")).spec)
    after_raw = workflow(
        llm("a"), description="New text", input_schema={"type": "object", "required": ["topic"]},
        budget={"max_cost": "1.5"}, retry={"max_attempts": 5},
    )  # fmt: skip
    after = definition.dump(definition.load(after_raw).spec)
    top = {c.field: c for c in definition_diff(before, after).top}
    assert set(top) == {"description", "input_schema", "budget", "retry.max_attempts"}
    assert top["input_schema"].after == {"type": "object", "required": ["topic"]}
    assert top["budget"].before is None
    assert top["description"].text == [TextSegment("delete", "Old"), TextSegment("insert", "New"), TextSegment("equal", " text")]


def test_identical_definitions_and_defaults_written_or_not():
    spec = WorkflowSpec.model_validate(workflow(llm("a")))
    written = WorkflowSpec.model_validate(workflow(llm("a", max_tokens=512, temperature=0.0)))
    diff = definition_diff(definition.dump(spec), definition.dump(written))
    assert diff.identical
    assert diff.unified == ""


def test_the_unified_diff_is_of_the_yaml_dumps():
    before, after = workflow(llm("a", "Say hi")), workflow(llm("a", "Say hello"))
    unified = definition_diff(before, after, before_label="v1", after_label="v2").unified
    assert unified.startswith("--- v1\n+++ v2\n")
    assert "-  prompt: Say hi\n" in unified
    assert "+  prompt: Say hello\n" in unified


def test_as_dict_is_plain_data():
    diff = definition_diff(workflow(llm("a", "One")), workflow(llm("a", "Two"), llm("b")))
    data = diff.as_dict()
    assert data["identical"] is False
    assert data["changed"][0]["changes"][0]["text"] == [{"op": "delete", "text": "One"}, {"op": "insert", "text": "Two"}]
    assert data["added"][0]["id"] == "b"
