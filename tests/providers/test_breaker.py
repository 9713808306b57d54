"""Shared circuit breakers: the database store and the Redis store, seen from several threads and
processes, and through the API, the admin and the breakers partial.

Every store test runs twice: on the database store, and on the real Redis at ``REDIS_URL`` (skipped
when it is unset or unreachable; CI requires it). Each test gets Redis keys of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import redis
from django.contrib.admin import site as admin_site
from django.db import connection
from django.template.loader import render_to_string
from django.urls import reverse

from apps.engine.breaker import CLOSED, HALF_OPEN, OPEN, BreakerConfig, BreakerState, Decision
from apps.providers.base import ProviderError
from apps.providers.breaker import CircuitBreaker, breaker_config, breaker_store, circuit_breaker, is_provider_failure
from apps.providers.models import BreakerTransition, CircuitBreakerState
from apps.providers.selectors import breaker_overview
from tests.conftest import ROOT, missing_service

pytestmark = pytest.mark.django_db

PROVIDER, MODEL = "simulated", "sim-fast"
T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
THRESHOLD, OPEN_SECONDS = 3, 30


class Clock:
    """A clock the test moves by hand, shared by every breaker (and thread) that reads it."""

    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Backend:
    name: str
    redis_url: str  # empty for the database store
    config: dict


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("REDIS_URL", "")
    if not url:
        missing_service("REDIS_URL is not set")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        missing_service(f"Redis at {url} is unreachable: {exc}")
    return url


@pytest.fixture(params=["database", "redis"])
def backend(request, settings) -> Iterator[Backend]:
    """The breaker store under test, chosen through the settings as in production."""
    prefix = f"dagwright-test:{uuid.uuid4().hex[:12]}:breaker:"
    config = {"failure_threshold": THRESHOLD, "open_seconds": OPEN_SECONDS, "probe_timeout_seconds": 60, "key_prefix": prefix}
    settings.DAGWRIGHT_BREAKER = config
    url = request.getfixturevalue("redis_url") if request.param == "redis" else ""
    settings.REDIS_URL = url
    yield Backend(request.param, url, config)
    if url:
        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)


@pytest.fixture
def database_store(settings) -> None:
    """The database store alone, for what does not depend on the store."""
    settings.REDIS_URL = ""
    settings.DAGWRIGHT_BREAKER = {"failure_threshold": THRESHOLD, "open_seconds": OPEN_SECONDS}


def breaker(clock: Clock, model: str = MODEL) -> CircuitBreaker:
    return circuit_breaker(PROVIDER, model, clock=clock)


def open_it(clock: Clock, model: str = MODEL) -> None:
    for _ in range(THRESHOLD):
        breaker(clock, model).after_call(ok=False, error_class="server_error")


def stored_state(model: str = MODEL) -> BreakerState:
    return breaker_store().states().get((PROVIDER, model), BreakerState())


def transitions() -> list[tuple[str, str]]:
    return [(t.from_state, t.to_state) for t in BreakerTransition.objects.filter(provider=PROVIDER).order_by("at", "id")]


# --- the stores -------------------------------------------------------------------------------


def test_the_settings_choose_the_store(backend: Backend) -> None:
    assert type(breaker_store()).__name__ == {"database": "DatabaseStore", "redis": "RedisStore"}[backend.name]


def test_consecutive_failures_open_it_and_the_transition_is_recorded(backend: Backend) -> None:
    clock = Clock()
    open_it(clock)

    decision = breaker(clock).before_call()

    assert stored_state() == BreakerState(state=OPEN, failures=THRESHOLD, opened_at=T0)
    assert decision == Decision(allowed=False, retry_at=T0 + OPEN_SECONDS, new_state=stored_state(), probe=False)
    change = BreakerTransition.objects.get()
    assert (change.provider, change.model, change.from_state, change.to_state) == (PROVIDER, MODEL, CLOSED, OPEN)
    assert change.reason == "3 consecutive failures (last error: server_error)"
    assert change.at.timestamp() == T0


def test_failures_below_the_threshold_are_shared_but_record_nothing(backend: Backend) -> None:
    clock = Clock()
    breaker(clock).after_call(ok=False, error_class="timeout")
    breaker(clock).after_call(ok=False, error_class="timeout")

    assert stored_state() == BreakerState(failures=2)
    assert breaker(clock).before_call().allowed
    assert transitions() == []


def test_a_success_resets_the_shared_count(backend: Backend) -> None:
    clock = Clock()
    breaker(clock).after_call(ok=False)
    breaker(clock).after_call(ok=True)

    assert stored_state() == BreakerState()


def test_the_whole_cycle_open_probe_closed_is_recorded_in_order(backend: Backend) -> None:
    clock = Clock()
    open_it(clock)
    clock.now += OPEN_SECONDS

    probe = breaker(clock).before_call()
    waiting = breaker(clock).before_call()
    breaker(clock).after_call(ok=True)

    assert probe.probe
    assert not waiting.allowed
    assert waiting.retry_at == clock.now + 1
    assert stored_state() == BreakerState()
    assert transitions() == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]
    assert breaker(clock).before_call().allowed


def test_a_failed_probe_reopens_it_from_now(backend: Backend) -> None:
    clock = Clock()
    open_it(clock)
    clock.now += OPEN_SECONDS
    assert breaker(clock).before_call().probe

    clock.now += 5
    breaker(clock).after_call(ok=False, error_class="timeout")

    assert stored_state() == BreakerState(state=OPEN, failures=THRESHOLD + 1, opened_at=T0 + OPEN_SECONDS + 5)
    assert breaker(clock).before_call().retry_at == T0 + 2 * OPEN_SECONDS + 5
    assert transitions()[-1] == (HALF_OPEN, OPEN)
    assert BreakerTransition.objects.first().reason == "the probe call failed (last error: timeout)"


def test_a_probe_whose_holder_vanished_goes_to_another_caller_after_the_timeout(backend: Backend) -> None:
    clock = Clock()
    open_it(clock)
    clock.now += OPEN_SECONDS
    assert breaker(clock).before_call().probe  # ...and its holder is never heard of again

    clock.now += 59
    assert not breaker(clock).before_call().allowed
    clock.now += 1
    assert breaker(clock).before_call().probe
    assert stored_state().probe_started_at == clock.now


def test_breakers_are_per_provider_and_model(backend: Backend) -> None:
    clock = Clock()
    open_it(clock, model="sim-smart")

    assert breaker(clock, model="sim-fast").before_call().allowed
    assert not breaker(clock, model="sim-smart").before_call().allowed
    assert circuit_breaker("other-provider", "sim-smart", clock=clock).before_call().allowed


def test_a_healthy_call_on_the_database_store_is_one_select_and_no_write(database_store, django_assert_num_queries) -> None:
    healthy = breaker(Clock())

    with django_assert_num_queries(1):
        assert healthy.before_call().allowed
    with django_assert_num_queries(1):
        healthy.after_call(ok=True)
    assert not CircuitBreakerState.objects.exists()


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
def test_a_healthy_call_on_the_redis_store_writes_nothing(backend: Backend) -> None:
    healthy = breaker(Clock())

    assert healthy.before_call().allowed
    healthy.after_call(ok=True)

    assert redis.Redis.from_url(backend.redis_url).keys(f"{backend.config['key_prefix']}*") == []


def test_an_unreachable_redis_fails_open(settings, caplog) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1

    decision = breaker(Clock()).before_call()
    breaker(Clock()).after_call(ok=False, error_class="timeout")

    assert decision.allowed
    assert "store unavailable" in caplog.text


# --- shared across threads and processes ------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_ten_threads_racing_in_half_open_get_exactly_one_probe(backend: Backend) -> None:
    clock = Clock()
    open_it(clock)
    clock.now += OPEN_SECONDS
    start = threading.Barrier(10)

    def ask(_: int) -> Decision:
        try:
            start.wait()
            return breaker(clock).before_call()
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=10) as pool:
        decisions = list(pool.map(ask, range(10)))

    assert [d.probe for d in decisions].count(True) == 1
    assert [d.allowed for d in decisions].count(True) == 1
    assert transitions() == [(CLOSED, OPEN), (OPEN, HALF_OPEN)]


SUBPROCESS_CODE = """
import json, os
from django.conf import settings
args = json.loads(os.environ["BREAKER_TEST"])
settings.DAGWRIGHT_BREAKER = args["config"]
from apps.providers.breaker import breaker_store, circuit_breaker
seen = breaker_store().states()[(args["provider"], args["model"])]
breaker = circuit_breaker(args["provider"], args["model"], clock=lambda: args["now"])
breaker.after_call(ok=False, error_class="server_error")
decision = breaker.before_call()
print("RESULT " + json.dumps({"failures_seen": seen.failures, "allowed": decision.allowed, "retry_at": decision.retry_at}))
"""


@pytest.mark.django_db(transaction=True)
def test_another_process_sees_and_changes_the_same_breaker(backend: Backend, test_database_url: str) -> None:
    clock = Clock()
    for _ in range(THRESHOLD - 1):
        breaker(clock).after_call(ok=False, error_class="timeout")
    args = {"config": backend.config, "provider": PROVIDER, "model": MODEL, "now": T0 + 1}
    env = {**os.environ, "DATABASE_URL": test_database_url, "REDIS_URL": backend.redis_url, "BREAKER_TEST": json.dumps(args)}

    done = subprocess.run([sys.executable, "manage.py", "shell", "-c", SUBPROCESS_CODE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert result == {"failures_seen": THRESHOLD - 1, "allowed": False, "retry_at": T0 + 1 + OPEN_SECONDS}
    assert stored_state() == BreakerState(state=OPEN, failures=THRESHOLD, opened_at=T0 + 1)
    assert not breaker(clock).before_call().allowed
    assert transitions() == [(CLOSED, OPEN)]


# --- configuration and classification ---------------------------------------------------------


def test_the_config_comes_from_the_settings_with_defaults(settings) -> None:
    settings.DAGWRIGHT_BREAKER = {"failure_threshold": 2, "key_prefix": "elsewhere:"}

    assert breaker_config() == BreakerConfig(failure_threshold=2)


def test_with_nothing_set_the_defaults_apply(settings) -> None:
    settings.DAGWRIGHT_BREAKER = {}

    assert breaker_config() == BreakerConfig()


def test_only_retryable_provider_errors_count_against_its_health() -> None:
    assert is_provider_failure(ProviderError("503", error_class="server_error", retryable=True))
    assert not is_provider_failure(ProviderError("400", error_class="bad_request", retryable=False))
    assert not is_provider_failure(None)


# --- overview, API, page and admin ------------------------------------------------------------


def test_the_overview_lists_each_breaker_with_its_recent_transitions(backend: Backend) -> None:
    clock = Clock()
    open_it(clock, model="sim-smart")
    breaker(clock, model="sim-fast").after_call(ok=False)

    overview = {b.model: b for b in breaker_overview()}

    assert set(overview) == {"sim-fast", "sim-smart"}
    smart = overview["sim-smart"]
    assert (smart.state, smart.failures, smart.opened_at.timestamp(), smart.retry_at.timestamp()) == (OPEN, THRESHOLD, T0, T0 + OPEN_SECONDS)
    assert [(t.from_state, t.to_state) for t in smart.transitions] == [(CLOSED, OPEN)]
    assert (overview["sim-fast"].state, overview["sim-fast"].failures, overview["sim-fast"].transitions) == (CLOSED, 1, [])
    assert [b.model for b in breaker_overview(models=["sim-smart"])] == ["sim-smart"]


def test_a_breaker_known_only_from_its_transitions_shows_closed(database_store) -> None:
    BreakerTransition.objects.create(provider=PROVIDER, model="sim-mini", from_state=CLOSED, to_state=OPEN, reason="lost", at="2026-01-01T00:00Z")

    (view,) = breaker_overview()

    assert (view.model, view.state, view.retry_at, len(view.transitions)) == ("sim-mini", CLOSED, None, 1)


def test_the_overview_keeps_the_latest_transitions_per_breaker(backend: Backend) -> None:
    clock = Clock()
    open_it(clock)
    for _ in range(4):  # each round: a probe, and it fails
        clock.now += OPEN_SECONDS
        breaker(clock).before_call()
        breaker(clock).after_call(ok=False)

    (view,) = breaker_overview(transitions_per_breaker=3)

    assert len(transitions()) == 9
    assert [(t.from_state, t.to_state) for t in view.transitions] == [(HALF_OPEN, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, OPEN)]


def test_the_api_lists_breakers_for_viewers(backend: Backend, client, reviewer) -> None:
    open_it(Clock())
    client.force_login(reviewer)

    response = client.get("/api/v1/breakers")

    assert response.status_code == 200
    (body,) = response.json()
    assert {k: body[k] for k in ("provider", "model", "state", "failures")} == {"provider": PROVIDER, "model": MODEL, "state": OPEN, "failures": THRESHOLD}
    assert body["opened_at"].startswith("2026-01-01T00:00:00")
    assert body["retry_at"].startswith("2026-01-01T00:00:30")
    assert body["probe_started_at"] is None
    reason = "3 consecutive failures (last error: server_error)"
    assert body["transitions"] == [{"from_state": CLOSED, "to_state": OPEN, "reason": reason, "at": body["opened_at"]}]


def test_an_outsider_may_not_read_the_breakers(client, outsider) -> None:
    client.force_login(outsider)

    response = client.get("/api/v1/breakers")

    assert response.status_code == 403
    assert response["Content-Type"] == "application/problem+json"


def test_an_anonymous_caller_must_authenticate_to_read_the_breakers(client) -> None:
    response = client.get("/api/v1/breakers")

    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"


def test_the_partial_shows_each_state_in_words_and_shapes_and_escapes_names(database_store) -> None:
    clock = Clock()
    open_it(clock, model="<script>alert(1)</script>")
    open_it(clock, model="sim-smart")
    clock.now += OPEN_SECONDS
    breaker(clock, model="sim-smart").before_call()

    html = render_to_string("console/_breakers.html", {"breakers": breaker_overview()})

    assert "<script>alert(1)" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'data-state="open"><span class="status-icon" aria-hidden="true">○</span>open</span>' in html
    assert 'data-state="half_open"><span class="status-icon" aria-hidden="true">◐</span>half open</span>' in html
    assert "open → half open: open for 30 s: one probe call let through" in html


def test_the_partial_says_when_no_breaker_is_known() -> None:
    html = render_to_string("console/_breakers.html", {"breakers": []})

    assert "every circuit breaker is closed" in html


@pytest.mark.parametrize("model", [CircuitBreakerState, BreakerTransition], ids=lambda m: m.__name__)
def test_breaker_rows_are_listed_read_only_in_the_admin(database_store, client, admin, rf, model) -> None:
    open_it(Clock())
    client.force_login(admin)
    request = rf.get("/")
    request.user = admin
    model_admin = admin_site.get_model_admin(model)

    listing = client.get(reverse(f"admin:providers_{model._meta.model_name}_changelist"))
    detail = client.get(reverse(f"admin:providers_{model._meta.model_name}_change", args=[model.objects.get().pk]))

    assert (listing.status_code, detail.status_code) == (200, 200)
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request)
