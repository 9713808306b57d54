"""Fault injection in the simulated provider: classified failures, honest rates, exact replays."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from apps.providers.base import ModelRequest, ProviderError
from apps.providers.faults import Faults
from apps.providers.registry import provider_for
from apps.providers.simulated import CANCEL_CHECK_SECONDS, SimulatedProvider, SimulationConfig, schema_errors

SCHEMA = {
    "type": "object",
    "required": ["category", "summary"],
    "properties": {"category": {"enum": ["billing", "bug", "other"]}, "summary": {"type": "string", "maxLength": 200}},
}
PROMPT = "Classify this support ticket: the customer cannot download their invoice after the billing update."
PROMPTS = [f"Summarise ticket {i}: customer {i * 7} reports the export failing after the update." for i in range(400)]
NOON = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def provider(faults: dict[str, Any], *, seed: int = 7, now: datetime = NOON, sleep: Callable[[float], None] = time.sleep) -> SimulatedProvider:
    return SimulatedProvider(SimulationConfig(seed=seed, latency="fixed:0", faults=faults), clock=lambda: now, sleep=sleep)


def request(prompt: str = PROMPT, *, attempt: int = 1, **extra: Any) -> ModelRequest:
    return ModelRequest(model="sim-fast", prompt=prompt, attempt=attempt, **extra)


def failure(sim: SimulatedProvider, req: ModelRequest | None = None) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        sim.complete(req or request())
    return caught.value


def outcome(sim: SimulatedProvider, req: ModelRequest) -> str:
    """What happened to one call: an error class, a fault named in the raw response, or "ok"."""
    try:
        response = sim.complete(req)
    except ProviderError as exc:
        return exc.error_class
    return json.loads(response.raw)["simulated"].get("fault", "ok")


def outcomes(sim: SimulatedProvider, *, attempt: int = 1, prompts: list[str] = PROMPTS) -> list[str]:
    return [outcome(sim, request(p, attempt=attempt)) for p in prompts]


# --- each fault, classified -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("faults", "error_class", "retryable", "retry_after", "error_type"),
    [
        pytest.param({"error_rate": 1.0}, "server_error", True, None, "server_error", id="server-error"),
        pytest.param({"rate_limit": {"rate": 1.0, "retry_after_seconds": 2.5}}, "rate_limited", True, 2.5, "requests", id="rate-limited"),
        pytest.param({"timeout_rate": 1.0, "timeout_seconds": 0.01}, "timeout", True, None, "timeout", id="timeout"),
        pytest.param({"outage_until": "2026-05-01T13:00:00Z"}, "unavailable", True, None, "service_unavailable", id="outage"),
        pytest.param({"permanent_error_rate": 1.0}, "bad_request", False, None, "invalid_request_error", id="bad-request"),
    ],
)
def test_each_failure_is_classified_with_an_openai_style_error_body(faults, error_class, retryable, retry_after, error_type) -> None:
    error = failure(provider(faults))

    assert (error.error_class, error.retryable, error.retry_after) == (error_class, retryable, retry_after)
    body = json.loads(error.raw)
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == error_type
    assert body["error"]["message"] in str(error)
    assert body["simulated"]["fault"] == error_class
    assert body["simulated"]["attempt"] == 1
    assert f"HTTP {body['simulated']['status']}" in str(error)


def test_server_errors_are_500_502_and_503() -> None:
    sim = provider({"error_rate": 1.0})

    statuses = Counter(json.loads(failure(sim, request(p)).raw)["simulated"]["status"] for p in PROMPTS[:60])

    assert set(statuses) == {500, 502, 503}


def test_a_rate_limit_carries_its_retry_after_in_the_body() -> None:
    body = json.loads(failure(provider({"rate_limit": {"rate": 1.0, "retry_after_seconds": 7}})).raw)

    assert body["simulated"]["status"] == 429
    assert body["simulated"]["retry_after_seconds"] == 7
    assert body["error"]["code"] == "rate_limit_exceeded"
    assert "try again in 7s" in body["error"]["message"]


def test_permanent_errors_are_400s() -> None:
    body = json.loads(failure(provider({"permanent_error_rate": 1.0})).raw)

    assert body["simulated"]["status"] == 400
    assert body["error"]["param"] == "messages"


def test_a_timeout_blocks_for_timeout_seconds_before_failing() -> None:
    waits: list[float] = []

    error = failure(provider({"timeout_rate": 1.0, "timeout_seconds": 2.5}, sleep=waits.append))

    assert waits == [2.5]  # the wait the provider made, not how long the machine took
    assert json.loads(error.raw)["simulated"]["status"] == 504


@pytest.mark.parametrize(
    "setup",
    [
        pytest.param({"latency": "fixed:60000"}, id="latency"),
        pytest.param({"latency": "fixed:0", "faults": {"timeout_rate": 1.0, "timeout_seconds": 60}}, id="timeout"),
        pytest.param({"latency": "fixed:0", "faults": {"latency_spike": {"rate": 1.0, "ms": 60000}}}, id="latency-spike"),
    ],
)
def test_a_cancelled_call_stops_waiting_at_the_next_check(setup: dict[str, Any]) -> None:
    """The wait is cut into short steps, each after asking whether the run was cancelled."""
    waits: list[float] = []
    sim = SimulatedProvider(SimulationConfig(**setup), sleep=waits.append)

    error = failure(sim, request(cancelled=lambda: len(waits) >= 3))

    assert (error.error_class, error.retryable) == ("cancelled", False)
    assert waits == [CANCEL_CHECK_SECONDS] * 3  # the provider's own waits, not the machine's time


def test_an_uncancelled_call_waits_its_whole_latency_in_steps() -> None:
    waits: list[float] = []
    SimulatedProvider(SimulationConfig(latency="fixed:1200"), sleep=waits.append).complete(request(cancelled=lambda: False))
    assert sum(waits) == pytest.approx(1.2)
    assert max(waits) <= CANCEL_CHECK_SECONDS


def test_a_latency_spike_adds_its_milliseconds_and_says_so() -> None:
    normal = provider({}).complete(request())
    waits: list[float] = []

    spiked = provider({"latency_spike": {"rate": 1.0, "ms": 20}}, sleep=waits.append).complete(request())

    assert waits == [0.02]
    assert json.loads(spiked.raw)["simulated"] == {"seed": 7, "latency_ms": 20.0, "fault": "latency_spike"}
    assert (spiked.text, spiked.finish_reason) == (normal.text, normal.finish_reason)


def test_malformed_json_never_parses() -> None:
    sim = provider({"malformed_rate": 1.0})

    for prompt in PROMPTS[:50]:
        response = sim.complete(request(prompt, output_schema=SCHEMA))
        with pytest.raises(json.JSONDecodeError):
            json.loads(response.text)
        assert json.loads(response.raw)["simulated"]["fault"] == "malformed"
        assert json.loads(response.raw)["choices"][0]["message"]["content"] == response.text


def test_malformed_json_wraps_a_value_that_was_valid() -> None:
    """Realistic: the model's JSON is in there, fenced or chatted around, so a parser must refuse it."""
    valid = provider({}).complete(request(output_schema=SCHEMA)).text

    assert valid in provider({"malformed_rate": 1.0}).complete(request(output_schema=SCHEMA)).text


