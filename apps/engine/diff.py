"""What changed between two definitions: by node and by field, and as a plain unified diff.

``definition_diff(before, after)`` takes two definitions as plain data, best as
``definition.dump`` writes them (every field present, defaults filled in, so a field left out and
the same field written with its default value are no change). Nodes are matched by id:

- ``added`` and ``removed`` hold whole node definitions;
- ``changed`` holds, per node, a ``FieldChange`` for every field that differs, for every field of
  every node type, compared generically (a field a node type gains later is diffed too). The
  spec's own nested models (``retry``, ``cache``, a router's ``llm``, a review's ``escalation``,
  the workflow's ``budget``) are compared field by field (``llm.prompt``); free-form values
  (``output_schema``, ``args``, ``input_schema``, ``rules``) as a whole, before and after.
  Text fields (prompts, system prompts, descriptions, instructions, expressions) carry a
  word-level diff: ``equal``/``insert``/``delete`` segments that join back into each side.
  Lists of names (``depends_on``, ``fallbacks``, ``routes``, ``assignees``, ``groups``) carry
  what was ``added`` and ``removed`` besides before/after;
- ``top`` holds the changes outside the nodes (description, input_schema, retry, budget, ...);
- ``unified`` is the unified diff of both definitions dumped as YAML, in the definition's order.

Each change carries ``pointer``, the field's JSON pointer in ``after`` (in ``before`` for a
removed node), so an editor can move to it.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import yaml

NESTED = frozenset({"retry", "cache", "llm", "escalation", "budget"})
TEXT = frozenset({"prompt", "system", "description", "instructions", "when"})
NAME_LISTS = frozenset({"depends_on", "fallbacks", "routes", "assignees", "groups"})
_WORDS = re.compile(r"\s+|\w+|[^\w\s]")


@dataclass(frozen=True)
class TextSegment:
    op: Literal["equal", "insert", "delete"]
    text: str


@dataclass(frozen=True)
class FieldChange:
    field: str  # dotted within its node or the definition: "prompt", "llm.prompt", "retry.max_attempts"
    pointer: str
    before: Any
    after: Any
    text: list[TextSegment] | None = None  # text fields only
    added: list[Any] | None = None  # lists of names only
    removed: list[Any] | None = None


@dataclass(frozen=True)
class NodeChange:
    id: str
    type: str  # the node's type after the change
    changes: list[FieldChange]


@dataclass(frozen=True)
class DefinitionDiff:
    added: list[dict[str, Any]] = field(default_factory=list)
    removed: list[dict[str, Any]] = field(default_factory=list)
    changed: list[NodeChange] = field(default_factory=list)
    top: list[FieldChange] = field(default_factory=list)
    unified: str = ""

    @property
    def identical(self) -> bool:
        return not (self.added or self.removed or self.changed or self.top)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "identical": self.identical}


def word_diff(before: str, after: str) -> list[TextSegment]:
    """A word-level diff: segments in order; equal + delete segments join into ``before``, equal + insert into ``after``."""
    a, b = _WORDS.findall(before), _WORDS.findall(after)
    segments: list[TextSegment] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            _append(segments, "equal", "".join(a[i1:i2]))
            continue
        _append(segments, "delete", "".join(a[i1:i2]))
        _append(segments, "insert", "".join(b[j1:j2]))
    return segments


def _append(segments: list[TextSegment], op: Literal["equal", "insert", "delete"], text: str) -> None:
    if not text:
        return
    if segments and segments[-1].op == op:
        segments[-1] = TextSegment(op, segments[-1].text + text)
    else:
        segments.append(TextSegment(op, text))


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _field_changes(before: dict[str, Any], after: dict[str, Any], pointer: str, prefix: str = "") -> list[FieldChange]:
    changes = []
    for key in [*before, *(k for k in after if k not in before)]:
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        name, where = prefix + key, f"{pointer}/{_escape(key)}"
        if key in NESTED and isinstance(old, dict) and isinstance(new, dict):
            changes.extend(_field_changes(old, new, where, name + "."))
        else:
            changes.append(_change(key, name, where, old, new))
    return changes


def _change(key: str, name: str, pointer: str, old: Any, new: Any) -> FieldChange:
    if key in TEXT and isinstance(old, str | None) and isinstance(new, str | None):
        return FieldChange(name, pointer, old, new, text=word_diff(old or "", new or ""))
    if key in NAME_LISTS and isinstance(old, list | None) and isinstance(new, list | None):
        old_names, new_names = old or [], new or []
        added, removed = [n for n in new_names if n not in old_names], [n for n in old_names if n not in new_names]
        return FieldChange(name, pointer, old, new, added=added, removed=removed)
    return FieldChange(name, pointer, old, new)


def _nodes_by_id(definition: dict[str, Any]) -> dict[str, tuple[int, dict[str, Any]]]:
    nodes = definition.get("nodes") or []
    return {node["id"]: (i, node) for i, node in enumerate(nodes) if isinstance(node, dict) and "id" in node}


def unified_diff(before: dict[str, Any], after: dict[str, Any], *, before_label: str = "before", after_label: str = "after") -> str:
    """The unified diff of both definitions dumped as YAML (keys in the definition's order)."""
    lines = [_yaml(before).splitlines(keepends=True), _yaml(after).splitlines(keepends=True)]
    return "".join(difflib.unified_diff(*lines, fromfile=before_label, tofile=after_label))


def _yaml(definition: dict[str, Any]) -> str:
    return yaml.safe_dump(definition, sort_keys=False, allow_unicode=True, width=100)


def definition_diff(before: dict[str, Any], after: dict[str, Any], *, before_label: str = "before", after_label: str = "after") -> DefinitionDiff:
    """The structured and the unified diff from ``before`` to ``after`` (see the module's docstring)."""
    old_nodes, new_nodes = _nodes_by_id(before), _nodes_by_id(after)
    changed = []
    for node_id, (index, node) in new_nodes.items():
        if node_id in old_nodes and old_nodes[node_id][1] != node:
            changes = _field_changes(old_nodes[node_id][1], node, f"/nodes/{index}")
            changed.append(NodeChange(node_id, str(node.get("type", "")), changes))
    top = _field_changes({k: v for k, v in before.items() if k != "nodes"}, {k: v for k, v in after.items() if k != "nodes"}, "")
    return DefinitionDiff(
        added=[node for node_id, (_, node) in new_nodes.items() if node_id not in old_nodes],
        removed=[node for node_id, (_, node) in old_nodes.items() if node_id not in new_nodes],
        changed=changed,
        top=top,
        unified=unified_diff(before, after, before_label=before_label, after_label=after_label),
    )
