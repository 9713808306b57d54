"""What the workflow editor shows besides the text: the starting template, the node snippets and
the live graph preview of a draft.

The preview is drawn by the run page's layered renderer (``graph.layered_layout``) from the
draft as far as it can be read, problems or not: nodes with a readable id are boxes, their
dependencies on nodes that exist are arrows (a dependency that closes a cycle is left out, so the
rest still lays out), and a node that a problem points into is marked. Each box knows where its
node is written (``sourcemap.locate("/nodes/<index>")``), so a click moves the editor's cursor there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, get_args

import yaml
from django.conf import settings
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from apps.engine.sourcemap import Location, SourceSyntaxError, source_map
from apps.engine.spec import NODE_TYPES, Budget, Escalation, LlmRouting, NodeCache, RetryPolicy, RouteRule, TriggerRule, WorkflowSpec
from apps.engine.tools import TOOLS
from apps.providers.pricing import PRICES
from apps.providers.registry import model_served
from apps.workflows.services import LocatedProblem, Validation

from .graph import Box, Layout, layered_layout
from .templatetags.console import _DefinitionDumper

STARTING_TEMPLATE = """\
# A new workflow: a node runs when its depends_on have succeeded.
# Prompts are Jinja2 over input.<field> and nodes.<upstream id>.
schema_version: 1
name: my-workflow
description: Summarise a text, then suggest a title for it.
input_schema:
  type: object
  required: [text]
  properties:
    text:
      type: string
      description: The text to summarise.
      maxLength: 20000
nodes:
  - id: summarize
    type: llm
    model: sim-fast
    system: You write short, faithful summaries.
    prompt: |
      Summarise in three sentences:
      {{ input.text }}
  - id: title
    type: llm
    model: sim-fast
    depends_on: [summarize]
    prompt: |
      Suggest a title for this summary:
      {{ nodes.summarize }}
"""

# One snippet per node type, every field written out with its default or an example; ``id`` is
# the placeholder the editor renames when the id is taken (editor.js ``uniqueId``).
SNIPPETS: dict[str, tuple[str, str]] = {
    "llm": (
        "new_llm",
        """\
  - id: new_llm
    type: llm
    description: ""
    depends_on: []
    model: sim-fast
    system: ""
    prompt: |
      Write about {{ input.text }}
    max_tokens: 512
    temperature: 0.0
    fallbacks: []
    # output_schema: {type: object, properties: {answer: {type: string}}, required: [answer]}
    # cache: {ttl_seconds: 3600}
    # retry: {max_attempts: 3, backoff_seconds: 1.0, backoff_cap_seconds: 60.0}
""",
    ),
    "tool": (
        "new_tool",
        """\
  - id: new_tool
    type: tool
    description: ""
    depends_on: []
    tool: text_stats
    args:
      text: "{{ input.text }}"
""",
    ),
    "router": (
        "new_router",
        """\
  - id: new_router
    type: router
    description: ""
    depends_on: []
    routes: [route_a, route_b]
    rules:
      - when: "'urgent' in input.text"
        route: route_a
    default: route_b
    # or let a model pick, instead of rules and default:
    # llm: {model: sim-fast, prompt: "Pick a route for {{ input.text }}", min_confidence: 0.7, low_confidence_route: route_b}
""",
    ),
    "review": (
        "new_review",
        """\
  - id: new_review
    type: review
    description: ""
    depends_on: [summarize]
    instructions: Check the summary is faithful to the text.
    groups: [reviewers]
    assignees: []
    approvals_required: 1
    due_in: 4h
    escalation: {action: reassign, group: admins}
    # on_reject: a direct successor to take when the review is rejected
""",
    ),
}


@dataclass(frozen=True)
class PreviewNode:
    box: Box
    node_id: str
    node_type: str
    problems: tuple[str, ...]
    location: Location | None  # where the node is written in the text

    @property
    def label(self) -> str:
        problems = f"; {len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}: " + " ".join(self.problems) if self.problems else ""
        return f"{self.node_id}, {self.node_type or 'no type'}{problems}"

    @property
    def short_id(self) -> str:
        return self.node_id if len(self.node_id) <= 19 else self.node_id[:18] + "…"


@dataclass(frozen=True)
class Preview:
    layout: Layout
    nodes: tuple[PreviewNode, ...]
    arrows: tuple[Any, ...]
    complete: bool  # False: some nodes could not be read (no id, not a mapping)


NODE_POINTER = re.compile(r"^/nodes/(\d+)(?:/|$)")
NODE_ID = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def draft_preview(*, text: str, validation: Validation) -> Preview | None:
    """The draft's graph as far as it can be read; None when the text is not YAML or has no nodes."""
    try:
        data = yaml.safe_load(text)
        where = source_map(text)
    except (yaml.YAMLError, SourceSyntaxError, RecursionError):
        return None
    raw_nodes = data.get("nodes") if isinstance(data, dict) else None
    if not isinstance(raw_nodes, list):
        return None
    readable = [(i, node) for i, node in enumerate(raw_nodes) if isinstance(node, dict) and isinstance(node.get("id"), str) and NODE_ID.match(node["id"])]
    by_id: dict[str, tuple[int, dict[str, Any]]] = {}
    for index, node in readable:
        by_id.setdefault(node["id"], (index, node))  # a repeated id: its first node (the problem says so)
    deps = _acyclic({node_id: _deps(node, by_id) for node_id, (_, node) in by_id.items()})
    layout = layered_layout(deps)
    problems = _problems_by_node(validation.problems)
    nodes = tuple(
        PreviewNode(
            box=box,
            node_id=box.node_id,
            node_type=str(by_id[box.node_id][1].get("type") or ""),
            problems=tuple(problems.get(by_id[box.node_id][0], ())),
            location=where.locate(f"/nodes/{by_id[box.node_id][0]}"),
        )
        for box in layout.boxes
    )
    return Preview(layout=layout, nodes=nodes, arrows=layout.arrows, complete=len(by_id) == len(raw_nodes))