def test_malformed_free_text_is_a_mangled_body() -> None:
    normal = provider({}).complete(request())

    mangled = provider({"malformed_rate": 1.0}).complete(request())

    assert mangled.text != normal.text
    assert mangled.text.endswith("\ufffd\ufffd")
    assert mangled.tokens_out > 0


def test_truncated_json_is_cut_and_never_valid() -> None:
    sim = provider({"truncated_rate": 1.0})

    for prompt in PROMPTS[:50]:
        full = provider({}).complete(request(prompt, output_schema=SCHEMA)).text
        response = sim.complete(request(prompt, output_schema=SCHEMA))
        assert response.finish_reason == "length"
        assert full.startswith(response.text)
        assert len(response.text) < len(full)
        with pytest.raises(json.JSONDecodeError):
            json.loads(response.text)


@pytest.mark.parametrize("schema", [{"type": "integer", "minimum": 100, "maximum": 999}, {"type": "number"}], ids=["integer", "number"])
def test_truncated_numbers_are_still_invalid(schema: dict[str, Any]) -> None:
    """Every prefix of "123" is a number; the cut output must still fail the parser."""
    for prompt in PROMPTS[:20]:
        text = provider({"truncated_rate": 1.0}).complete(request(prompt, output_schema=schema)).text
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)


