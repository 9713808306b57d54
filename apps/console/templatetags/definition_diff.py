"""Filters for ``console/_definition_diff.html``: a unified diff's lines by kind, and a field's value.

Like the console's filters, each returns plain strings (never a SafeString): a definition's text
is written by people and may hold anything, and the template escapes it.
"""

from __future__ import annotations

import json
from typing import Any

from django import template

register = template.Library()


@register.filter
def unified_lines(unified: str) -> list[tuple[str, str]]:
    """``(kind, line)`` for each line of a unified diff: ``file`` (the ---/+++ header), ``hunk``
    (@@), ``added``, ``removed`` or ``context``."""
    lines = []
    for line in unified.splitlines():
        if line.startswith(("--- ", "+++ ")) and len(lines) < 2:
            kind = "file"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "added"
        elif line.startswith("-"):
            kind = "removed"
        else:
            kind = "context"
        lines.append((kind, line))
    return lines


@register.filter
def field_value(value: Any) -> str:
    """A field's value before or after a change: text as itself, anything else as indented JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)
