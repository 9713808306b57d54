"""Circuit breakers per (provider, model), shared by every worker process on every machine.

The state machine is ``apps.engine.breaker``; this module keeps its state where every worker
sees it, Redis when ``settings.REDIS_URL`` is set and the database otherwise, and records each
transition as a ``BreakerTransition`` row (with either store) for the API and the pages.

Both stores read first without a lock and write only when the state machine changes something,
so a healthy breaker costs one Redis round trip or one small SELECT per call. A change is applied
atomically: a compare-and-set Lua script on a version field in Redis, ``select_for_update`` in
one transaction in the database. Time is each caller's ``time.time()``: machines are expected
to keep their clocks within a second or so of each other, small next to ``open_seconds``.

Configuration is ``settings.DAGWRIGHT_BREAKER``, a dict with any of ``failure_threshold``,
``open_seconds``, ``probe_timeout_seconds``, ``probe_wait_seconds`` (see ``BreakerConfig``)
and ``key_prefix`` (Redis keys, default ``dagwright:breaker:``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import fields
from datetime import UTC, datetime
from functools import lru_cache
from typing import Protocol, TypeVar

import redis
from django.conf import settings
from django.db import transaction
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from apps.engine import breaker as machine
from apps.engine.breaker import BreakerConfig, BreakerState, Decision, Transition

from .base import ProviderError
from .models import BreakerTransition, CircuitBreakerState

log = logging.getLogger(__name__)

DEFAULT_KEY_PREFIX = "dagwright:breaker:"
REDIS_TIMEOUT_SECONDS = 2.0
MAX_CAS_ROUNDS = 100
CONFIG_KEYS = {f.name for f in fields(BreakerConfig)}

R = TypeVar("R")
# A step reads a breaker's state and returns the new state, what to answer, and the transition to record.
Step = Callable[[BreakerState], tuple[BreakerState, R, Transition | None]]
Key = tuple[str, str]  # (provider, model)


def breaker_config() -> BreakerConfig:
    options = getattr(settings, "DAGWRIGHT_BREAKER", {})
    return BreakerConfig(**{k: v for k, v in options.items() if k in CONFIG_KEYS})


def is_provider_failure(error: ProviderError | None) -> bool:
    """Whether a call's outcome counts against the provider's health: a retryable error (5xx,
    timeout, connection, 429) does; a success, a bad request or a permanent error does not."""
    return error is not None and error.retryable


def as_datetime(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def _seconds(at: datetime | None) -> float | None:
    return None if at is None else at.timestamp()


def _record(key: Key, change: Transition | None, now: float) -> None:
    if change is not None:
        provider, model = key
        BreakerTransition.objects.create(
            provider=provider, model=model, from_state=change.from_state, to_state=change.to_state, reason=change.reason[:500], at=as_datetime(now)
        )


class BreakerStore(Protocol):
    def apply(self, key: Key, step: Step[R], now: float) -> R: ...

    def states(self) -> dict[Key, BreakerState]: ...


class DatabaseStore:
    """One ``CircuitBreakerState`` row per breaker, changed under ``select_for_update``.

    On SQLite, ``transaction.atomic()`` begins IMMEDIATE (see the settings) and so already
    serialises writers; the row lock does the same on PostgreSQL.
    """

    def apply(self, key: Key, step: Step[R], now: float) -> R:
        provider, model = key
        row = CircuitBreakerState.objects.filter(provider=provider, model=model).first()
        state = self._state(row)
        new_state, answer, _ = step(state)
        if new_state == state:
            return answer
        with transaction.atomic():
            row, _ = CircuitBreakerState.objects.select_for_update().get_or_create(provider=provider, model=model)
            state = self._state(row)
            new_state, answer, change = step(state)
            if new_state == state:  # another caller made the change first
                return answer
            row.state, row.failures = new_state.state, new_state.failures
            row.opened_at, row.probe_started_at = as_datetime(new_state.opened_at), as_datetime(new_state.probe_started_at)
            row.save()
            _record(key, change, now)
        return answer

    @staticmethod
    def _state(row: CircuitBreakerState | None) -> BreakerState:
        if row is None:
            return BreakerState()
        return BreakerState(state=row.state, failures=row.failures, opened_at=_seconds(row.opened_at), probe_started_at=_seconds(row.probe_started_at))

    def states(self) -> dict[Key, BreakerState]:
        return {(row.provider, row.model): self._state(row) for row in CircuitBreakerState.objects.all()}


# Compare-and-set: write the fields only if the hash's version is still the one read, and index
# the key so the overview can list every breaker. Returns 1, or the current hash to try again with.
_COMPARE_AND_SET = """
local version = redis.call('HGET', KEYS[1], 'version') or '0'
if version ~= ARGV[1] then
    return redis.call('HGETALL', KEYS[1])