def test_truncated_free_text_is_a_shorter_prefix_ending_at_length() -> None:
    for prompt in PROMPTS[:50]:
        full = provider({}).complete(request(prompt))
        cut = provider({"truncated_rate": 1.0}).complete(request(prompt))
        assert cut.finish_reason == "length"
        assert full.text.startswith(cut.text)
        assert 0 < cut.tokens_out < full.tokens_out


def test_valid_json_output_passes_the_schema_and_faulted_output_does_not() -> None:
    """What the executor does with a response: parse, then check the schema."""

    def valid(text: str) -> bool:
        try:
            return schema_errors(SCHEMA, json.loads(text)) == []
        except json.JSONDecodeError:
            return False

    for fault in ("malformed_rate", "truncated_rate"):
        texts = [provider({fault: 1.0}).complete(request(p, output_schema=SCHEMA)).text for p in PROMPTS[:30]]
        assert not any(valid(t) for t in texts), fault
    assert all(valid(provider({}).complete(request(p, output_schema=SCHEMA)).text) for p in PROMPTS[:30])


# --- rates ------------------------------------------------------------------------------------

FAULT_RATES = {
    "server_error": {"error_rate": 0.2},
    "rate_limited": {"rate_limit": {"rate": 0.2}},
    "timeout": {"timeout_rate": 0.2, "timeout_seconds": 0},
    "malformed": {"malformed_rate": 0.2},
    "truncated": {"truncated_rate": 0.2},
    "latency_spike": {"latency_spike": {"rate": 0.2, "ms": 0}},
    "bad_request": {"permanent_error_rate": 0.2},
}


@pytest.mark.parametrize(("fault", "faults"), FAULT_RATES.items(), ids=FAULT_RATES.keys())
def test_a_rate_is_honoured_over_400_prompts(fault: str, faults: dict[str, Any]) -> None:
    counts = Counter(outcomes(provider(faults)))

    assert set(counts) == {fault, "ok"}
    assert abs(counts[fault] / len(PROMPTS) - 0.2) < 0.06  # 3 standard deviations at n=400, p=0.2


def test_rates_together_each_keep_their_share() -> None:
    faults = {
        "error_rate": 0.1,
        "rate_limit": {"rate": 0.1},
        "timeout_rate": 0.1,
        "timeout_seconds": 0,
        "malformed_rate": 0.1,
        "truncated_rate": 0.1,
        "latency_spike": {"rate": 0.1, "ms": 0},
        "permanent_error_rate": 0.1,
    }

    counts = Counter(outcomes(provider(faults)))

    for fault in FAULT_RATES:
        assert abs(counts[fault] / len(PROMPTS) - 0.1) < 0.045, (fault, counts)
    assert abs(counts["ok"] / len(PROMPTS) - 0.3) < 0.07


def test_rates_that_add_up_past_one_are_refused() -> None:
    with pytest.raises(ValidationError, match="add up to 1.2"):
        Faults(error_rate=0.6, timeout_rate=0.6)


