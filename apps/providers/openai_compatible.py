"""A provider for OpenAI and every server that speaks its chat-completions protocol (vLLM, Ollama,
LM Studio, gateways), through the official ``openai`` SDK.

Configuration is one entry of ``settings.DAGWRIGHT_PROVIDERS`` (see ``apps.providers.registry``)::

    "openai": {"kind": "openai", "base_url": "https://api.openai.com/v1", "api_key_env": "OPENAI_API_KEY",
               "timeout_seconds": 60, "models": ["gpt-*", "o3-mini"]}

The API key is named, never given: ``api_key_env`` is the environment variable that holds it
(empty for a server that wants none). It is read from the environment at each request, so a
rotated key needs no restart, and is kept out of everything stored or logged: requests are stored
as ``ModelRequest.as_json()`` (no key there), and a response or error body that echoes the key
(some gateways do) has it replaced by ``[redacted]`` before it leaves this module.

The SDK's own retries are off (Dagwright's retry policy, breaker and budgets apply) and so is
streaming. Errors come out classified like every provider's:

======================================  ==========================  =========
what happened                           error_class                 retryable
======================================  ==========================  =========
timeout / no connection                 timeout / connection_error  yes
429 (``retry_after`` from Retry-After)  rate_limited                yes
429 with code ``insufficient_quota``    quota_exceeded              no
408 / 409 / 5xx                         timeout / conflict /        yes
                                        server_error
401 / 403                               auth_error                  no
other 4xx (400, 404, 422, ...)          bad_request                 no
200 that is not a chat completion       malformed_response          yes
======================================  ==========================  =========

A response's model is the one requested (``gpt-4o-mini``), not the dated one the body names
(``gpt-4o-mini-2024-07-18``), so that it finds its price; the body keeps the dated name.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Any, Literal

import openai
from pydantic import BaseModel, ConfigDict, Field

from .base import ModelRequest, ModelResponse, ProviderError, count_tokens

NO_KEY = "unused"  # the SDK insists on a key; servers that want none ignore this one
REDACTED = "[redacted]"
MAX_MESSAGE_CHARS = 300
_SCHEMA_NAME = re.compile(r"[^a-zA-Z0-9_-]")


class ProviderConfig(BaseModel):
    """One OpenAI-compatible endpoint. ``models`` are names, or prefixes ending in ``*``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["openai"] = "openai"
    base_url: str = "https://api.openai.com/v1"
    api_key_env: str = "OPENAI_API_KEY"
    timeout_seconds: float = Field(60.0, gt=0)
    models: tuple[str, ...] = ()


def _key_reader(name: str) -> Callable[[], str]:
    return lambda: os.environ.get(name, "")


@lru_cache(maxsize=32)
def sdk_client(config: ProviderConfig) -> openai.OpenAI:
    """One SDK client (and connection pool) per endpoint and process, whatever the provider name."""
    api_key: str | Callable[[], str] = _key_reader(config.api_key_env) if config.api_key_env else NO_KEY
    return openai.OpenAI(api_key=api_key, base_url=config.base_url, timeout=config.timeout_seconds, max_retries=0)


class OpenAICompatibleProvider:
    def __init__(self, name: str, config: ProviderConfig):
        self.name, self.config = name, config

    def complete(self, request: ModelRequest) -> ModelResponse:
        key = self._api_key()
        try:
            answer = sdk_client(self.config).chat.completions.with_raw_response.create(**chat_body(request))
        except openai.OpenAIError as exc:
            raise _scrubbed(self._classified(exc), key) from None  # the SDK's error holds the request, headers and all
        return self._response(request, redact(answer.text, key))

    def _api_key(self) -> str:
        if not self.config.api_key_env:
            return ""
        key = os.environ.get(self.config.api_key_env, "")
        if not key:
            raise ProviderError(f"{self.name}: the environment variable {self.config.api_key_env} is not set", error_class="auth_error", retryable=False)
        return key

    def _response(self, request: ModelRequest, body: str) -> ModelResponse:
        text, finish, usage = parse_chat_completion(body, provider=self.name)
        tokens_in, tokens_out = usage.get("prompt_tokens"), usage.get("completion_tokens")
        estimated = tokens_in is None or tokens_out is None
        if tokens_in is None:
            tokens_in = count_tokens(request.system) + count_tokens(request.prompt)
        if tokens_out is None:
            tokens_out = count_tokens(text)
        return ModelResponse(
            text=text, raw=body, tokens_in=tokens_in, tokens_out=tokens_out, model=request.model, provider=self.name,
            finish_reason=finish, usage_estimated=estimated,
        )  # fmt: skip

    def _classified(self, exc: openai.OpenAIError) -> ProviderError:
        if isinstance(exc, openai.APITimeoutError):  # a subclass of APIConnectionError: first
            return ProviderError(f"{self.name}: no answer within {self.config.timeout_seconds:g} s", error_class="timeout", retryable=True)
        if isinstance(exc, openai.APIConnectionError):
            return ProviderError(
                f"{self.name}: cannot connect to {self.config.base_url}: {exc.__cause__ or exc}", error_class="connection_error", retryable=True
            )
        if isinstance(exc, openai.APIStatusError):
            return status_error(self.name, exc.response.status_code, exc.response.text, exc.response.headers)
        return ProviderError(f"{self.name}: {type(exc).__name__}: {str(exc)[:MAX_MESSAGE_CHARS]}", error_class="client_error", retryable=False)


