"""Retry decisions: whether a failed attempt is tried again, and after how long.

Backoff is exponential with full jitter (a uniform draw between zero and the exponential
ceiling), so workers that failed together do not retry together. A provider's Retry-After is a
floor: we never come back sooner than it asked.
"""

from __future__ import annotations

import random

from .spec import RetryPolicy


def backoff_ceiling(policy: RetryPolicy, failures: int) -> float:
    """The most the wait after the ``failures``-th failure may be: base * 2^(n-1), capped."""
    return min(policy.backoff_cap_seconds, policy.backoff_seconds * 2 ** max(0, failures - 1))


def retry_delay(policy: RetryPolicy, failures: int, rng: random.Random, retry_after: float | None = None) -> float:
    """Seconds to wait before the next attempt after ``failures`` failed attempts."""
    delay = rng.uniform(0.0, backoff_ceiling(policy, failures))
    if retry_after is not None:
        delay = max(delay, retry_after)  # coming back sooner would only earn another 429
    return delay


def should_retry(policy: RetryPolicy, attempts_spent: int, retryable: bool) -> bool:
    """A retryable failure is tried again while attempts remain; a permanent one never."""
    return retryable and attempts_spent < policy.max_attempts
