"""Small definitions for the engine tests, as plain data (no Django, unlike tests/factories.py)."""

from __future__ import annotations

from typing import Any

import pytest

from apps.engine import definition
from apps.engine.errors import DefinitionError, Problem
from apps.engine.graph import Plan


def llm(node_id: str, prompt: str = "Tell me about {{ input.topic }}.", **extra: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "llm", "model": "sim-fast", "prompt": prompt, **extra}


def tool(node_id: str, name: str = "text_stats", args: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "tool", "tool": name, "args": {"text": "{{ input.topic }}"} if args is None else args, **extra}


def workflow(*nodes: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": "test-flow", "nodes": list(nodes), **extra}


def plan_of(edges: dict[str, list[str]]) -> Plan:
    """A plan from ``{node: [its dependencies]}``; every node a tool node with no templates."""
    nodes = [tool(node_id, args={"text": node_id}, depends_on=deps) for node_id, deps in edges.items()]
    return definition.load(workflow(*nodes))


def load_problems(raw: Any) -> list[Problem]:
    """The problems ``definition.load`` reports for ``raw``, which it must refuse."""
    with pytest.raises(DefinitionError) as caught:
        definition.load(raw)
    return caught.value.problems


def reverse_keys(value: Any) -> Any:
    """``value`` with every mapping's keys in reverse order (the same content, another order)."""
    if isinstance(value, dict):
        return {k: reverse_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reverse_keys(v) for v in value]
    return value
