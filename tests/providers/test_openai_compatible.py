"""The OpenAI-compatible provider against a real chat-completions server on loopback (no patching
of the SDK): what it sends, what it returns, how it classifies failures, and that the API key,
named in the configuration and read from the environment, is never stored or logged."""

from __future__ import annotations

import json
import logging
import socket
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from email.utils import formatdate

import pytest
from django.apps import apps
from django.core import serializers

from apps.providers.base import ModelRequest, ModelResponse, ProviderError, count_tokens
from apps.providers.openai_compatible import REDACTED, OpenAICompatibleProvider, ProviderConfig, retry_after_seconds, sdk_client
from apps.providers.pricing import call_cost
from apps.providers.registry import provider_for
from apps.providers.simulated import SimulatedProvider
from apps.runs import services
from apps.runs.models import ProviderCall, Run, RunStatus
from tests.factories import definition, llm_node, save_workflow
from tests.providers.loopback import DEFAULT_TEXT, ChatServer, Reply, completion, error_body
from tests.runs.helpers import drain

KEY_ENV = "DAGWRIGHT_TEST_LOOPBACK_KEY"
USAGE = {"prompt_tokens": 21, "completion_tokens": 8, "total_tokens": 29}
SCHEMA = {"title": "Ticket triage", "type": "object", "required": ["category"], "properties": {"category": {"enum": ["billing", "bug"]}}}
PROMPT = "Say something about harbours."


@pytest.fixture
def api_key(monkeypatch) -> str:
    key = f"sk-loopback-{uuid.uuid4().hex}"
    monkeypatch.setenv(KEY_ENV, key)
    return key


@pytest.fixture
def server(api_key: str) -> Iterator[ChatServer]:
    with ChatServer(api_key=api_key) as chat:
        yield chat


def provider(server: ChatServer, timeout: float = 5.0) -> OpenAICompatibleProvider:
    config = ProviderConfig(base_url=server.base_url, api_key_env=KEY_ENV, timeout_seconds=timeout, models=("gpt-4o-mini",))
    return OpenAICompatibleProvider("loopback", config)


def ask(server: ChatServer, timeout: float = 5.0, **request) -> ModelResponse:
    return provider(server, timeout).complete(ModelRequest(**{"model": "gpt-4o-mini", "prompt": PROMPT, **request}))


def failure(server: ChatServer, *replies: Reply, timeout: float = 5.0) -> ProviderError:
    server.reply(*replies)
    with pytest.raises(ProviderError) as caught:
        ask(server, timeout)
    return caught.value


# --- what is sent and what comes back ------------------------------------------------------------


def test_an_answer_with_usage_is_returned_with_its_raw_body_and_counts(server, api_key):
    body = completion(usage=USAGE)
    server.reply(Reply(body=body))

    response = ask(server, system="You are brief.", max_tokens=64, temperature=0.3)

    assert response == ModelResponse(
        text=DEFAULT_TEXT, raw=body, tokens_in=21, tokens_out=8, model="gpt-4o-mini", provider="loopback", finish_reason="stop", usage_estimated=False
    )
    seen = server.requests[-1]
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == f"Bearer {api_key}"
    assert seen.body == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "You are brief."}, {"role": "user", "content": PROMPT}],
        "max_tokens": 64,
        "temperature": 0.3,
        "stream": False,
    }


def test_an_answer_without_usage_is_estimated_and_flagged(server):
    server.reply(Reply(body=completion(usage=None, finish="length")))

    response = ask(server, system="You are brief.")

    assert response.usage_estimated is True
    assert response.tokens_in == count_tokens("You are brief.") + count_tokens(PROMPT)
    assert response.tokens_out == count_tokens(DEFAULT_TEXT)
    assert response.finish_reason == "length"


def test_partial_usage_keeps_what_was_reported_and_estimates_the_rest(server):
    server.reply(Reply(body=completion(usage={"prompt_tokens": 40})))

    response = ask(server)

    assert (response.tokens_in, response.tokens_out, response.usage_estimated) == (40, count_tokens(DEFAULT_TEXT), True)


def test_an_output_schema_is_sent_as_the_native_json_schema_response_format(server):
    server.reply(Reply(body=completion('{"category": "billing"}', usage=USAGE)))

    response = ask(server, output_schema=SCHEMA)

    assert server.requests[-1].body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Ticket_triage", "schema": SCHEMA, "strict": False},
    }
    assert server.requests[-1].body["messages"] == [{"role": "user", "content": PROMPT}]
    assert json.loads(response.text) == {"category": "billing"}