@pytest.mark.parametrize(
    "faults",
    [
        pytest.param({"error_rate": 1.5}, id="rate-over-one"),
        pytest.param({"error_rate": -0.1}, id="negative-rate"),
        pytest.param({"eror_rate": 0.1}, id="unknown-option"),
        pytest.param({"rate_limit": {"rate": 0.1, "retry_after": 3}}, id="unknown-nested-option"),
        pytest.param({"rate_limit": {"burst_length": 0}}, id="empty-burst"),
        pytest.param({"timeout_seconds": -1}, id="negative-timeout"),
        pytest.param({"timeout_seconds": 61}, id="timeout-past-a-minute"),
        pytest.param({"latency_spike": {"rate": 0.1, "ms": 60_001}}, id="spike-past-a-minute"),
        pytest.param({"outages": [{"start": "2026-05-01T12:00:00Z", "end": "2026-05-01T11:00:00Z"}]}, id="outage-ending-before-it-starts"),
        pytest.param({"outage_until": "tomorrow"}, id="outage-until-not-a-time"),
    ],
)
def test_bad_fault_options_are_refused(faults: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        SimulationConfig(faults=faults)


def test_no_faults_by_default_and_an_empty_faults_object_changes_nothing() -> None:
    assert SimulationConfig().faults == Faults()
    assert not any(Faults().rates())

    plain = SimulatedProvider(SimulationConfig(latency="fixed:0")).complete(request())

    assert plain == provider({}).complete(request())
    assert "fault" not in json.loads(plain.raw)["simulated"]


# --- reproducibility and retries --------------------------------------------------------------

MIXED = {
    "error_rate": 0.1,
    "rate_limit": {"rate": 0.1, "burst_length": 2},
    "timeout_rate": 0.05,
    "timeout_seconds": 0,
    "malformed_rate": 0.05,
    "truncated_rate": 0.05,
    "latency_spike": {"rate": 0.05, "ms": 0},
    "permanent_error_rate": 0.05,
}


def sequence(seed: int) -> list[str]:
    sim = provider(MIXED, seed=seed)
    return [outcome(sim, request(p, attempt=a)) for p in PROMPTS[:100] for a in (1, 2, 3)]


def test_the_same_seed_replays_exactly_the_same_decisions() -> None:
    assert sequence(7) == sequence(7)


def test_a_different_seed_makes_different_decisions() -> None:
    first, second = sequence(7), sequence(8)

    assert first != second
    assert sum(a != b for a, b in zip(first, second, strict=True)) > 50


def test_the_same_seed_replays_the_same_error_bodies() -> None:
    sim = provider({"error_rate": 1.0})

    assert [failure(sim, request(p)).raw for p in PROMPTS[:20]] == [failure(sim, request(p)).raw for p in PROMPTS[:20]]


def test_a_retry_can_succeed_where_the_first_attempt_failed() -> None:
    sim = provider({"error_rate": 0.5})
    failed_first = [p for p, o in zip(PROMPTS[:100], outcomes(sim, prompts=PROMPTS[:100]), strict=True) if o == "server_error"]

    second = Counter(outcome(sim, request(p, attempt=2)) for p in failed_first)

    assert second["ok"] > len(failed_first) / 4
    assert second["server_error"] > 0  # the second attempt draws afresh: some fail again


def test_a_successful_retry_returns_what_the_first_attempt_would_have() -> None:
    sim = provider({"error_rate": 0.5})
    prompt = next(p for p in PROMPTS if outcome(sim, request(p)) == "server_error" and outcome(sim, request(p, attempt=2)) == "ok")

    assert sim.complete(request(prompt, attempt=2)).text == provider({}).complete(request(prompt)).text


def test_the_attempt_does_not_change_the_content_or_the_stored_request() -> None:
    sim = provider({})

    assert sim.complete(request(attempt=1)) == sim.complete(request(attempt=3))
    assert "attempt" not in request(attempt=3).as_json()
    assert ModelRequest(model="sim-fast", prompt="hi").attempt == 1


def test_a_429_burst_covers_burst_length_consecutive_attempts() -> None:
    sim = provider({"rate_limit": {"rate": 0.2, "retry_after_seconds": 1, "burst_length": 3}})
    started = [p for p in PROMPTS if outcome(sim, request(p)) == "rate_limited"]
    assert len(started) > 40

    for prompt in started:
        assert [outcome(sim, request(prompt, attempt=a)) for a in (2, 3)] == ["rate_limited", "rate_limited"]
    after = Counter(outcome(sim, request(p, attempt=4)) for p in started)
    assert after["ok"] > len(started) / 2  # attempt 4 is free unless a new burst started at 2, 3 or 4


def test_without_a_burst_length_each_429_stands_alone() -> None:
    sim = provider({"rate_limit": {"rate": 0.2}})
    limited = [p for p in PROMPTS if outcome(sim, request(p)) == "rate_limited"]

    again = Counter(outcome(sim, request(p, attempt=2)) for p in limited)

    assert abs(again["rate_limited"] / len(limited) - 0.2) < 0.15
    assert again["ok"] > again["rate_limited"]


# --- outages, by the clock --------------------------------------------------------------------

WINDOW = {"outages": [{"start": "2026-05-01T12:00:00Z", "end": "2026-05-01T12:05:00Z"}]}


@pytest.mark.parametrize(
    ("now", "down"),
    [
        pytest.param(NOON - timedelta(seconds=1), False, id="just-before"),
        pytest.param(NOON, True, id="at-the-start"),
        pytest.param(NOON + timedelta(minutes=4, seconds=59), True, id="inside"),
        pytest.param(NOON + timedelta(minutes=5), False, id="at-the-end"),
    ],
)
def test_an_outage_window_fails_every_call_inside_it(now: datetime, down: bool) -> None:
    sim = provider(WINDOW, now=now)

    results = set(outcomes(sim, prompts=PROMPTS[:20]))

    assert results == ({"unavailable"} if down else {"ok"})


def test_an_outage_fails_fast_whatever_the_rates_say() -> None:
    sim = provider({**WINDOW, "timeout_rate": 1.0, "timeout_seconds": 60}, now=NOON)

    error = failure(sim)

    assert (error.error_class, error.retryable) == ("unavailable", True)
    assert json.loads(error.raw)["simulated"]["status"] == 503


def test_outage_until_is_an_outage_lasting_until_then() -> None:
    until = {"outage_until": "2026-05-01T12:30:00Z"}

    assert outcome(provider(until, now=NOON - timedelta(days=30)), request()) == "unavailable"
    assert outcome(provider(until, now=NOON + timedelta(minutes=29)), request()) == "unavailable"
    assert outcome(provider(until, now=NOON + timedelta(minutes=30)), request()) == "ok"


def test_several_outage_windows_each_count() -> None:
    faults = {"outages": [{"start": "2026-05-01T12:00:00Z", "end": "2026-05-01T12:01:00Z"}, {"start": "2026-05-01T14:00:00Z", "end": "2026-05-01T15:00:00Z"}]}

    down = [outcome(provider(faults, now=NOON + timedelta(minutes=m)), request()) == "unavailable" for m in (0, 30, 120, 150, 180)]

    assert down == [True, False, True, True, False]


def test_times_without_a_zone_are_utc_and_other_zones_are_converted() -> None:
    naive = Faults(outage_until="2026-05-01T12:30:00")
    paris = Faults(outage_until="2026-05-01T14:30:00+02:00")

    assert naive.outage_until == paris.outage_until == datetime(2026, 5, 1, 12, 30, tzinfo=UTC)


def test_the_provider_reads_the_real_clock_by_default() -> None:
    past = SimulatedProvider(SimulationConfig(latency="fixed:0", faults={"outage_until": "2000-01-01T00:00:00Z"}))
    future = SimulatedProvider(SimulationConfig(latency="fixed:0", faults={"outage_until": "2999-01-01T00:00:00Z"}))

    assert outcome(past, request()) == "ok"
    assert outcome(future, request()) == "unavailable"


# --- site default and per-run override --------------------------------------------------------


def test_a_run_that_sets_faults_replaces_the_site_faults_as_a_whole() -> None:
    site = {"seed": 7, "latency": "fixed:0", "faults": {"error_rate": 0.5, "outage_until": "2999-01-01T00:00:00Z"}}

    config = SimulationConfig.merged(site, {"faults": {"timeout_rate": 0.1}})

    assert config.faults == Faults(timeout_rate=0.1)
    assert config.latency == SimulationConfig.merged(site, None).latency


def test_a_run_without_faults_inherits_the_site_faults_and_an_empty_object_turns_them_off() -> None:
    site = {"seed": 7, "faults": {"error_rate": 0.5}}

    assert SimulationConfig.merged(site, {"seed": 9}).faults == Faults(error_rate=0.5)
    assert SimulationConfig.merged(site, None).faults == Faults(error_rate=0.5)
    assert SimulationConfig.merged(site, {"faults": {}}).faults == Faults()


def test_replacing_as_a_whole_means_two_valid_configs_merge_into_a_valid_one() -> None:
    site = {"faults": {"error_rate": 0.8}}

    assert SimulationConfig.merged(site, {"faults": {"timeout_rate": 0.8}}).faults.error_rate == 0


def test_run_options_as_the_api_stores_them_round_trip() -> None:
    """The API stores ``model_dump(mode="json", exclude_unset=True)`` of what the caller sent."""
    sent = SimulationConfig.model_validate(
        {"faults": {"rate_limit": {"rate": 0.3}, "outages": [{"start": "2026-05-01T12:00:00", "end": "2026-05-01T13:00:00Z"}]}}
    )
    stored = sent.model_dump(mode="json", exclude_unset=True)

    assert stored == {"faults": {"rate_limit": {"rate": 0.3}, "outages": [{"start": "2026-05-01T12:00:00Z", "end": "2026-05-01T13:00:00Z"}]}}
    assert SimulationConfig.merged({"seed": 7}, stored).faults == sent.faults


def test_provider_for_applies_site_faults_and_the_run_override(settings) -> None:
    settings.DAGWRIGHT_SIMULATION = {"seed": 7, "latency": "fixed:0", "faults": {"permanent_error_rate": 1.0}}
    req = request()

    with pytest.raises(ProviderError) as caught:
        provider_for("sim-fast").complete(req)
    assert caught.value.error_class == "bad_request"
    assert provider_for("sim-fast", run_options={"simulation": {"faults": {}}}).complete(req).provider == "simulated"


def test_bad_run_faults_are_a_permanent_provider_error(settings) -> None:
    settings.DAGWRIGHT_SIMULATION = {"seed": 7, "latency": "fixed:0"}

    with pytest.raises(ProviderError) as caught:
        provider_for("sim-fast", run_options={"simulation": {"faults": {"error_rate": 2}}})

    assert (caught.value.error_class, caught.value.retryable) == ("bad_request", False)


def site_faults(env: dict[str, str]) -> dict[str, Any]:
    """settings.DAGWRIGHT_SIMULATION["faults"] as a fresh process with ``env`` reads it."""
    code = "import django, json; django.setup(); from django.conf import settings; print(json.dumps(settings.DAGWRIGHT_SIMULATION['faults']))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_the_environment_sets_the_site_faults(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DAGWRIGHT_SIM_FAULTS"}
    env.update(DJANGO_SETTINGS_MODULE="orchestrator_site.settings", DAGWRIGHT_VAR_DIR=str(tmp_path))

    assert site_faults({**env, "DAGWRIGHT_SIM_FAULTS": '{"error_rate": 0.05}'}) == {"error_rate": 0.05}
    assert site_faults(env) == {}
