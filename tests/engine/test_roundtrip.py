"""Definitions round-trip losslessly, for every node type, and hash the same whatever the key order."""

from __future__ import annotations

import json
from typing import Any

import pytest

from apps.engine import definition
from apps.engine.spec import NODE_TYPES
from tests.engine.defs import llm, reverse_keys, tool, workflow

# One rich example per node type, using every optional field; a new type must add its own.
EXAMPLES: dict[str, dict[str, Any]] = {
    "llm": llm(
        "draft",
        "Write about {{ input.topic }} using {{ nodes.stats.words }} words.",
        depends_on=["stats"],
        description="The draft",
        system="You are terse. Today is {{ input.day | default('today') }}.",
        output_schema={"type": "object", "required": ["title"], "properties": {"title": {"type": "string", "maxLength": 80}}},
        max_tokens=300,
        temperature=0.7,
        fallbacks=["sim-mini", "gpt-4o-mini"],
    ),
    "tool": tool(
        "pick",
        "json_pick",
        {"value": "{{ nodes.stats }}", "paths": ["words", "top_words.0"], "nested": {"n": 3, "flag": True, "none": None}},
        depends_on=["stats"],
        description="Pick the counts",
    ),
    "router": {
        "id": "triage",
        "type": "router",
        "depends_on": ["stats"],
        "description": "Long texts go to review",
        "routes": ["review", "publish"],
        "rules": [{"when": "nodes.stats.words > 500 or input.topic == 'legal'", "route": "review"}],
        "default": "publish",
        "retry": {"max_attempts": 1, "backoff_seconds": 0, "backoff_cap_seconds": 0},
        "trigger_rule": "one_success",
    },
    "review": {
        "id": "check",
        "type": "review",
        "depends_on": ["stats"],
        "description": "A person checks the counts",
        "subject": "stats",
        "instructions": "Approve when the counts look right; reject with a reason otherwise.",
        "assignees": ["rita", "sam"],
        "groups": ["reviewers", "editors"],
        "approvals_required": 2,
        "due_in": "30m",
        "escalation": {"action": "approve", "allow_auto_approve": True},
        "on_reject": "recount",
        "retry": {"max_attempts": 1, "backoff_seconds": 0, "backoff_cap_seconds": 0},
        "trigger_rule": "all_success",
    },
}
# Nodes an example needs after it (a router's routes and a review's on_reject are its direct successors).
SUCCESSORS: dict[str, list[dict[str, Any]]] = {
    "router": [tool("review", depends_on=["triage"]), tool("publish", depends_on=["triage"], trigger_rule="all_done")],
    "review": [tool("recount", depends_on=["check"]), tool("publish", depends_on=["check"])],
}
MINIMAL: dict[str, list[dict[str, Any]]] = {
    "llm": [llm("a")],
    "tool": [tool("a")],
    "router": [{"id": "a", "type": "router", "routes": ["b"], "rules": [], "default": "b"}, tool("b", depends_on=["a"])],
    "review": [{"id": "a", "type": "review", "depends_on": ["b"]}, tool("b")],
}


def _example_workflow(node: dict[str, Any]) -> dict[str, Any]:
    return workflow(
        tool("stats"),
        node,
        *SUCCESSORS.get(node["type"], []),
        description="Round-trip example",
        input_schema={"type": "object", "properties": {"topic": {"type": "string"}, "day": {"type": "string"}}},
    )


def test_every_node_type_has_an_example() -> None:
    assert set(EXAMPLES) == set(NODE_TYPES), "add a round-trip example for each node type"


@pytest.mark.parametrize("node_type", sorted(NODE_TYPES))
def test_dump_then_load_is_equal(node_type: str) -> None:
    assert node_type in EXAMPLES, f"node type '{node_type}' has no round-trip example"
    spec = definition.load(_example_workflow(EXAMPLES[node_type])).spec

    reloaded = definition.load(definition.dump(spec)).spec

    assert reloaded == spec
    assert reloaded.nodes[1].type == node_type
    assert definition.dump(reloaded) == definition.dump(spec)


@pytest.mark.parametrize("node_type", sorted(NODE_TYPES))
def test_json_text_round_trip_is_equal(node_type: str) -> None:
    assert node_type in EXAMPLES, f"node type '{node_type}' has no round-trip example"
    spec = definition.load(_example_workflow(EXAMPLES[node_type])).spec

    reloaded = definition.load(json.loads(json.dumps(definition.dump(spec)))).spec

    assert reloaded == spec
    assert definition.spec_hash(reloaded) == definition.spec_hash(spec)


@pytest.mark.parametrize("node_type", sorted(NODE_TYPES))
def test_defaults_are_explicit_in_the_dump(node_type: str) -> None:
    minimal = MINIMAL[node_type]
    dumped = definition.dump(definition.load(workflow(*minimal)).spec)

    node = dumped["nodes"][0]
    assert dumped["schema_version"] == 1
    assert set(node) == set(NODE_TYPES[node_type].model_fields)
    assert definition.spec_hash(definition.load(dumped).spec) == definition.spec_hash(definition.load(workflow(*minimal)).spec)


def test_a_budget_round_trips_exactly() -> None:
    spec = definition.load({**_example_workflow(EXAMPLES["llm"]), "budget": {"max_tokens": 5000, "max_cost": "0.12345678"}}).spec

    reloaded = definition.load(json.loads(json.dumps(definition.dump(spec)))).spec

    assert reloaded == spec
    assert str(reloaded.budget.max_cost) == "0.12345678"
    assert definition.spec_hash(reloaded) == definition.spec_hash(spec)


def test_content_hash_ignores_key_order() -> None:
    raw = _example_workflow(EXAMPLES["llm"])
    reordered = reverse_keys(raw)
    assert list(reordered) != list(raw)

    assert definition.spec_hash(definition.load(reordered).spec) == definition.spec_hash(definition.load(raw).spec)


def test_content_hash_changes_with_content() -> None:
    raw = _example_workflow(EXAMPLES["llm"])
    changed = _example_workflow({**EXAMPLES["llm"], "temperature": 0.8})

    assert definition.spec_hash(definition.load(changed).spec) != definition.spec_hash(definition.load(raw).spec)


def test_content_hash_is_hex_sha256() -> None:
    digest = definition.spec_hash(definition.load(workflow(llm("a"))).spec)

    assert len(digest) == 64
    assert int(digest, 16) >= 0