def test_a_null_content_is_empty_text_not_a_failure(server):
    server.reply(Reply(body=completion(None, usage=USAGE, finish="content_filter")))

    response = ask(server)

    assert (response.text, response.finish_reason, response.tokens_out) == ("", "content_filter", 8)


# --- failures, classified ------------------------------------------------------------------------


def test_429_with_retry_after_in_seconds_is_retryable_and_says_when(server):
    body = error_body("Rate limit reached for requests", code="rate_limit_exceeded", kind="requests")

    error = failure(server, Reply(429, body, {"Retry-After": "7"}))

    assert (error.error_class, error.retryable, error.retry_after, error.raw) == ("rate_limited", True, 7.0, body)
    assert "Rate limit reached" in str(error)
    assert len(server.requests) == 1  # the SDK did not retry on its own


def test_429_with_retry_after_as_an_http_date_is_retryable_and_says_when(server):
    asked = time.time()
    retry_at = int(asked) + 30  # an HTTP date has whole seconds

    error = failure(server, Reply(429, error_body("slow down"), {"Retry-After": formatdate(retry_at, usegmt=True)}))
    answered = time.time()

    assert (error.error_class, error.retryable) == ("rate_limited", True)
    # the wait is from when the answer was read to the date the server named
    assert retry_at - answered <= error.retry_after <= retry_at - asked


def test_429_for_an_exhausted_quota_is_permanent(server):
    error = failure(server, Reply(429, error_body("You exceeded your current quota", code="insufficient_quota")))

    assert (error.error_class, error.retryable) == ("quota_exceeded", False)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_a_server_error_is_retryable_and_its_body_kept(server, status):
    body = error_body("The server had an error while processing your request.", kind="server_error")

    error = failure(server, Reply(status, body))

    assert (error.error_class, error.retryable, error.raw, error.retry_after) == ("server_error", True, body, None)
    assert str(error).startswith(f"loopback: HTTP {status}: The server had an error")
    assert len(server.requests) == 1


@pytest.mark.parametrize("status", [401, 403])
def test_an_auth_failure_is_permanent(server, status):
    body = error_body("Incorrect API key provided.", code="invalid_api_key")

    error = failure(server, Reply(status, body))

    assert (error.error_class, error.retryable, error.raw) == ("auth_error", False, body)


def test_a_wrong_key_is_refused_by_the_server_as_an_auth_error(server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-someone-else")  # read at each request: no restart after a rotation

    error = failure(server)

    assert error.error_class == "auth_error"


@pytest.mark.parametrize("status", [400, 404, 422])
def test_a_bad_request_is_permanent(server, status):
    body = error_body("Invalid value for 'max_tokens'.")

    error = failure(server, Reply(status, body))

    assert (error.error_class, error.retryable, error.raw) == ("bad_request", False, body)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("<html><body>Bad gateway</body></html>", id="html"),
        pytest.param(completion(usage=USAGE)[:40], id="truncated-json"),
        pytest.param(json.dumps({"object": "chat.completion", "choices": []}), id="no-choices"),
        pytest.param(json.dumps({"error": {"message": "upstream failed"}}), id="error-with-200"),
        pytest.param(json.dumps({"choices": [{"message": {"content": 42}}]}), id="content-not-text"),
        pytest.param("", id="empty"),
    ],
)
def test_a_200_that_is_not_a_chat_completion_is_retryable_and_kept(server, body):
    error = failure(server, Reply(200, body))

    assert (error.error_class, error.retryable, error.raw) == ("malformed_response", True, body)


def test_a_slow_server_times_out_as_configured_and_is_not_retried_by_the_sdk(server):
    error = failure(server, Reply(delay=1.5), timeout=0.2)  # the server would have answered, later

    assert (error.error_class, error.retryable, error.raw) == ("timeout", True, "")
    assert "within 0.2 s" in str(error)
    assert len(server.requests) == 1


