"""The simulated provider: deterministic, schema-valid, token-honest, with configurable latency."""

from __future__ import annotations

import datetime
import json
import random
import re
import statistics
from typing import Any
from urllib.parse import urlparse

import pytest
from pydantic import ValidationError

from apps.providers.base import ModelRequest, count_tokens
from apps.providers.simulated import MAX_LATENCY_MS, Latency, SimulatedProvider, SimulationConfig, schema_errors

PROMPT = "Classify this support ticket: the customer cannot download their invoice after the billing update."
SEEDS = range(20)


def complete(prompt: str = PROMPT, *, seed: int = 7, latency: str = "fixed:0", **request: Any):
    provider = SimulatedProvider(SimulationConfig(seed=seed, latency=latency))
    return provider.complete(ModelRequest(model=request.pop("model", "sim-fast"), prompt=prompt, **request))


@pytest.mark.parametrize("schema", [None, {"type": "object", "properties": {"a": {"type": "string"}}}], ids=["text", "json"])
def test_same_seed_and_request_give_the_same_response(schema: dict | None) -> None:
    first, second = complete(output_schema=schema), complete(output_schema=schema)

    assert first == second
    assert (first.text, first.raw, first.tokens_in, first.tokens_out) == (second.text, second.raw, second.tokens_in, second.tokens_out)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"seed": 8}, id="seed"),
        pytest.param({"prompt": PROMPT + " Please hurry."}, id="prompt"),
        pytest.param({"system": "You are brief."}, id="system"),
        pytest.param({"model": "sim-smart"}, id="model"),
    ],
)
def test_a_different_seed_or_request_gives_a_different_response(change: dict[str, Any]) -> None:
    assert complete(**change).text != complete().text


def test_free_text_is_drawn_from_the_prompt_words() -> None:
    words = {w.strip(".").lower() for w in complete().text.split()}
    prompt_words = {w.strip(".,:").lower() for w in PROMPT.split()}

    assert words <= prompt_words
    assert complete().finish_reason == "stop"


SCHEMAS = {
    "object-with-required": {
        "type": "object",
        "required": ["category", "summary"],
        "properties": {"category": {"type": "string"}, "summary": {"type": "string"}, "flag": {"type": "boolean"}},
    },
    "nested-arrays-with-bounds": {
        "type": "object",
        "properties": {
            "rows": {"type": "array", "minItems": 2, "maxItems": 4, "items": {"type": "array", "minItems": 1, "maxItems": 3, "items": {"type": "integer"}}},
        },
    },
    "array-of-objects": {
        "type": "array",
        "minItems": 1,
        "maxItems": 5,
        "items": {"type": "object", "required": ["task", "owner"], "properties": {"task": {"type": "string"}, "owner": {"type": "string"}}},
    },
    "array-max-items-zero": {"type": "array", "maxItems": 0},
    "array-exact-size": {"type": "array", "minItems": 3, "maxItems": 3, "items": {"type": "number"}},
    "enum-strings": {"enum": ["billing", "bug", "how_to"]},
    "enum-mixed": {"enum": ["low", 2, None, True]},
    "const": {"const": {"version": 1}},
    "integer-bounds": {"type": "integer", "minimum": 3, "maximum": 5},
    "integer-exclusive-bounds": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 3},
    "integer-only-maximum-negative": {"type": "integer", "maximum": -50},
    "integer-only-minimum": {"type": "integer", "minimum": 1000},
    "integer-fractional-bounds": {"type": "integer", "minimum": 0.5, "maximum": 2.5},
    "number-unit-interval": {"type": "number", "minimum": 0, "maximum": 1},
    "number-exclusive-bounds": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
    "number-narrow-exclusive": {"type": "number", "exclusiveMinimum": 0.001, "exclusiveMaximum": 0.002},
    "number-negative-range": {"type": "number", "minimum": -10.5, "maximum": -10},
    "boolean": {"type": "boolean"},
    "format-date": {"type": "string", "format": "date"},
    "format-date-time": {"type": "string", "format": "date-time"},
    "format-email": {"type": "string", "format": "email"},
    "format-uri": {"type": "string", "format": "uri"},
    "any-of": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "string"}]},
    "one-of": {"oneOf": [{"type": "boolean"}, {"type": "string"}]},
    "all-of": {"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}}, {"required": ["a"]}]},
    "string-min-and-max-length": {"type": "string", "minLength": 30, "maxLength": 35},
    "string-exact-length": {"type": "string", "minLength": 5, "maxLength": 5},
    "string-max-length-small": {"type": "string", "maxLength": 3},
    "string-max-length-zero": {"type": "string", "maxLength": 0},
    "string-min-length-long": {"type": "string", "minLength": 300},
    "nullable-string": {"type": ["null", "string"], "maxLength": 12},
    "null": {"type": "null"},
    "no-additional-properties": {"type": "object", "additionalProperties": False, "properties": {"a": {"type": "integer"}}},
    "empty-schema": {},
    "demo-support-classify": {
        "type": "object",
        "required": ["category", "urgency", "summary"],
        "properties": {
            "category": {"enum": ["billing", "bug", "how_to", "account", "other"]},
            "urgency": {"enum": ["low", "normal", "high"]},
            "summary": {"type": "string", "maxLength": 200},
        },
    },
}


