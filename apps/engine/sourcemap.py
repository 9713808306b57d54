"""Where a JSON pointer is in the YAML or JSON text it was read from, by the parser's own marks.

``source_map(text)`` composes the text with PyYAML (JSON is YAML: flow style is read the same
way) and keeps the node tree with each node's start and end marks; ``locate(pointer)`` walks the
tree along the pointer. Nothing is found by searching the text, so a key repeated in another node,
a multi-line block scalar or a value reached through an alias all land where the parser read them.

- A member of a mapping spans from its key to the end of its value (an editor marks the field).
- A value reached through an alias (``retry: *defaults``) is located at the alias; what lies
  below it, at the anchored definition (that text is what would have to change).
- Merge keys (``<<: *base``) are followed as YAML merges them: a key of the mapping itself first,
  then the merged mappings in order.
- A pointer to something the text does not contain (a required field left out) is located at the
  closest ancestor that exists, with ``exact`` false.

Lines and columns are 1-based; ``offset`` and ``end_offset`` count characters from the start of
the text (what a browser editor positions by). A syntax error raises ``SourceSyntaxError`` with
the line and column the parser stopped at.

PyYAML is a parser, not a framework: the engine stays free of Django and Celery.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import yaml

MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class Location:
    line: int
    column: int
    end_line: int
    end_column: int
    offset: int
    end_offset: int
    exact: bool = True

    def as_dict(self) -> dict[str, int | bool]:
        return {
            "line": self.line, "column": self.column, "end_line": self.end_line, "end_column": self.end_column,
            "offset": self.offset, "end_offset": self.end_offset, "exact": self.exact,
        }  # fmt: skip


class SourceSyntaxError(ValueError):
    """The text is not YAML (nor JSON); ``line`` and ``column`` (1-based) say where the parser stopped."""

    def __init__(self, message: str, line: int = 1, column: int = 1, offset: int = 0):
        self.message, self.line, self.column, self.offset = message, line, column, offset
        super().__init__(f"line {line}, column {column}: {message}")


class _MarkedLoader(yaml.SafeLoader):
    """Composes as SafeLoader does, but an alias becomes a shallow copy of its anchored node
    carrying the alias's own marks, so the alias can be located where it is written."""

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        if not self.check_event(yaml.AliasEvent):
            return super().compose_node(parent, index)
        event = self.peek_event()
        alias = copy.copy(super().compose_node(parent, index))
        alias.start_mark, alias.end_mark = event.start_mark, event.end_mark
        return alias


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _tokens(pointer: str) -> list[str]:
    if not pointer:
        return []
    if not pointer.startswith("/"):
        raise ValueError(f"'{pointer}' is not a JSON pointer")
    return [_unescape(t) for t in pointer[1:].split("/")]


def _span(start: yaml.Mark, end: yaml.Mark, exact: bool = True) -> Location:
    return Location(start.line + 1, start.column + 1, end.line + 1, end.column + 1, start.index, end.index, exact)


def _member(mapping: yaml.MappingNode, key: str, seen: set[int] | None = None) -> tuple[yaml.Node, yaml.Node] | None:
    """The (key node, value node) of ``key``, its own members before merged ones, as YAML merges."""
    merged: list[yaml.Node] = []
    for key_node, value_node in mapping.value:
        if key_node.tag == MERGE_TAG:
            merged.extend(value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node])
        elif isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            return key_node, value_node
    seen = seen if seen is not None else set()
    for source in merged:
        if isinstance(source, yaml.MappingNode) and id(source) not in seen:
            seen.add(id(source))
            found = _member(source, key, seen)
            if found:
                return found
    return None


def _child(node: yaml.Node, token: str) -> tuple[yaml.Node | None, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        return _member(node, token)
    if isinstance(node, yaml.SequenceNode) and token.isdigit() and int(token) < len(node.value):
        return None, node.value[int(token)]
    return None


class SourceMap:
    """A composed document and the marks of each of its nodes."""

    def __init__(self, root: yaml.Node | None, text: str):
        self.root, self.text = root, text

    def locate(self, pointer: str) -> Location:
        """Where ``pointer`` is in the text; the closest existing ancestor when it is not there."""
        if self.root is None:
            return Location(1, 1, 1, 1, 0, 0, exact=not pointer)
        node, key_node = self.root, None
        for token in _tokens(pointer):
            found = _child(node, token)
            if found is None:
                return _span((key_node or node).start_mark, node.end_mark, exact=False)
            key_node, node = found
        return _span((key_node or node).start_mark, node.end_mark)


def source_map(text: str) -> SourceMap:
    """Compose ``text`` (YAML or JSON); raises SourceSyntaxError at the parser's mark."""
    loader = None
    try:
        loader = _MarkedLoader(text)  # its reader refuses unprintable characters here already
        return SourceMap(loader.get_single_node(), text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = " ".join(part for part in (exc.context, exc.problem) if part) or "not valid YAML"
        if mark is None:
            raise SourceSyntaxError(message) from None
        raise SourceSyntaxError(message, mark.line + 1, mark.column + 1, mark.index) from None
    except yaml.YAMLError as exc:
        raise SourceSyntaxError(str(exc)) from None
    except RecursionError:  # the composer recurses once per level
        raise SourceSyntaxError("nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()