def test_a_refused_connection_is_retryable():
    with socket.socket() as probe:  # a port that was free a moment ago, and is closed now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = ProviderConfig(base_url=f"http://127.0.0.1:{port}/v1", api_key_env="", timeout_seconds=2)

    with pytest.raises(ProviderError) as caught:
        OpenAICompatibleProvider("closed", config).complete(ModelRequest(model="gpt-4o-mini", prompt=PROMPT))

    assert (caught.value.error_class, caught.value.retryable) == ("connection_error", True)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"retry-after": "2.5"}, 2.5, id="seconds"),
        pytest.param({"retry-after": "-3"}, 0.0, id="negative"),
        pytest.param({"retry-after": "Thu, 01 Jan 2026 00:01:00 GMT"}, 60.0, id="http-date"),
        pytest.param({"retry-after": "Wed, 31 Dec 2025 23:00:00 GMT"}, 0.0, id="http-date-past"),
        pytest.param({"retry-after": "soon"}, None, id="nonsense"),
        pytest.param({"retry-after-ms": "1500", "retry-after": "9"}, 1.5, id="milliseconds-first"),
        pytest.param({}, None, id="none"),
    ],
)
def test_retry_after_is_read_as_seconds_or_a_date(headers, expected):
    assert retry_after_seconds(headers, now=lambda: 1_767_225_600.0) == expected  # 2026-01-01 00:00 UTC


# --- the key -------------------------------------------------------------------------------------


def test_a_missing_key_is_a_permanent_auth_error_and_nothing_is_sent(server, monkeypatch):
    monkeypatch.delenv(KEY_ENV)

    error = failure(server)

    assert (error.error_class, error.retryable) == ("auth_error", False)
    assert KEY_ENV in str(error)
    assert server.requests == []


def test_a_server_that_wants_no_key_gets_a_placeholder(api_key):
    with ChatServer() as server:
        config = ProviderConfig(base_url=server.base_url, api_key_env="", models=("llama3.1:8b",))
        response = OpenAICompatibleProvider("local", config).complete(ModelRequest(model="llama3.1:8b", prompt=PROMPT))

    assert response.text == DEFAULT_TEXT
    assert server.requests[-1].headers["authorization"] == "Bearer unused"


@pytest.mark.parametrize("status", [200, 401])
def test_a_body_echoing_the_key_is_kept_with_the_key_redacted(server, api_key, status):
    echo = f"Incorrect API key provided: {api_key}"
    if status == 200:
        server.reply(Reply(body=completion(echo, usage=USAGE)))
        response = ask(server)
        stored = [response.raw, response.text]
    else:
        error = failure(server, Reply(401, error_body(echo)))
        stored = [error.raw, str(error)]

    assert all(api_key not in text and REDACTED in text for text in stored)


# --- routing -------------------------------------------------------------------------------------


def endpoint(base_url: str = "http://127.0.0.1:9/v1", **extra) -> dict:
    return {"kind": "openai", "base_url": base_url, "api_key_env": KEY_ENV, **extra}


def test_simulated_models_stay_simulated_whatever_is_configured(settings):
    settings.DAGWRIGHT_PROVIDERS = {"gateway": endpoint(models=["*"])}

    assert isinstance(provider_for("sim-fast"), SimulatedProvider)
    assert provider_for("anything-else").name == "gateway"


@pytest.mark.parametrize(
    ("model", "chosen"),
    [
        pytest.param("gpt-4o-mini", "exact", id="a-name-beats-prefixes"),
        pytest.param("gpt-4o", "longer", id="a-longer-prefix-beats-a-shorter"),
        pytest.param("gpt-4.1", "short", id="a-prefix"),
        pytest.param("llama3.1:8b", "first", id="the-first-of-equals"),
    ],
)
def test_a_model_goes_to_the_endpoint_that_lists_it_most_closely(settings, model, chosen):
    settings.DAGWRIGHT_PROVIDERS = {
        "short": endpoint(models=["gpt-*"]),
        "longer": endpoint(models=["gpt-4o*"]),
        "exact": endpoint(models=["gpt-4o-mini"]),
        "first": endpoint(models=["llama3.1:8b"]),
        "second": endpoint(models=["llama3.1:8b"]),
    }

    chosen_provider = provider_for(model)

    assert isinstance(chosen_provider, OpenAICompatibleProvider)
    assert chosen_provider.name == chosen


@pytest.mark.parametrize("model", ["claude-sonnet", "", "gpt"])
def test_a_model_no_endpoint_lists_is_still_unknown(settings, model):
    settings.DAGWRIGHT_PROVIDERS = {"openai": endpoint(models=["gpt-*"])}

    with pytest.raises(ProviderError) as caught:
        provider_for(model)

    assert (caught.value.error_class, caught.value.retryable) == ("unknown_model", False)


def test_no_configuration_means_simulated_models_only(settings):
    del settings.DAGWRIGHT_PROVIDERS

    with pytest.raises(ProviderError, match="no provider serves model 'gpt-4o'"):
        provider_for("gpt-4o")


