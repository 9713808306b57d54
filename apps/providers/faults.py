"""Fault injection for the simulated provider: rehearse failure, reproducibly.

Every option is off by default. ``SimulationConfig.faults`` takes this shape (JSON, as in
``DAGWRIGHT_SIM_FAULTS`` or a run's ``options["simulation"]["faults"]``)::

    {
      "error_rate": 0.05,                  # HTTP 500/502/503: retryable, error_class "server_error"
      "rate_limit": {"rate": 0.1,          # HTTP 429: retryable, "rate_limited", retry_after set
                     "retry_after_seconds": 2, "burst_length": 3},
      "outages": [{"start": "2026-05-01T10:00:00Z", "end": "2026-05-01T10:05:00Z"}],
      "outage_until": "2026-05-01T10:05:00Z",  # shorthand: an outage from any time until then
      "timeout_rate": 0.02, "timeout_seconds": 30,  # blocks timeout_seconds (at most 60), then "timeout"
      "latency_spike": {"rate": 0.05, "ms": 5000},  # adds ms (at most 60,000) to the call's latency
      "malformed_rate": 0.02,              # JSON asked: content is not JSON; text: a mangled body
      "truncated_rate": 0.02,              # text cut, finish_reason "length"; JSON cut mid-value
      "permanent_error_rate": 0.01         # HTTP 400: not retryable, error_class "bad_request"
    }

How a call's fate is chosen:

- **Outages** go by the wall clock (UTC; a datetime without a zone is read as UTC). During a window
  ``[start, end)``, or before ``outage_until``, every call fails at once with HTTP 503, retryable,
  error_class ``"unavailable"``, whatever the rates say.
- **Rates are shares of calls and are exclusive**: each call draws one number ``u`` in [0, 1) and
  the rates are laid end to end in this order — permanent_error, error (server), rate_limit,
  timeout, malformed, truncated, latency_spike — so ``u`` falls in at most one band. Each fault
  then hits its configured share of calls exactly (in expectation), and the rates must add up to
  at most 1.
- **The draw is seeded by (seed, model, prompt, attempt)**, never by time or process: the whole
  sequence of decisions is reproducible from the seed, and a retry (the next attempt) draws again,
  so it can succeed where the first attempt failed. The response *content* does not depend on the
  attempt: a successful retry returns what attempt 1 would have returned.
- **429 bursts**: ``rate_limit.rate`` is the chance that a burst *starts* at an attempt; a burst
  started at attempt k answers 429 to attempts k .. k + burst_length - 1 of the same prompt (it
  takes precedence over that attempt's own band). With ``burst_length`` 1 (the default) each call
  is rate-limited on its own with probability ``rate``.
- Failures other than timeouts fail fast (no simulated latency). Every failure carries an
  OpenAI-style error body in ``ProviderError.raw``, plus a ``"simulated"`` block naming the fault
  and the HTTP status; a success shaped by a fault names it in its raw ``"simulated"`` block, e.g.
  ``{"fault": "latency_spike"}``.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from .base import ModelRequest, ProviderError

Rate = Annotated[float, Field(ge=0, le=1)]
# The longest a simulated call may wait, for each of its durations (latency, a latency spike, a
# timeout): a run's options are user input, and a simulated wait holds a worker's slot. Two
# minutes at most in all (latency plus a spike), well inside a node's time limits.
MAX_SIMULATED_SECONDS = 60


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


class RateLimit(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    rate: Rate = 0.0
    retry_after_seconds: float = Field(1.0, ge=0, le=3600)
    burst_length: int = Field(1, ge=1, le=100)


class LatencySpike(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    rate: Rate = 0.0
    ms: float = Field(0.0, ge=0, le=MAX_SIMULATED_SECONDS * 1000)


class Outage(BaseModel):
    """A window ``[start, end)`` during which every call fails with 503."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    start: UtcDatetime
    end: UtcDatetime

    @model_validator(mode="after")
    def _ordered(self) -> Outage:
        if self.end <= self.start:
            raise ValueError("an outage must end after it starts")
        return self


@dataclass(frozen=True)
class Decision:
    """What happens to one call: ``fault`` None is a normal response.

    ``detail`` is a second draw in [0, 1) that picks the fault's particulars (which 5xx status,
    which malformation, where to cut), so those are reproducible too.
    """

    fault: str | None = None
    detail: float = 0.0

    @property
    def fails(self) -> bool:
        return self.fault in FAILURES


NO_FAULT = Decision()
# The order of the bands on [0, 1); changing it reshuffles which prompts fail.
BANDS = ("bad_request", "server_error", "rate_limited", "timeout", "malformed", "truncated", "latency_spike")
FAILURES = frozenset({"unavailable", "bad_request", "server_error", "rate_limited", "timeout"})


