"""Formatting for the review console.

Like the console's filters, each returns a plain ``str`` (never a SafeString): model output and
run input printed through them are still autoescaped by the template.
"""

from __future__ import annotations

from typing import Any

from django import template

from apps.reviews.selectors import ROLE_LABELS, may_use_reviews

register = template.Library()


@register.filter
def offers_reviews(user: Any) -> bool:
    """Whether the navigation shows the Reviews link to ``user``."""
    return may_use_reviews(user)


@register.filter
def graph_role(role: str) -> str:
    return ROLE_LABELS.get(role, "")