@pytest.mark.parametrize(
    "entry",
    [
        pytest.param(endpoint(models=["m"], kind="anthropic"), id="unknown-kind"),
        pytest.param(endpoint(models=["m"], api_key="sk-inline"), id="inline-key"),
        pytest.param(endpoint(models=["m"], timeout_seconds=0), id="zero-timeout"),
    ],
)
def test_a_misconfigured_endpoint_is_a_permanent_error(settings, entry):
    settings.DAGWRIGHT_PROVIDERS = {"broken": entry}

    with pytest.raises(ProviderError) as caught:
        provider_for("m")

    assert (caught.value.error_class, caught.value.retryable) == ("provider_config", False)


def test_run_options_cannot_choose_the_endpoint(settings):
    settings.DAGWRIGHT_PROVIDERS = {"openai": endpoint(models=["gpt-*"])}

    chosen = provider_for("gpt-4o", run_options={"base_url": "http://attacker.example/v1", "api_key_env": "HOME"})

    assert (chosen.config.base_url, chosen.config.api_key_env) == ("http://127.0.0.1:9/v1", KEY_ENV)


def test_providers_are_cheap_and_share_one_sdk_client_per_endpoint(settings):
    settings.DAGWRIGHT_PROVIDERS = {"openai": endpoint(models=["gpt-*"])}

    first, second = provider_for("gpt-4o"), provider_for("gpt-4.1")

    assert first is not second
    assert sdk_client(first.config) is sdk_client(second.config)
    assert sdk_client(first.config).max_retries == 0


# --- through a run -------------------------------------------------------------------------------


def start(version, topic: str = "harbours") -> Run:
    return services.run_start(workflow=version.workflow, input={"topic": topic}, options={})


@pytest.fixture
def routed(settings, server: ChatServer) -> str:
    """The loopback server as the site's provider of gpt-4o-mini; the name keeps breakers apart."""
    name = f"loopback-{uuid.uuid4().hex[:6]}"
    settings.DAGWRIGHT_PROVIDERS = {name: endpoint(server.base_url, timeout_seconds=5, models=["gpt-4o-mini"])}
    return name


@pytest.mark.django_db
@pytest.mark.usefixtures("unconsumed_queue")
def test_a_run_stores_the_servers_answer_with_tokens_and_cost(server, routed):
    body = completion('{"category": "bug"}', usage=USAGE)
    server.reply(Reply(body=body))
    version = save_workflow(definition(nodes=[llm_node("triage", model="gpt-4o-mini", output_schema=SCHEMA)]))

    run = drain(start(version))

    assert run.status == RunStatus.SUCCEEDED
    call = ProviderCall.objects.get(run=run)
    assert (call.provider, call.model, call.raw_response, call.error_class) == (routed, "gpt-4o-mini", body, "")
    assert (call.tokens_in, call.tokens_out) == (21, 8)
    assert call.cost == call_cost("gpt-4o-mini", 21, 8) == Decimal("0.00000795")
    assert (run.tokens_in, run.tokens_out, run.cost) == (21, 8, call.cost)
    assert run.node_runs.get().output == {"category": "bug"}
    assert server.requests[-1].body["response_format"]["json_schema"]["schema"] == SCHEMA


@pytest.mark.django_db
@pytest.mark.usefixtures("unconsumed_queue")
def test_the_key_appears_in_no_stored_row_and_no_log(server, routed, api_key, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    server.reply(
        Reply(body=completion(usage=USAGE)),
        Reply(401, error_body(f"Incorrect API key provided: {api_key}", code="invalid_api_key")),
    )
    version = save_workflow(definition(nodes=[llm_node("first", model="gpt-4o-mini"), llm_node("second", model="gpt-4o-mini", depends_on=["first"])]))

    run = drain(start(version))

    assert run.status == RunStatus.FAILED
    assert ProviderCall.objects.filter(run=run).count() == 2
    assert len(server.requests) == 2
    assert all(seen.headers["authorization"] == f"Bearer {api_key}" for seen in server.requests)
    stored = "".join(serializers.serialize("json", model.objects.all()) for app in ("runs", "providers") for model in apps.get_app_config(app).get_models())
    assert REDACTED in stored  # the echoed key was there to leak
    assert api_key not in stored
    assert caplog.records  # logging was on, down to DEBUG
    assert api_key not in caplog.text
    out, err = capfd.readouterr()
    assert api_key not in out + err