class Faults(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    error_rate: Rate = 0.0
    rate_limit: RateLimit = RateLimit()
    outages: tuple[Outage, ...] = ()
    outage_until: UtcDatetime | None = None
    timeout_rate: Rate = 0.0
    timeout_seconds: float = Field(30.0, ge=0, le=MAX_SIMULATED_SECONDS)
    latency_spike: LatencySpike = LatencySpike()
    malformed_rate: Rate = 0.0
    truncated_rate: Rate = 0.0
    permanent_error_rate: Rate = 0.0

    @model_validator(mode="after")
    def _rates_fit(self) -> Faults:
        if sum(self.rates()) > 1 + 1e-9:
            raise ValueError(f"fault rates are exclusive shares of calls and add up to {sum(self.rates()):g}, over 1")
        return self

    def rates(self) -> tuple[float, ...]:
        """The rate of each band, in ``BANDS`` order."""
        return (
            self.permanent_error_rate,
            self.error_rate,
            self.rate_limit.rate,
            self.timeout_rate,
            self.malformed_rate,
            self.truncated_rate,
            self.latency_spike.rate,
        )

    def in_outage(self, now: datetime) -> bool:
        if self.outage_until is not None and now < self.outage_until:
            return True
        return any(window.start <= now < window.end for window in self.outages)

    def decide(self, *, seed: int, request: ModelRequest, now: datetime) -> Decision:
        """The fate of ``request`` (at ``request.attempt``) under ``seed`` at time ``now``."""
        if self.in_outage(now):
            return Decision("unavailable")
        if not any(self.rates()):
            return NO_FAULT
        band, detail = _draw(seed, request, request.attempt)
        fault = self._fault_in(band)
        if fault != "rate_limited" and self._burst_continues(seed, request):
            fault = "rate_limited"
        return Decision(fault, detail) if fault else NO_FAULT

    def _fault_in(self, band: float) -> str | None:
        edge = 0.0
        for fault, rate in zip(BANDS, self.rates(), strict=True):
            edge += rate
            if band < edge:
                return fault
        return None

    def _burst_continues(self, seed: int, request: ModelRequest) -> bool:
        """Whether a 429 burst started at one of the ``burst_length - 1`` attempts before this one."""
        first = max(1, request.attempt - self.rate_limit.burst_length + 1)
        return any(self._fault_in(_draw(seed, request, attempt)[0]) == "rate_limited" for attempt in range(first, request.attempt))


def seeded_random(*parts: Any) -> random.Random:
    """A generator seeded by the JSON of ``parts``: the same parts draw the same numbers in any process.

    Not ``canonical_json``: these exact bytes are what every recorded simulation was drawn from.
    """
    key = json.dumps(list(parts), sort_keys=True)
    return random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))


def _draw(seed: int, request: ModelRequest, attempt: int) -> tuple[float, float]:
    """The two numbers a call's fate is made of, seeded by (seed, model, prompt, attempt)."""
    rng = seeded_random("faults", seed, request.model, request.prompt, attempt)
    return rng.random(), rng.random()


# --- failures ---------------------------------------------------------------------------------

_SERVER_ERRORS = (
    (500, "The server had an error while processing your request. Sorry about that!"),
    (502, "Bad gateway."),
    (503, "The server is overloaded or not ready yet."),
)


def error_for(decision: Decision, *, faults: Faults, seed: int, request: ModelRequest) -> ProviderError:
    """The classified error a failing decision raises, with an OpenAI-style raw body."""
    fault = decision.fault
    retry_after = None
    if fault == "server_error":
        status, message = _SERVER_ERRORS[int(decision.detail * len(_SERVER_ERRORS))]
        body = _error_body(message, "server_error")
    elif fault == "rate_limited":
        status, retry_after = 429, faults.rate_limit.retry_after_seconds
        message = (
            f"Rate limit reached for {request.model} in organization org-simulated on requests per min (RPM): "
            f"Limit 60, Used 60, Requested 1. Please try again in {retry_after:g}s."
        )
        body = _error_body(message, "requests", code="rate_limit_exceeded")
    elif fault == "timeout":
        status, message = 504, f"Request timed out after {faults.timeout_seconds:g}s."
        body = _error_body(message, "timeout", code="timeout")
    elif fault == "unavailable":
        status, message = 503, "Service Unavailable: the model is temporarily unreachable."
        body = _error_body(message, "service_unavailable", code="service_unavailable")
    else:  # bad_request: the kind of 400 a model answers to a request it will never accept
        status, message = 400, f"Invalid 'messages[1].content': the request for {request.model} could not be parsed."
        body = _error_body(message, "invalid_request_error", param="messages", code="invalid_value")
    simulated: dict[str, Any] = {"seed": seed, "attempt": request.attempt, "fault": fault, "status": status}
    if retry_after is not None:
        simulated["retry_after_seconds"] = retry_after
    raw = json.dumps({**body, "simulated": simulated})
    retryable = fault != "bad_request"
    return ProviderError(f"HTTP {status} from the simulated provider: {message}", error_class=fault, retryable=retryable, raw=raw, retry_after=retry_after)


def _error_body(message: str, kind: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


# --- successes shaped by a fault --------------------------------------------------------------

_JSON_WRAPPERS = (
    "```json\n{}\n```",
    "Sure! Here is the JSON you asked for:\n{}",
    "{}\n\nLet me know if you need anything else.",
)


def malformed_text(text: str, *, is_json: bool, detail: float) -> str:
    """Content a careless model might send: never valid JSON when JSON was asked for."""
    if is_json:  # each wrapper puts prose before or after the value, so json.loads always fails
        return _JSON_WRAPPERS[int(detail * len(_JSON_WRAPPERS))].format(text)
    words = text.split(" ")
    head = words[: max(1, len(words) // 2)]
    return " ".join([*head, *[head[-1]] * 12]) + "\ufffd\ufffd"  # a model stuck repeating itself, then bytes


def truncated_text(text: str, *, is_json: bool, detail: float) -> str:
    """``text`` cut short, as when a model hits its token limit; cut JSON never parses."""
    if not is_json:
        words = text.split(" ")
        if len(words) > 1:
            return " ".join(words[: 1 + int(detail * (len(words) - 1))])
        return text[: len(text) // 2]
    for length in range(min(len(text) - 1, max(1, int(detail * len(text)))), 0, -1):
        if not _parses(text[:length]):
            return text[:length]
    return ""  # every prefix parses (a short number): the model ran out before writing anything


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True
