from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import F, Window
from django.db.models.functions import RowNumber

from apps.engine import breaker as machine
from apps.engine.breaker import BreakerState

from .breaker import as_datetime, breaker_config, breaker_store
from .models import BreakerTransition

# A shape and a palette colour (the status badges' Okabe-Ito classes) per state: never colour alone.
BREAKER_ICONS = {machine.CLOSED: "●", machine.HALF_OPEN: "◐", machine.OPEN: "○"}
BREAKER_TONES = {machine.CLOSED: "succeeded", machine.HALF_OPEN: "retry_wait", machine.OPEN: "failed"}


@dataclass(frozen=True)
class BreakerView:
    provider: str
    model: str
    state: str
    failures: int
    opened_at: datetime | None
    retry_at: datetime | None  # when an open breaker lets its probe through
    probe_started_at: datetime | None
    transitions: list[BreakerTransition] = field(default_factory=list)  # newest first

    @property
    def label(self) -> str:
        return self.state.replace("_", " ")

    @property
    def icon(self) -> str:
        return BREAKER_ICONS.get(self.state, "•")

    @property
    def tone(self) -> str:
        return BREAKER_TONES.get(self.state, "pending")


def breaker_transitions_recent(*, per_breaker: int = 10, models: Collection[str] | None = None) -> dict[tuple[str, str], list[BreakerTransition]]:
    """The latest ``per_breaker`` transitions of each breaker, newest first, in one query."""
    rows = BreakerTransition.objects.annotate(
        rank=Window(RowNumber(), partition_by=[F("provider"), F("model")], order_by=[F("at").desc(), F("id").desc()])
    ).filter(rank__lte=per_breaker)
    if models is not None:
        rows = rows.filter(model__in=list(models))
    found: dict[tuple[str, str], list[BreakerTransition]] = defaultdict(list)
    for row in rows.order_by("provider", "model", "-at", "-id"):
        found[(row.provider, row.model)].append(row)
    return found


def breaker_overview(*, models: Collection[str] | None = None, transitions_per_breaker: int = 10) -> list[BreakerView]:
    """Every known breaker (one with stored state or a recorded transition), by provider and model,
    with its recent transitions; only those of ``models`` when given (a run page's models).

    A breaker known only from its transitions (its Redis state was lost, say) is closed: with no
    state, that is how it behaves.
    """
    config = breaker_config()
    states = breaker_store().states()
    transitions = breaker_transitions_recent(per_breaker=transitions_per_breaker, models=models)
    keys = sorted(k for k in {*states, *transitions} if models is None or k[1] in models)
    views = []
    for key in keys:
        state = states.get(key, BreakerState())
        views.append(
            BreakerView(
                provider=key[0],
                model=key[1],
                state=state.state,
                failures=state.failures,
                opened_at=as_datetime(state.opened_at),
                retry_at=as_datetime(machine.retry_at(state, config)),
                probe_started_at=as_datetime(state.probe_started_at),
                transitions=transitions.get(key, []),
            )
        )
    return views
