"""Routers: which route a router takes, by its rules or by a model's answer.

A router's output is its decision, and the scheduler reads the route from it::

    {"route": "billing", "confidence": 0.82 | None, "reason": "...", "rule": 0 | "default" | None}

``rule`` is the index of the rule that matched, ``"default"`` when none did, and None for an llm
router, whose output also keeps the model's own pick as ``proposed`` (it differs from ``route``
when the confidence was below ``min_confidence`` and the low-confidence route was taken).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import templating
from .errors import TemplateError
from .spec import RouterNode


def route_schema(node: RouterNode) -> dict[str, Any]:
    """The JSON Schema a routing model's answer must follow."""
    return {
        "type": "object",
        "properties": {
            "route": {"type": "string", "enum": list(node.routes)},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "reason": {"type": "string"},
        },
        "required": ["route", "confidence", "reason"],
        "additionalProperties": False,
    }


def route_by_rules(node: RouterNode, context: Mapping[str, Any]) -> dict[str, Any]:
    """The first rule whose expression is true for ``context`` wins, else the default route.

    Raises TemplateError naming the rule when an expression fails: the router fails rather than
    guess, since a broken rule would otherwise send every run down the default route.
    """
    assert node.rules is not None
    assert node.default is not None
    for index, rule in enumerate(node.rules):
        try:
            matched = templating.evaluate_condition(rule.when, context)
        except TemplateError as exc:
            raise TemplateError(f"rule {index} ({rule.when}): {exc}") from exc
        if matched:
            return {"route": rule.route, "confidence": None, "reason": f"rule {index} matched: {rule.when}", "rule": index}
    return {"route": node.default, "confidence": None, "reason": "no rule matched", "rule": "default"}


def route_by_answer(node: RouterNode, answer: Mapping[str, Any]) -> dict[str, Any]:
    """The decision for a model's (schema-valid) answer: its route, unless its confidence is
    below ``min_confidence``, in which case the low-confidence route."""
    assert node.llm is not None
    confidence = float(answer["confidence"])
    confident = confidence >= node.llm.min_confidence
    route = answer["route"] if confident else node.llm.low_confidence_route
    reason = str(answer["reason"])
    if not confident:
        reason = f"confidence {confidence:g} is below {node.llm.min_confidence:g}; the model proposed '{answer['route']}': {reason}"
    return {"route": route, "confidence": confidence, "reason": reason, "rule": None, "proposed": answer["route"]}


def chosen_route(output: Any) -> str | None:
    """The route in a router's output, or None when the output holds none."""
    route = output.get("route") if isinstance(output, dict) else None
    return route if isinstance(route, str) else None
