"""The simulated model provider: a product feature for demos, offline work and failure rehearsal.

Deterministic for a seed and a prompt: the same request under the same seed returns the same
text, tokens and latency. With an ``output_schema`` it returns JSON valid against the schema, its
content drawn from the prompt's words; otherwise a few sentences of free text.

Configuration is one ``SimulationConfig``: the site default (settings.DAGWRIGHT_SIMULATION, fed
by ``DAGWRIGHT_SIM_SEED``, ``DAGWRIGHT_SIM_LATENCY`` and ``DAGWRIGHT_SIM_FAULTS``) updated by a
run's ``options["simulation"]``, key by key at the top level::

    {"seed": 7, "latency": "lognormal:400:0.5", "faults": {"error_rate": 0.05, "outage_until": "..."}}

``faults`` injects failure so operators can rehearse it: server errors, 429 bursts with
Retry-After, outage windows, timeouts, latency spikes, malformed and truncated output, permanent
400s. Its options, and how each call's fate is drawn from (seed, model, prompt, attempt), are
documented in ``apps.providers.faults``. A run that sets ``faults`` replaces the site's faults as a
whole (``{"faults": {}}`` turns them off for that run); a run that leaves it out inherits them.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from jsonschema import Draft202012Validator
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .base import ModelRequest, ModelResponse, ProviderError, cancelled_error, count_tokens
from .faults import MAX_SIMULATED_SECONDS, Decision, Faults, error_for, malformed_text, seeded_random, truncated_text

MAX_LATENCY_MS = MAX_SIMULATED_SECONDS * 1000
CANCEL_CHECK_SECONDS = 0.5  # how often a waiting call asks whether its run was cancelled
MAX_LOGNORMAL_SIGMA = 3.0  # past it the spread is noise: one call in a thousand would be 10,000x the median
_FILLER = ["report", "customer", "product", "update", "team", "result", "plan", "issue", "request", "value", "order", "service", "data"]


class Latency(BaseModel):
    """``fixed:MS``, ``uniform:LOW:HIGH`` or ``lognormal:MEDIAN:SIGMA`` (milliseconds).

    Every millisecond figure is at most ``MAX_LATENCY_MS`` (60,000) and a sample never exceeds it
    (a lognormal's tail is cut there), so no run's options can make a call wait longer.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["fixed", "uniform", "lognormal"] = "fixed"
    a: float = Field(0.0, ge=0, le=MAX_LATENCY_MS)
    b: float = Field(0.0, ge=0, le=MAX_LATENCY_MS)

    @model_validator(mode="after")
    def _sigma_bounded(self) -> Latency:
        if self.kind == "lognormal" and self.b > MAX_LOGNORMAL_SIGMA:
            raise ValueError(f"a lognormal latency's sigma is at most {MAX_LOGNORMAL_SIGMA:g}")
        return self

    @classmethod
    def parse(cls, text: str) -> Latency:
        kind, *numbers = text.split(":")
        values = [float(n) for n in numbers] + [0.0, 0.0]
        return cls(kind=kind, a=values[0], b=values[1])

    def sample_ms(self, rng: random.Random) -> float:
        if self.kind == "fixed":
            return self.a
        if self.kind == "uniform":
            return rng.uniform(self.a, max(self.a, self.b))
        return min(MAX_LATENCY_MS, rng.lognormvariate(0.0, self.b) * self.a) if self.a else 0.0


class SimulationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    seed: int = Field(7, ge=-(2**63), le=2**63 - 1)  # signed 64 bits: stored in the run's options on every database
    latency: Latency = Latency()
    faults: Faults = Faults()

    @field_validator("latency", mode="before")
    @classmethod
    def _latency_text(cls, value: Any) -> Any:
        return Latency.parse(value) if isinstance(value, str) else value

    @classmethod
    def merged(cls, site: dict[str, Any], run: dict[str, Any] | None) -> SimulationConfig:
        """The site default with the run's keys on top. Shallow on purpose: a run that names
        ``faults`` gets exactly those faults, not a blend with the site's (a rehearsal stays
        reproducible whatever the site's ambient faults, and rates cannot add up past 1)."""
        return cls.model_validate({**site, **(run or {})})


def _rng(seed: int, request: ModelRequest) -> random.Random:
    return seeded_random(seed, request.model, request.system, request.prompt, request.output_schema)


def _vocabulary(prompt: str) -> list[str]:
    words = [w.strip(".,;:!?\"'()[]{}<>").lower() for w in prompt.split()]
    vocab = sorted({w for w in words if len(w) > 3 and w.isalpha()})
    return vocab or _FILLER


def _phrase(rng: random.Random, vocab: list[str], low: int, high: int) -> str:
    return " ".join(rng.choice(vocab) for _ in range(rng.randint(low, high)))


def _sentences(rng: random.Random, vocab: list[str], count: int) -> str:
    return " ".join(_phrase(rng, vocab, 6, 14).capitalize() + "." for _ in range(count))


def _string(schema: dict[str, Any], rng: random.Random, vocab: list[str]) -> str:
    fmt = schema.get("format")
    if fmt == "date":
        return f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if fmt == "date-time":
        return f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:00Z"
    if fmt == "email":
        return f"{rng.choice(vocab)}@example.com"
    if fmt in ("uri", "url"):
        return f"https://example.com/{rng.choice(vocab)}"
    text = _phrase(rng, vocab, 2, 10)
    low, high = schema.get("minLength", 0), schema.get("maxLength")
    while len(text) < low:
        text += " " + rng.choice(vocab)
    if high is not None:
        text = text[:high]
        if len(text.strip()) >= low:  # a cut mid-phrase may end in a space; minLength still holds
            text = text.strip()
    return text


def _number(schema: dict[str, Any], rng: random.Random, integer: bool) -> float | int:
    """A number within the schema's bounds, inclusive or exclusive (either may be missing)."""
    low, high = schema.get("minimum", schema.get("exclusiveMinimum")), schema.get("maximum", schema.get("exclusiveMaximum"))
    if low is None:
        low = 0 if high is None or high > 0 else high - 100
    if high is None:
        high = low + 100
    low_open, high_open = "minimum" not in schema and "exclusiveMinimum" in schema, "maximum" not in schema and "exclusiveMaximum" in schema
    if integer:
        first = math.floor(low) + 1 if low_open else math.ceil(low)
        last = math.ceil(high) - 1 if high_open else math.floor(high)
        return rng.randint(first, max(first, last))
    value = round(rng.uniform(low, high), 2)
    if (value <= low if low_open else value < low) or (value >= high if high_open else value > high):
        value = (low + high) / 2  # rounding met a bound; the midpoint is inside any non-empty range
    return value


def generate(schema: dict[str, Any], rng: random.Random, vocab: list[str], depth: int = 0) -> Any:
    """A value for ``schema`` built from ``vocab``; covers the JSON Schema people write for LLMs.

    Not covered (the value may then be invalid, as a real model's can be): ``pattern``,
    ``multipleOf``, ``uniqueItems``, ``$ref`` and ``required`` names missing from ``properties``.
    """
    if not isinstance(schema, dict):  # true / false schemas, e.g. "items": false
        return None
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return rng.choice(schema["enum"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return generate(schema[key][0], rng, vocab, depth + 1)
    if "allOf" in schema:
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            merged.update(part)
        return generate(merged, rng, vocab, depth + 1)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: generate(sub, rng, vocab, depth + 1) for name, sub in props.items()}
    if kind == "array":
        items = schema.get("items", {"type": "string"})
        low = schema.get("minItems", min(1, schema.get("maxItems", 1)))
        high = max(low, schema.get("maxItems", low + 2 if depth < 4 else low))
        return [generate(items, rng, vocab, depth + 1) for _ in range(rng.randint(low, high))]
    if kind == "string":
        return _string(schema, rng, vocab)
    if kind in ("integer", "number"):
        return _number(schema, rng, kind == "integer")
    if kind == "boolean":
        return rng.random() < 0.5
    return None


def _truncate(text: str, max_tokens: int) -> tuple[str, str]:
    words = text.split(" ")
    if count_tokens(text) <= max_tokens:
        return text, "stop"
    while words and count_tokens(" ".join(words)) > max_tokens:
        words = words[: max(1, len(words) * 3 // 4)] if len(words) > 1 else []
    return " ".join(words), "length"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class SimulatedProvider:
    name = "simulated"

    def __init__(self, config: SimulationConfig, *, clock: Callable[[], datetime] = _utcnow, sleep: Callable[[float], None] = time.sleep):
        self.config = config
        self.clock = clock  # outage windows are read against it; tests set the time here
        self.sleep = sleep  # simulated latency and timeouts wait through it; tests record the waits here

    def complete(self, request: ModelRequest) -> ModelResponse:
        decision = self.config.faults.decide(seed=self.config.seed, request=request, now=self.clock())
        if decision.fails:
            if decision.fault == "timeout":  # a hung connection: the caller waits, then gives up
                self._wait(self.config.faults.timeout_seconds, request)
            raise error_for(decision, faults=self.config.faults, seed=self.config.seed, request=request)
        rng = _rng(self.config.seed, request)
        vocab = _vocabulary(request.prompt)
        if request.output_schema is not None:
            # like a real model, it stops at max_tokens: a cut JSON answer then fails validation
            text, finish = _truncate(json.dumps(generate(request.output_schema, rng, vocab), ensure_ascii=False), request.max_tokens)
        else:
            text, finish = _truncate(_sentences(rng, vocab, rng.randint(2, 4)), request.max_tokens)
        text, finish = _shaped(decision, text, finish, is_json=request.output_schema is not None)
        delay_ms = self.config.latency.sample_ms(rng)
        if decision.fault == "latency_spike":
            delay_ms += self.config.faults.latency_spike.ms
        if delay_ms:
            self._wait(delay_ms / 1000, request)
        tokens_in = count_tokens(request.system) + count_tokens(request.prompt)
        tokens_out = count_tokens(text)
        simulated: dict[str, Any] = {"seed": self.config.seed, "latency_ms": round(delay_ms, 3)}
        if decision.fault:
            simulated["fault"] = decision.fault
        raw = {
            "id": f"sim-{rng.getrandbits(48):012x}",
            "object": "chat.completion",
            "model": request.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": {"prompt_tokens": tokens_in, "completion_tokens": tokens_out, "total_tokens": tokens_in + tokens_out},
            "simulated": simulated,
        }
        return ModelResponse(
            text=text,
            raw=json.dumps(raw, ensure_ascii=False),
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            model=request.model,
            provider=self.name,
            finish_reason=finish,
        )

    def _wait(self, seconds: float, request: ModelRequest) -> None:
        """Wait ``seconds``; with a cancellation check, in steps of ``CANCEL_CHECK_SECONDS``,
        asking it between steps, so a cancelled run's call stops within a step and frees its
        worker slot. A wait of one step asks nothing: a short call costs no extra query."""
        if request.cancelled is None:
            self.sleep(seconds)
            return
        left = seconds
        while left > 0:
            step = min(left, CANCEL_CHECK_SECONDS)
            self.sleep(step)
            left -= step
            if left > 0 and request.cancelled():
                raise cancelled_error()


def _shaped(decision: Decision, text: str, finish: str, *, is_json: bool) -> tuple[str, str]:
    """The content after a malformed or truncated fault, with its finish reason."""
    if decision.fault == "malformed":
        return malformed_text(text, is_json=is_json, detail=decision.detail), finish
    if decision.fault == "truncated":
        return truncated_text(text, is_json=is_json, detail=decision.detail), "length"
    return text, finish


def schema_errors(schema: dict[str, Any], value: Any) -> list[str]:
    """Validation messages for ``value`` against ``schema``, empty when it is valid."""
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in Draft202012Validator(schema).iter_errors(value)]


def unknown_model(model: str) -> ProviderError:
    return ProviderError(f"no provider serves model '{model}'", error_class="unknown_model", retryable=False)
