"""Definitions round-trip losslessly, for every node type, and hash the same whatever the key order."""

from __future__ import annotations

import copy
import json
from typing import Any, get_args

import pytest
from pydantic import BaseModel

from apps.engine import definition
from apps.engine.spec import NODE_TYPES, WorkflowSpec
from tests.engine.defs import llm, reverse_keys, tool, workflow

NO_RETRY = {"max_attempts": 1, "backoff_seconds": 0, "backoff_cap_seconds": 0}
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
        cache={"ttl_seconds": 3600},
        fallbacks=["sim-mini", "gpt-4o-mini"],
        retry={"max_attempts": 5, "backoff_seconds": 2.5, "backoff_cap_seconds": 30},
        trigger_rule="none_failed_min_one_success",
    ),
    "tool": tool(
        "pick",
        "json_pick",
        {"value": "{{ nodes.stats }}", "paths": ["words", "top_words.0"], "nested": {"n": 3, "flag": True, "none": None}},
        depends_on=["stats"],
        description="Pick the counts",
        retry=NO_RETRY,
        trigger_rule="all_done",
    ),
    "router": {
        "id": "triage",
        "type": "router",
        "depends_on": ["stats"],
        "description": "Long texts go to review",
        "routes": ["review", "publish"],
        "rules": [{"when": "nodes.stats.words > 500 or input.topic == 'legal'", "route": "review"}],
        "default": "publish",
        "retry": NO_RETRY,
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
        "retry": NO_RETRY,
        "trigger_rule": "all_success",
    },
}
# The fields the examples above cannot hold at once: a router asks a model instead of rules, an
# escalation reassigns to a group instead of approving.
OTHER_WAYS: dict[str, dict[str, Any]] = {
    "llm-router": {
        "id": "triage",
        "type": "router",
        "depends_on": ["stats"],
        "routes": ["review", "publish"],
        "llm": {
            "model": "sim-smart",
            "prompt": "Route a text of {{ nodes.stats.words }} words.",
            "system": "You route texts; today is {{ input.day | default('today') }}.",
            "min_confidence": 0.7,
            "low_confidence_route": "review",
            "max_tokens": 64,
            "temperature": 0.3,
            "fallbacks": ["sim-mini"],
        },
        "cache": {"ttl_seconds": 600},
    },
    "reassigning-review": {
        "id": "check",
        "type": "review",
        "depends_on": ["stats"],
        "groups": ["editors"],
        "due_in": "4h",
        "escalation": {"action": "reassign", "group": "leads"},
        "trigger_rule": "all_done",
    },
}
SOURCES = {**{f"{kind}-example": node for kind, node in EXAMPLES.items()}, **OTHER_WAYS}
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
        retry={"max_attempts": 4, "backoff_seconds": 0.5, "backoff_cap_seconds": 10},
        budget={"max_tokens": 9000, "max_cost": "0.25"},
    )


def as_written(dumped: Any, source: Any) -> Any:
    """``dumped`` cut down to the shape of ``source``: what the dump says about each thing the
    source wrote (the defaults it fills in are left out; a field it lost reads as missing)."""
    if isinstance(source, dict) and isinstance(dumped, dict):
        return {key: as_written(dumped[key], value) if key in dumped else "<missing>" for key, value in source.items()}
    if isinstance(source, list) and isinstance(dumped, list) and len(source) == len(dumped):
        return [as_written(d, s) for d, s in zip(dumped, source, strict=True)]
    return dumped


def _spec_model(annotation: Any) -> type[BaseModel] | None:
    """The one spec model a field holds (alone, optional or in a list), if any; None for a union of node types."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    models = {model for arg in get_args(annotation) if (model := _spec_model(arg)) is not None}
    return models.pop() if len(models) == 1 else None


def every_field(model: type[BaseModel], prefix: str = "") -> set[str]:
    """The fields of ``model`` and of the models inside it, as dotted paths."""
    paths = set()
    for name, info in model.model_fields.items():
        paths.add(prefix + name)
        inner = _spec_model(info.annotation)
        if inner is not None:
            paths |= every_field(inner, f"{prefix}{name}.")
    return paths


def fields_given(model: type[BaseModel], raw: dict[str, Any], prefix: str = "") -> set[str]:
    """The fields of ``model`` (and of the models inside it) to which ``raw`` gives a value other
    than the default: only such a value shows, once loaded and dumped, that the field survived."""
    paths = set()
    for name, info in model.model_fields.items():
        if name not in raw or raw[name] == info.get_default(call_default_factory=True):
            continue
        paths.add(prefix + name)
        inner = _spec_model(info.annotation)
        if inner is not None:
            for item in raw[name] if isinstance(raw[name], list) else [raw[name]]:
                paths |= fields_given(inner, item, f"{prefix}{name}.")
    return paths


def test_every_node_type_has_an_example() -> None:
    assert set(EXAMPLES) == set(NODE_TYPES), "add a round-trip example for each node type"


@pytest.mark.parametrize("node_type", sorted(NODE_TYPES))
def test_the_examples_give_every_field_of_every_node_type_a_value_of_its_own(node_type: str) -> None:
    given = set().union(*(fields_given(NODE_TYPES[node_type], node) for node in SOURCES.values() if node["type"] == node_type))

    assert given == every_field(NODE_TYPES[node_type])


def test_the_example_workflow_gives_every_workflow_field_a_value_of_its_own() -> None:
    # schema_version has a single possible value; the nodes are checked one type at a time above
    assert fields_given(WorkflowSpec, _example_workflow(EXAMPLES["llm"])) == every_field(WorkflowSpec) - {"schema_version"}


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_the_dump_says_everything_the_source_said(name: str) -> None:
    source = _example_workflow(SOURCES[name])
    dumped = definition.dump(definition.load(copy.deepcopy(source)).spec)  # a copy: the source stays as written

    assert as_written(dumped, source) == source
    assert as_written(json.loads(json.dumps(dumped)), source) == source
    assert as_written(definition.dump(definition.load(dumped).spec), source) == source


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
