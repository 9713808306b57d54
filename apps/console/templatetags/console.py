"""Formatting for the operator pages.

Every filter here returns a plain ``str`` (never a SafeString), so whatever it is given, model
output or run input included, is still autoescaped by the template that prints it.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import yaml
from django import template
from django.utils import timezone

register = template.Library()

PREVIEW_CHARS = 120


@register.filter
def pretty_json(value: Any) -> str:
    """A JSON value indented for a ``<pre>``; a bare string (a model's text) is shown as itself."""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


@register.filter
def pretty_raw(text: str | None) -> str:
    """A raw model response indented when it is JSON, as it came otherwise (never parsed further)."""
    if not text:
        return ""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


@register.filter
def json_preview(value: Any, limit: int = PREVIEW_CHARS) -> str:
    """One line of a JSON value (a string as itself), cut to ``limit`` characters."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@register.filter
def seconds(value: float | None) -> str:
    """A duration for people: ``850 ms``, ``12.3 s``, ``4 min 05 s``, ``2 h 03 min``."""
    if value is None:
        return "—"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s"
    minutes, secs = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@register.filter
def money(value: Decimal | float | None) -> str:
    """A cost in dollars with enough digits to tell small model calls apart."""
    if value is None:
        return "—"
    amount = Decimal(value)
    if amount == 0:
        return "$0"
    places = 2 if amount >= 1 else 4 if amount >= Decimal("0.01") else 6
    return f"${amount:,.{places}f}"


@register.filter
def thousands(value: int | None) -> str:
    """``12345`` → ``12,345``."""
    return "—" if value is None else f"{int(value):,}"


@register.filter
def status_label(value: str | None) -> str:
    """``waiting_review`` → ``waiting review``."""
    return (value or "").replace("_", " ")


@register.filter
def short_id(value: Any) -> str:
    """The first block of a uuid, enough to tell runs apart on one page."""
    return str(value)[:8]


@register.filter
def percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


STATUS_ICONS = {
    "pending": "○",
    "queued": "⋯",
    "running": "▶",
    "retry_wait": "↻",
    "waiting_review": "‖",
    "succeeded": "✓",
    "failed": "✗",
    "skipped": "↷",
    "cancelled": "⊘",
    "budget_exceeded": "$",
}


@register.filter
def status_icon(value: str | None) -> str:
    """A shape per status, so a badge never relies on its colour alone."""
    return STATUS_ICONS.get(value or "", "•")


class _DefinitionDumper(yaml.SafeDumper):
    """YAML the way authors write it: multi-line prompts as ``|`` blocks, keys in spec order."""


def _represent_text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_DefinitionDumper.add_representer(str, _represent_text)


@register.filter
def as_yaml(value: Any) -> str:
    return yaml.dump(value, Dumper=_DefinitionDumper, sort_keys=False, allow_unicode=True, width=100)


@register.filter
def node_time(node: Any) -> str:
    """How long a node took, or has been running so far (marked with an ellipsis)."""
    if node.duration is not None:
        return seconds(node.duration)
    if node.started_at and node.status == "running":
        return seconds((timezone.now() - node.started_at).total_seconds()) + "…"
    return "—"