def _check_formats(schema: dict[str, Any], value: Any) -> None:
    fmt = schema.get("format")
    if fmt == "date":
        datetime.date.fromisoformat(value)
    elif fmt == "date-time":
        datetime.datetime.fromisoformat(value)
    elif fmt == "email":
        assert re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]+", value), value
    elif fmt == "uri":
        parsed = urlparse(value)
        assert parsed.scheme in ("http", "https")
        assert parsed.netloc


@pytest.mark.parametrize("schema", SCHEMAS.values(), ids=SCHEMAS.keys())
def test_json_output_is_valid_against_the_schema(schema: dict[str, Any]) -> None:
    for seed in SEEDS:
        response = complete(seed=seed, output_schema=schema)
        value = json.loads(response.text)

        assert schema_errors(schema, value) == [], f"seed {seed}: {value!r}"
        _check_formats(schema, value)
        assert response.finish_reason == "stop"


def test_json_output_varies_with_the_seed() -> None:
    schema = SCHEMAS["array-of-objects"]

    assert len({complete(seed=seed, output_schema=schema).text for seed in SEEDS}) > 10


def test_unsupported_keywords_give_json_not_a_crash() -> None:
    schema = {"type": "array", "prefixItems": [{"type": "integer"}], "items": False, "uniqueItems": True}

    assert isinstance(json.loads(complete(output_schema=schema).text), list)


def test_schema_errors_reports_paths() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "array", "items": {"type": "integer"}}}}

    assert schema_errors(schema, {"a": [1, "x"]}) == ["a/1: 'x' is not of type 'integer'"]
    assert schema_errors(schema, []) == ["(root): [] is not of type 'object'"]


@pytest.mark.parametrize("max_tokens", [1, 2, 5, 10, 20])
def test_free_text_is_cut_at_max_tokens(max_tokens: int) -> None:
    full = complete()
    assert full.tokens_out > 20

    cut = complete(max_tokens=max_tokens)

    assert cut.tokens_out <= max_tokens
    assert cut.finish_reason == "length"
    assert full.text.startswith(cut.text)


def test_free_text_under_max_tokens_stops_naturally() -> None:
    full = complete()

    exact = complete(max_tokens=full.tokens_out)

    assert (exact.text, exact.finish_reason) == (full.text, "stop")


def test_token_counts_come_from_the_text() -> None:
    response = complete(system="You are a careful support engineer.")

    assert response.tokens_in == count_tokens("You are a careful support engineer.") + count_tokens(PROMPT)
    assert response.tokens_out == count_tokens(response.text)
    usage = json.loads(response.raw)["usage"]
    assert usage == {"prompt_tokens": response.tokens_in, "completion_tokens": response.tokens_out, "total_tokens": response.tokens_in + response.tokens_out}