def _deps(node: dict[str, Any], by_id: dict[str, Any]) -> list[str]:
    listed = node.get("depends_on")
    if not isinstance(listed, list):
        return []
    return list(dict.fromkeys(d for d in listed if isinstance(d, str) and d in by_id and d != node["id"]))


def _acyclic(deps: dict[str, list[str]]) -> dict[str, list[str]]:
    """The graph in a topological order (what ``layered_layout`` takes), without the dependencies
    that close a cycle (a depth-first search drops each edge back to a node on its path)."""
    order: dict[str, list[str]] = {}
    on_path: set[str] = set()

    def visit(node_id: str) -> None:
        on_path.add(node_id)
        kept = []
        for dep in deps[node_id]:
            if dep in on_path:
                continue
            if dep not in order:
                visit(dep)
            kept.append(dep)
        on_path.discard(node_id)
        order[node_id] = kept

    for node_id in deps:
        if node_id not in order:
            visit(node_id)
    return order


def _problems_by_node(problems: list[LocatedProblem]) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for problem in problems:
        match = NODE_POINTER.match(problem.pointer)
        if match:
            found.setdefault(int(match.group(1)), []).append(problem.message)
    return found


def completion_vocabulary() -> dict[str, Any]:
    """What the editor offers to complete (``editor.js``): every field name of the definition, the
    values of the fields that take a name from a fixed set, and the models a provider serves."""
    nested = (RetryPolicy, NodeCache, Budget, LlmRouting, RouteRule, Escalation)
    keys = {name for model in (WorkflowSpec, *NODE_TYPES.values(), *nested) for name in model.model_fields}
    served = [model for model in PRICES if model_served(model)]
    endpoints = getattr(settings, "DAGWRIGHT_PROVIDERS", {})
    listed = [m for entry in endpoints.values() if isinstance(entry, dict) for m in entry.get("models", ()) if isinstance(m, str) and not m.endswith("*")]
    return {
        "keys": sorted(keys),
        "values": {
            "type": list(NODE_TYPES),
            "tool": sorted(TOOLS),
            "trigger_rule": list(get_args(TriggerRule)),
            "action": ["reassign", "reject", "approve"],
            "model": sorted(set(served) | set(listed)),
        },
        # fields whose values name nodes of the definition (completed from the text itself)
        "node_fields": ["depends_on", "routes", "default", "subject", "on_reject", "route", "low_confidence_route"],
    }


def editable_text(data: dict[str, Any]) -> str:
    """A saved definition as the editor shows it: YAML without the fields left at their defaults,
    each node's ``id`` and ``type`` first. Versions keep the full dump (every default filled in,
    which their content hash is of); read back, this text loads to the same definition, so saving
    it unchanged reuses the version."""
    top = _without_defaults(data, WorkflowSpec, keep={"schema_version", "name", "nodes"})
    nodes = []
    for node in data.get("nodes") or []:
        kind = NODE_TYPES.get(node.get("type")) if isinstance(node, dict) else None
        if kind is None:
            nodes.append(node)
            continue
        short = _without_defaults(node, kind, keep={"id", "type"})
        nodes.append({"id": short.pop("id"), "type": short.pop("type"), **short})
    top.pop("nodes", None)  # last: the snippets append to it
    return yaml.dump({**top, "nodes": nodes}, Dumper=_EditorDumper, sort_keys=False, allow_unicode=True, width=100)


def _without_defaults(data: dict[str, Any], model: type[BaseModel], *, keep: set[str]) -> dict[str, Any]:
    """``data`` in the model's field order (PostgreSQL's jsonb keeps its keys in an order of its
    own), without the fields that hold their default."""
    fields = model.model_fields
    kept = {}
    for key in [*(name for name in fields if name in data), *(name for name in data if name not in fields)]:
        value, field = data[key], fields.get(key)
        if key in keep or field is None or field.is_required() or value != _json_default(field):
            kept[key] = value
    return kept


def _json_default(field: FieldInfo) -> Any:
    default = field.get_default(call_default_factory=True)
    return default.model_dump(mode="json") if isinstance(default, BaseModel) else default


class _EditorDumper(_DefinitionDumper):
    """As the definition pages write YAML, laid out as the starting template and the snippets are
    (which the editor appends to the nodes list): sequences indented under their key, short lists
    of names in flow style (``depends_on: [a, b]``)."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


FLOW_LIST_CHARS = 80


def _represent_list(dumper: yaml.SafeDumper, value: list[Any]) -> yaml.SequenceNode:
    names = all(isinstance(item, str | int | float | bool) and not (isinstance(item, str) and "\n" in item) for item in value)
    flow = names and sum(len(str(item)) + 2 for item in value) <= FLOW_LIST_CHARS
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flow)


_EditorDumper.add_representer(list, _represent_list)
