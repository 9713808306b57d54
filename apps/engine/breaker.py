"""The circuit breaker per (provider, model) as a pure state machine over plain values.

closed ──(failure_threshold consecutive failures)──▶ open ──(open_seconds later, first caller)──▶ half_open
half_open ──(the probe succeeds)──▶ closed;  half_open ──(the probe fails)──▶ open (a fresh opened_at)

Closed lets every call through. Open denies every call until ``opened_at + open_seconds``; the
first caller after that becomes the single half-open probe and every other caller is denied with
a short wait. A probe whose holder has said nothing for ``probe_timeout_seconds`` (its process
died, say) is handed to the next caller.

Only failures that say something about the provider's health count (5xx, timeouts, connection
errors, 429): the caller decides, passing ``ok=False`` for those and ``ok=True`` whenever the
provider answered, invalid output and bad requests included.

Storage and clocks are the caller's: every function takes the state and ``now`` (seconds since
the epoch) and returns a new state, so shared stores can apply them under a lock or a
compare-and-set, and record the ``transition`` between the old state and the new one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
STATES = (CLOSED, OPEN, HALF_OPEN)


@dataclass(frozen=True)
class BreakerConfig:
    failure_threshold: int = 5  # consecutive failures that open a closed breaker
    open_seconds: float = 30.0  # how long an open breaker denies calls before one probe may go
    probe_timeout_seconds: float = 60.0  # a probe silent this long is handed to another caller
    probe_wait_seconds: float = 1.0  # how long callers denied during a probe wait before asking again

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, not {self.failure_threshold}")
        for name in ("open_seconds", "probe_timeout_seconds", "probe_wait_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, not {getattr(self, name)}")


@dataclass(frozen=True)
class BreakerState:
    state: str = CLOSED
    failures: int = 0  # consecutive failures, reset by any success
    opened_at: float | None = None  # when the breaker last opened (open and half_open only)
    probe_started_at: float | None = None  # when the current probe was handed out (half_open only)


@dataclass(frozen=True)
class Decision:
    """May this call go to the provider? If not, ``retry_at`` is when asking again makes sense."""

    allowed: bool
    retry_at: float | None
    new_state: BreakerState
    probe: bool = False  # the call is the single half-open probe: its outcome decides the state


@dataclass(frozen=True)
class Transition:
    from_state: str
    to_state: str
    reason: str


def before_call(state: BreakerState, now: float, config: BreakerConfig) -> Decision:
    """Whether a call may go ahead now, and the state that deciding it leaves behind."""
    if state.state == CLOSED:
        return Decision(allowed=True, retry_at=None, new_state=state)
    if state.state == OPEN:
        reopens_at = (state.opened_at or 0.0) + config.open_seconds
        if now < reopens_at:
            return Decision(allowed=False, retry_at=reopens_at, new_state=state)
        return _probe(replace(state, state=HALF_OPEN), now)
    probe_expires_at = (state.probe_started_at or 0.0) + config.probe_timeout_seconds
    if now >= probe_expires_at:  # the probe's holder vanished: the next caller takes it over
        return _probe(state, now)
    return Decision(allowed=False, retry_at=min(now + config.probe_wait_seconds, probe_expires_at), new_state=state)


def _probe(state: BreakerState, now: float) -> Decision:
    return Decision(allowed=True, retry_at=None, new_state=replace(state, probe_started_at=now), probe=True)


def after_call(state: BreakerState, ok: bool, now: float, config: BreakerConfig) -> BreakerState:
    """The state after a call that was let through ended, healthy (``ok``) or not.

    A result arriving in half-open is taken as the probe's, even from a call let through before
    the breaker opened: it says as much about the provider's health. A late success while open
    changes nothing: the probe decides when the breaker closes.
    """
    if ok:
        return state if state.state == OPEN else BreakerState()
    failures = state.failures + 1
    if state.state == HALF_OPEN or (state.state == CLOSED and failures >= config.failure_threshold):
        return BreakerState(state=OPEN, failures=failures, opened_at=now)
    return replace(state, failures=failures)  # closed below the threshold, or a late failure while open


def transition(old: BreakerState, new: BreakerState, *, error_class: str = "") -> Transition | None:
    """The change of state between ``old`` and ``new`` with a reason people can read, if any."""
    if old.state == new.state:
        return None
    last_error = f" (last error: {error_class})" if error_class else ""
    if old.state == CLOSED:
        reason = f"{new.failures} consecutive failures{last_error}"
    elif new.state == HALF_OPEN:
        waited = (new.probe_started_at or 0.0) - (old.opened_at or 0.0)
        reason = f"open for {waited:.0f} s: one probe call let through"
    elif new.state == CLOSED:
        reason = "the probe call succeeded"
    else:
        reason = f"the probe call failed{last_error}"
    return Transition(from_state=old.state, to_state=new.state, reason=reason)


def retry_at(state: BreakerState, config: BreakerConfig) -> float | None:
    """When an open breaker lets a probe through; None when it is not open."""
    return (state.opened_at or 0.0) + config.open_seconds if state.state == OPEN else None
