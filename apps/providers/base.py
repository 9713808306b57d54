"""The one seam to model providers: requests, responses and classified errors."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ModelRequest:
    model: str
    prompt: str
    system: str = ""
    output_schema: dict[str, Any] | None = None
    max_tokens: int = 512
    temperature: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)  # per-run provider settings
    # The node's attempt (1 for the first). Not part of ``as_json``: the stored input and its hash
    # are the same for every attempt; only the simulated provider's fault draws depend on it.
    attempt: int = 1
    # Whether the caller no longer wants the answer (its run was cancelled). A provider that waits
    # (the simulated one) asks it between short waits and gives up with ``cancelled_error()``.
    cancelled: Callable[[], bool] | None = field(default=None, compare=False, repr=False)

    def as_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "system": self.system,
            "prompt": self.prompt,
            "output_schema": self.output_schema,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }


@dataclass(frozen=True)
class ModelResponse:
    text: str
    raw: str  # the provider's response body, verbatim
    tokens_in: int
    tokens_out: int
    model: str
    provider: str
    finish_reason: str = "stop"
    usage_estimated: bool = False


class ProviderError(Exception):
    """A failed call, classified: ``retryable`` errors may succeed if tried again later."""

    def __init__(self, message: str, *, error_class: str, retryable: bool, raw: str = "", retry_after: float | None = None):
        super().__init__(message)
        self.error_class = error_class
        self.retryable = retryable
        self.raw = raw
        self.retry_after = retry_after


def cancelled_error() -> ProviderError:
    """The call was given up because its caller no longer wants it: permanent, and no sign of the
    provider's health."""
    return ProviderError("the call was given up: the run was cancelled", error_class="cancelled", retryable=False)


class Provider(Protocol):
    name: str

    def complete(self, request: ModelRequest) -> ModelResponse: ...


_TOKEN = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    """A tokenizer-free estimate: words and punctuation marks, each one token."""
    return len(_TOKEN.findall(text))