end
redis.call('HSET', KEYS[1], 'version', tostring(tonumber(version) + 1), unpack(ARGV, 2))
redis.call('SADD', KEYS[2], KEYS[1])
return 1
"""


class RedisStore:
    """One hash per breaker, ``<prefix><provider>:<model>``, and a set ``<prefix>index`` of them."""

    def __init__(self, client: redis.Redis, prefix: str = DEFAULT_KEY_PREFIX):
        self.client, self.prefix = client, prefix
        self.index = f"{prefix}index"  # cannot clash with a breaker's key, which has a ':' after the provider
        self._compare_and_set = client.register_script(_COMPARE_AND_SET)

    def key(self, key: Key) -> str:
        return f"{self.prefix}{key[0]}:{key[1]}"

    def apply(self, key: Key, step: Step[R], now: float) -> R:
        name = self.key(key)
        stored = self.client.hgetall(name)
        for _ in range(MAX_CAS_ROUNDS):
            state = self._state(stored)
            new_state, answer, change = step(state)
            if new_state == state:
                return answer
            fields_ = ["provider", key[0], "model", key[1], *self._fields(new_state)]
            result = self._compare_and_set(keys=[name, self.index], args=[stored.get(b"version", b"0"), *fields_])
            if result == 1:
                _record(key, change, now)
                return answer
            stored = dict(zip(result[::2], result[1::2], strict=True))
        raise RuntimeError(f"breaker {name}: gave up after {MAX_CAS_ROUNDS} concurrent changes")

    @staticmethod
    def _fields(state: BreakerState) -> list[str]:
        def text(value: float | None) -> str:
            return "" if value is None else repr(value)

        return ["state", state.state, "failures", str(state.failures), "opened_at", text(state.opened_at), "probe_started_at", text(state.probe_started_at)]

    @staticmethod
    def _state(stored: dict[bytes, bytes]) -> BreakerState:
        if not stored:
            return BreakerState()

        def number(name: bytes) -> float | None:
            value = stored.get(name, b"")
            return float(value) if value else None

        return BreakerState(
            state=stored[b"state"].decode(), failures=int(stored[b"failures"]), opened_at=number(b"opened_at"), probe_started_at=number(b"probe_started_at")
        )

    def states(self) -> dict[Key, BreakerState]:
        names = sorted(self.client.smembers(self.index))
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(name)
        found = {}
        for stored in pipe.execute():
            if stored:  # a key deleted by hand stays in the index until the next change
                found[(stored[b"provider"].decode(), stored[b"model"].decode())] = self._state(stored)
        return found


@lru_cache(maxsize=4)
def _redis_client(url: str) -> redis.Redis:
    # One pool per process and URL; redis-py gives a forked child (a prefork worker) a fresh pool.
    # Two quick retries reconnect after a Redis restart; more would only delay failing open.
    retry = Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.1), retries=2)
    return redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS, retry=retry)


def breaker_store() -> BreakerStore:
    """The store the settings choose: Redis when ``REDIS_URL`` is set, the database otherwise."""
    url = getattr(settings, "REDIS_URL", "")
    if not url:
        return DatabaseStore()
    prefix = getattr(settings, "DAGWRIGHT_BREAKER", {}).get("key_prefix", DEFAULT_KEY_PREFIX)
    return RedisStore(_redis_client(url), prefix)


class CircuitBreaker:
    """The breaker of one (provider, model), over a shared store; see ``circuit_breaker``."""

    def __init__(self, provider: str, model: str, *, store: BreakerStore, config: BreakerConfig, clock: Callable[[], float] = time.time):
        self.key: Key = (provider, model)
        self.store, self.config, self.clock = store, config, clock

    def before_call(self) -> Decision:
        """Ask before calling the provider: ``allowed`` or not, and if not, ``retry_at``."""
        now = self.clock()

        def step(state: BreakerState) -> tuple[BreakerState, Decision, Transition | None]:
            decision = machine.before_call(state, now, self.config)
            return decision.new_state, decision, machine.transition(state, decision.new_state)

        try:
            return self.store.apply(self.key, step, now)
        except redis.RedisError as exc:
            # Fail open: a Redis outage must not stop every run; the breaker resumes with Redis.
            log.warning("circuit breaker %s/%s: store unavailable, call allowed: %s", *self.key, exc)
            return Decision(allowed=True, retry_at=None, new_state=BreakerState())

    def after_call(self, ok: bool, error_class: str = "") -> None:
        """Report how an allowed call ended; ``error_class`` goes into a transition's reason."""
        now = self.clock()

        def step(state: BreakerState) -> tuple[BreakerState, None, Transition | None]:
            new_state = machine.after_call(state, ok, now, self.config)
            return new_state, None, machine.transition(state, new_state, error_class=error_class)

        try:
            self.store.apply(self.key, step, now)
        except redis.RedisError as exc:
            log.warning("circuit breaker %s/%s: store unavailable, outcome not recorded: %s", *self.key, exc)


def circuit_breaker(provider: str, model: str, *, clock: Callable[[], float] = time.time) -> CircuitBreaker:
    """The shared circuit breaker of ``model`` at ``provider``: ask it before every provider call,
    and tell it how every allowed call ended.

    ``provider`` is the provider's ``name`` (``provider_for(model).name``). Integration::

        breaker = circuit_breaker(provider.name, request.model)
        decision = breaker.before_call()
        if not decision.allowed:
            ...  # fail fast without calling: wait until decision.retry_at (seconds since the
                 # epoch) without spending an attempt; the provider is not reached
        try:
            response = provider.complete(request)
        except ProviderError as exc:
            breaker.after_call(ok=not is_provider_failure(exc), error_class=exc.error_class)
            raise
        breaker.after_call(ok=True)  # the provider answered, whether its output is valid or not

    Every allowed call must be reported, errors that say nothing about the provider's health
    (a bad request, invalid output) with ``ok=True``: when the call was the half-open probe
    (``decision.probe``), its report is what closes or reopens the breaker; a probe never reported
    holds every other caller back for ``probe_timeout_seconds``.

    Cheap when healthy: one Redis round trip (or one SELECT) per ``before_call``, and none written
    by a success while closed with no failures counted. If Redis cannot be reached the breaker
    fails open (the call is allowed, a warning logged) rather than stopping every run.
    """
    return CircuitBreaker(provider, model, store=breaker_store(), config=breaker_config(), clock=clock)
