"""Tool nodes: plain Python functions from a registry.

A tool receives its rendered arguments as keyword arguments plus a ``ToolContext`` and returns a
JSON-serialisable value. Built-ins here are pure; tools with side effects use
``context.idempotency_key`` so a retried or recovered node never repeats its effect.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import templating
from .errors import TemplateError


@dataclass(frozen=True)
class ToolContext:
    run_id: str
    node_id: str
    idempotency_key: str


ToolFunction = Callable[..., Any]
TOOLS: dict[str, ToolFunction] = {}


def tool(name: str) -> Callable[[ToolFunction], ToolFunction]:
    """Register a function as the tool ``name``."""

    def register(fn: ToolFunction) -> ToolFunction:
        TOOLS[name] = fn
        return fn

    return register


class ToolArgumentError(ValueError):
    """The tool was called with arguments it cannot use (a permanent error)."""


_SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")
_WORD = re.compile(r"\b[\w'-]+\b")


@tool("text_stats")
def text_stats(*, text: Any, context: ToolContext) -> dict[str, Any]:
    """Characters, words, sentences, lines and the most frequent words of ``text``."""
    if not isinstance(text, str):
        raise ToolArgumentError("text_stats needs 'text' to be a string")
    words = _WORD.findall(text.lower())
    counts: dict[str, int] = {}
    for w in words:
        if len(w) > 3:
            counts[w] = counts.get(w, 0) + 1
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    return {
        "characters": len(text),
        "words": len(words),
        "sentences": len(_SENTENCE_END.findall(text)) or (1 if text.strip() else 0),
        "lines": text.count("\n") + 1 if text else 0,
        "top_words": [w for w, _ in top],
    }


def _deep_merge(left: dict, right: dict) -> dict:
    merged = dict(left)
    for key, value in right.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@tool("json_merge")
def json_merge(*, objects: Any, context: ToolContext) -> dict[str, Any]:
    """Deep-merge a list of objects, later ones winning."""
    if not isinstance(objects, list) or not all(isinstance(o, dict) for o in objects):
        raise ToolArgumentError("json_merge needs 'objects' to be a list of objects")
    merged: dict[str, Any] = {}
    for obj in objects:
        merged = _deep_merge(merged, obj)
    return merged


def _pick(value: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


@tool("json_pick")
def json_pick(*, value: Any, paths: Any, context: ToolContext) -> dict[str, Any]:
    """Pick dotted ``paths`` (``a.b.0``) out of ``value``; a missing path gives null."""
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise ToolArgumentError("json_pick needs 'paths' to be a list of dotted strings")
    return {path: _pick(value, path) for path in paths}


@tool("render")
def render_template(*, template: Any, context: ToolContext, **values: Any) -> str:
    """Render ``template`` in the sandbox with the other arguments as its variables."""
    if not isinstance(template, str):
        raise ToolArgumentError("render needs 'template' to be a string")
    try:
        return templating.render(template, values)  # the sandbox and its size limit, as for prompts
    except TemplateError as exc:
        raise ToolArgumentError(f"template failed: {exc}") from exc