def chat_body(request: ModelRequest) -> dict[str, Any]:
    """The chat-completions request for ``request``: system and user messages, no streaming, and
    the output schema as the native JSON-schema response format. ``strict`` stays off: strict mode
    accepts only a subset of JSON Schema, and the node validates the output anyway."""
    messages = [{"role": "system", "content": request.system}] if request.system else []
    messages.append({"role": "user", "content": request.prompt})
    body: dict[str, Any] = {"model": request.model, "messages": messages, "max_tokens": request.max_tokens, "temperature": request.temperature, "stream": False}
    if request.output_schema is not None:
        name = _SCHEMA_NAME.sub("_", str(request.output_schema.get("title") or "output"))[:64]
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": name, "schema": request.output_schema, "strict": False}}
    return body


def parse_chat_completion(body: str, *, provider: str) -> tuple[str, str, dict[str, int]]:
    """The text, finish reason and usage (the integer counts found) of a chat-completion body.

    A ``null`` content (a refusal, or tool calls this product never asks for) is empty text: the
    provider did answer, and a node's schema check decides what the answer is worth.
    """

    def malformed(reason: str) -> ProviderError:
        return ProviderError(f"{provider}: the response is not a chat completion: {reason}", error_class="malformed_response", retryable=True, raw=body)

    try:
        data = json.loads(body)
    except ValueError as exc:
        raise malformed(f"not JSON ({exc})") from None
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise malformed("no choices")
    message = choices[0].get("message")
    content = message.get("content", "") if isinstance(message, dict) else None
    if not isinstance(message, dict) or not isinstance(content, str | None):
        raise malformed("no message content")
    usage = data.get("usage")
    counts = {k: v for k, v in usage.items() if isinstance(v, int) and not isinstance(v, bool) and v >= 0} if isinstance(usage, dict) else {}
    return content or "", str(choices[0].get("finish_reason") or "stop"), counts


def status_error(provider: str, status: int, body: str, headers: Any) -> ProviderError:
    """A non-2xx answer, classified; the body is kept as the raw response."""
    detail, code = _error_detail(body)
    message = f"{provider}: HTTP {status}" + (f": {detail}" if detail else "")

    def error(error_class: str, retryable: bool, retry_after: float | None = None) -> ProviderError:
        return ProviderError(message, error_class=error_class, retryable=retryable, raw=body, retry_after=retry_after)

    if status == 429:
        # OpenAI answers 429 for an exhausted quota too: waiting will not help
        return error("quota_exceeded", False) if code == "insufficient_quota" else error("rate_limited", True, retry_after_seconds(headers))
    if status >= 500:
        return error("server_error", True, retry_after_seconds(headers))
    if status in (401, 403):
        return error("auth_error", False)
    if status in (408, 409):  # the SDK retries these two as well: the server asks for it
        return error("timeout" if status == 408 else "conflict", True, retry_after_seconds(headers))
    return error("bad_request", False)


def _error_detail(body: str) -> tuple[str, str]:
    """The server's error message and code, from an OpenAI-style ``{"error": {...}}`` body or its text."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return body.strip()[:MAX_MESSAGE_CHARS], ""
    if isinstance(error, dict):
        return str(error.get("message") or "")[:MAX_MESSAGE_CHARS], str(error.get("code") or "")
    return str(error or "")[:MAX_MESSAGE_CHARS], ""


def retry_after_seconds(headers: Any, *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from ``retry-after-ms`` (OpenAI's) or ``Retry-After`` (seconds or an HTTP date)."""
    millis = headers.get("retry-after-ms")
    try:
        if millis is not None:
            return max(0.0, float(millis) / 1000)
    except ValueError:
        pass
    value = (headers.get("retry-after") or "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now())
    except (TypeError, ValueError):  # neither a number nor a date: no advice
        return None


def redact(text: str, key: str) -> str:
    """``text`` with the API key taken out, should a server echo it (a body is otherwise verbatim)."""
    return text.replace(key, REDACTED) if key else text


def _scrubbed(error: ProviderError, key: str) -> ProviderError:
    if not key or (key not in str(error) and key not in error.raw):
        return error
    return ProviderError(
        redact(str(error), key), error_class=error.error_class, retryable=error.retryable, raw=redact(error.raw, key), retry_after=error.retry_after
    )
