"""The circuit breaker's state machine: closed, open, a single half-open probe, and back."""

from __future__ import annotations

import pytest

from apps.engine.breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerConfig,
    BreakerState,
    Transition,
    after_call,
    before_call,
    retry_at,
    transition,
)

CONFIG = BreakerConfig(failure_threshold=3, open_seconds=30, probe_timeout_seconds=60, probe_wait_seconds=1)
T0 = 1_000_000.0
OPENED = BreakerState(state=OPEN, failures=3, opened_at=T0)
PROBING = BreakerState(state=HALF_OPEN, failures=3, opened_at=T0, probe_started_at=T0 + 30)


def fail(state: BreakerState, times: int, now: float = T0) -> BreakerState:
    for _ in range(times):
        state = after_call(state, False, now, CONFIG)
    return state


def test_the_defaults_are_five_failures_thirty_seconds_open_and_a_minute_for_a_probe() -> None:
    config = BreakerConfig()

    assert (config.failure_threshold, config.open_seconds, config.probe_timeout_seconds) == (5, 30, 60)


@pytest.mark.parametrize("options", [{"failure_threshold": 0}, {"open_seconds": -1}, {"probe_timeout_seconds": -0.5}, {"probe_wait_seconds": -1}])
def test_a_config_that_cannot_work_is_refused(options: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(options))):
        BreakerConfig(**options)


def test_a_closed_breaker_lets_every_call_through_unchanged() -> None:
    state = BreakerState(failures=2)

    decision = before_call(state, T0, CONFIG)

    assert decision.allowed
    assert decision.retry_at is None
    assert not decision.probe
    assert decision.new_state == state


def test_failures_below_the_threshold_are_counted_and_keep_it_closed() -> None:
    state = fail(BreakerState(), 2)

    assert state == BreakerState(state=CLOSED, failures=2)
    assert before_call(state, T0, CONFIG).allowed


def test_the_threshold_th_consecutive_failure_opens_it() -> None:
    state = fail(BreakerState(), 3, now=T0)

    assert state == BreakerState(state=OPEN, failures=3, opened_at=T0)


def test_a_success_in_closed_resets_the_count_so_failures_must_be_consecutive() -> None:
    state = after_call(fail(BreakerState(), 2), True, T0, CONFIG)
    state = fail(state, 2)

    assert state == BreakerState(state=CLOSED, failures=2)


def test_a_success_with_no_failures_leaves_the_state_as_it_is() -> None:
    assert after_call(BreakerState(), True, T0, CONFIG) == BreakerState()


def test_an_open_breaker_denies_calls_until_open_seconds_have_passed() -> None:
    decision = before_call(OPENED, T0 + 29.9, CONFIG)

    assert not decision.allowed
    assert decision.retry_at == T0 + 30
    assert decision.new_state == OPENED
    assert retry_at(OPENED, CONFIG) == T0 + 30


def test_after_open_seconds_the_first_caller_becomes_the_half_open_probe() -> None:
    decision = before_call(OPENED, T0 + 30, CONFIG)

    assert decision.allowed
    assert decision.probe
    assert decision.new_state == BreakerState(state=HALF_OPEN, failures=3, opened_at=T0, probe_started_at=T0 + 30)


def test_while_the_probe_is_out_every_other_caller_is_denied_with_a_short_wait() -> None:
    decision = before_call(PROBING, T0 + 31, CONFIG)

    assert not decision.allowed
    assert not decision.probe
    assert decision.retry_at == T0 + 32
    assert decision.new_state == PROBING


def test_a_denied_caller_is_not_told_to_wait_past_the_probe_timeout() -> None:
    decision = before_call(PROBING, T0 + 89.5, CONFIG)

    assert decision.retry_at == T0 + 90


def test_of_many_callers_after_open_seconds_exactly_one_gets_the_probe() -> None:
    state, probes = OPENED, 0
    for i in range(10):
        decision = before_call(state, T0 + 30 + i * 0.01, CONFIG)
        state, probes = decision.new_state, probes + decision.probe

    assert probes == 1
    assert state.probe_started_at == T0 + 30


def test_a_probe_silent_past_the_timeout_is_handed_to_the_next_caller() -> None:
    decision = before_call(PROBING, T0 + 90, CONFIG)

    assert decision.allowed
    assert decision.probe
    assert decision.new_state == BreakerState(state=HALF_OPEN, failures=3, opened_at=T0, probe_started_at=T0 + 90)
    assert not before_call(decision.new_state, T0 + 91, CONFIG).allowed


def test_a_successful_probe_closes_it_and_forgets_the_failures() -> None:
    assert after_call(PROBING, True, T0 + 31, CONFIG) == BreakerState()


def test_a_failed_probe_reopens_it_with_a_fresh_opened_at() -> None:
    state = after_call(PROBING, False, T0 + 31, CONFIG)

    assert state == BreakerState(state=OPEN, failures=4, opened_at=T0 + 31)
    assert before_call(state, T0 + 60, CONFIG).retry_at == T0 + 61


def test_a_late_success_while_open_does_not_close_it_the_probe_decides() -> None:
    assert after_call(OPENED, True, T0 + 5, CONFIG) == OPENED


def test_a_late_failure_while_open_is_counted_without_extending_the_wait() -> None:
    state = after_call(OPENED, False, T0 + 5, CONFIG)

    assert state == BreakerState(state=OPEN, failures=4, opened_at=T0)


def test_a_threshold_of_one_opens_on_the_first_failure() -> None:
    config = BreakerConfig(failure_threshold=1)

    assert after_call(BreakerState(), False, T0, config).state == OPEN


def test_no_transition_when_the_state_name_stays_the_same() -> None:
    assert transition(BreakerState(), BreakerState(failures=1)) is None
    assert transition(PROBING, before_call(PROBING, T0 + 90, CONFIG).new_state) is None


@pytest.mark.parametrize(
    ("old", "ok", "now", "expected"),
    [
        pytest.param(BreakerState(failures=2), False, T0, Transition(CLOSED, OPEN, "3 consecutive failures (last error: timeout)"), id="closed-open"),
        pytest.param(PROBING, True, T0 + 31, Transition(HALF_OPEN, CLOSED, "the probe call succeeded"), id="half_open-closed"),
        pytest.param(PROBING, False, T0 + 31, Transition(HALF_OPEN, OPEN, "the probe call failed (last error: timeout)"), id="half_open-open"),
    ],
)
def test_each_transition_after_a_call_is_named_with_its_reason(old: BreakerState, ok: bool, now: float, expected: Transition) -> None:
    assert transition(old, after_call(old, ok, now, CONFIG), error_class="timeout") == expected


def test_the_open_to_half_open_transition_says_how_long_it_was_open() -> None:
    decision = before_call(OPENED, T0 + 42, CONFIG)

    assert transition(OPENED, decision.new_state) == Transition(OPEN, HALF_OPEN, "open for 42 s: one probe call let through")
