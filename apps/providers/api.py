"""Circuit breakers over the JSON API: read-only, for anyone who may view runs."""

from __future__ import annotations

from datetime import datetime

from django.http import HttpRequest
from ninja import Router, Schema

from apps.api.auth import requires
from apps.api.problems import problem_responses
from apps.workflows.roles import can_view

from .selectors import BreakerView, breaker_overview

router = Router(tags=["breakers"], auth=requires(can_view))


class BreakerTransitionOut(Schema):
    from_state: str
    to_state: str
    reason: str
    at: datetime


class BreakerOut(Schema):
    provider: str
    model: str
    state: str
    failures: int
    opened_at: datetime | None
    retry_at: datetime | None
    probe_started_at: datetime | None
    transitions: list[BreakerTransitionOut]


@router.get("/breakers", response={200: list[BreakerOut], **problem_responses()}, summary="List circuit breakers")
def breaker_list(request: HttpRequest) -> list[BreakerView]:
    """Every known circuit breaker per (provider, model): its state (``closed``, ``open`` or
    ``half_open``), consecutive failures, when it opened, when an open breaker lets a probe call
    through (``retry_at``), and its ten latest transitions, newest first."""
    return breaker_overview()