def test_raw_response_is_an_openai_style_body() -> None:
    response = complete(seed=3)
    raw = json.loads(response.raw)

    assert raw["choices"][0]["message"]["content"] == response.text
    assert raw["choices"][0]["finish_reason"] == response.finish_reason
    assert raw["model"] == response.model == "sim-fast"
    assert raw["simulated"] == {"seed": 3, "latency_ms": 0.0}
    assert response.provider == "simulated"


def test_count_tokens_counts_words_and_punctuation() -> None:
    assert count_tokens("Hello, world!") == 4
    assert count_tokens("") == 0


@pytest.mark.parametrize(
    ("text", "kind", "a", "b"),
    [
        pytest.param("fixed:0", "fixed", 0, 0, id="fixed-zero"),
        pytest.param("fixed:250", "fixed", 250, 0, id="fixed"),
        pytest.param("uniform:10:20", "uniform", 10, 20, id="uniform"),
        pytest.param("lognormal:400:0.5", "lognormal", 400, 0.5, id="lognormal"),
    ],
)
def test_latency_parses(text: str, kind: str, a: float, b: float) -> None:
    assert Latency.parse(text) == Latency(kind=kind, a=a, b=b)
    assert SimulationConfig(latency=text).latency == Latency(kind=kind, a=a, b=b)


@pytest.mark.parametrize("text", ["gaussian:1:2", "fixed:soon", "fixed:-5", "uniform:1:2:3x"])
def test_bad_latency_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="validation error|could not convert"):  # pydantic's ValidationError is a ValueError
        Latency.parse(text)


@pytest.mark.parametrize("text", ["fixed:60001", "fixed:inf", "fixed:nan", "uniform:0:1e9", "lognormal:60001:0.5", "lognormal:100:50"])
def test_latency_past_its_bound_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="less than or equal to 60000|sigma is at most 3"):
        Latency.parse(text)


def test_a_lognormal_sample_never_exceeds_the_bound() -> None:
    latency = Latency.parse("lognormal:60000:3")
    assert max(latency.sample_ms(random.Random(seed)) for seed in range(200)) == MAX_LATENCY_MS


def test_fixed_latency_samples_its_value() -> None:
    assert [Latency.parse("fixed:250").sample_ms(random.Random(seed)) for seed in range(3)] == [250, 250, 250]


def test_uniform_latency_stays_in_range_and_is_deterministic() -> None:
    latency = Latency.parse("uniform:10:20")

    samples = [latency.sample_ms(random.Random(seed)) for seed in range(200)]

    assert all(10 <= s <= 20 for s in samples)
    assert samples == [latency.sample_ms(random.Random(seed)) for seed in range(200)]
    assert max(samples) - min(samples) > 8


def test_lognormal_latency_has_its_median_and_is_deterministic() -> None:
    latency = Latency.parse("lognormal:400:0.5")
    rng = random.Random(1)

    samples = [latency.sample_ms(rng) for _ in range(2001)]

    assert 360 < statistics.median(samples) < 440
    assert all(s > 0 for s in samples)
    rng = random.Random(1)
    assert samples == [latency.sample_ms(rng) for _ in range(2001)]


def test_provider_latency_is_deterministic_per_request() -> None:
    # a 1-3 ms uniform latency keeps the test fast while proving the sample comes from the seed
    first, second = complete(latency="uniform:1:3"), complete(latency="uniform:1:3")

    latency = json.loads(first.raw)["simulated"]["latency_ms"]
    assert latency == json.loads(second.raw)["simulated"]["latency_ms"]
    assert 1 <= latency <= 3


def test_run_options_override_the_site_configuration() -> None:
    config = SimulationConfig.merged({"seed": 7, "latency": "lognormal:400:0.5"}, {"seed": 9, "latency": "fixed:0"})

    assert config == SimulationConfig(seed=9, latency=Latency(kind="fixed", a=0))
    assert SimulationConfig.merged({"seed": 7}, None).seed == 7


def test_unknown_simulation_option_is_refused() -> None:
    with pytest.raises(ValidationError):
        SimulationConfig.merged({"seed": 7}, {"fault_rate": 0.5})
