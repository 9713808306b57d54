"""Retry rules: exponential backoff with full jitter, a cap, Retry-After as a floor."""

import random

import pytest

from apps.engine.retry import backoff_ceiling, retry_delay, should_retry
from apps.engine.spec import RetryPolicy, WorkflowSpec

POLICY = RetryPolicy(max_attempts=4, backoff_seconds=2.0, backoff_cap_seconds=10.0)


@pytest.mark.parametrize(("failures", "ceiling"), [(1, 2.0), (2, 4.0), (3, 8.0), (4, 10.0), (9, 10.0)])
def test_the_ceiling_doubles_per_failure_up_to_the_cap(failures, ceiling):
    assert backoff_ceiling(POLICY, failures) == ceiling


def test_full_jitter_spreads_delays_over_the_whole_range_below_the_ceiling():
    rng = random.Random(1)
    delays = [retry_delay(POLICY, 3, rng) for _ in range(2000)]
    assert 0.0 <= min(delays) < 0.5
    assert 7.5 < max(delays) <= 8.0
    assert 3.5 < sum(delays) / len(delays) < 4.5  # uniform over [0, 8]: mean 4


def test_retry_after_is_a_floor_even_above_the_cap():
    rng = random.Random(2)
    assert all(retry_delay(POLICY, 1, rng, retry_after=30.0) == 30.0 for _ in range(50))
    assert all(retry_delay(POLICY, 4, rng, retry_after=0.5) >= 0.5 for _ in range(50))


@pytest.mark.parametrize(
    ("spent", "retryable", "expected"),
    [(1, True, True), (3, True, True), (4, True, False), (1, False, False)],
)
def test_only_retryable_failures_with_attempts_left_are_retried(spent, retryable, expected):
    assert should_retry(POLICY, spent, retryable) is expected


def test_a_node_policy_overrides_the_workflow_default():
    spec = WorkflowSpec.model_validate(
        {
            "name": "r",
            "retry": {"max_attempts": 5},
            "nodes": [
                {"id": "a", "type": "tool", "tool": "text_stats", "args": {"text": "x"}},
                {"id": "b", "type": "tool", "tool": "text_stats", "args": {"text": "x"}, "retry": {"max_attempts": 1}},
            ],
        }
    )
    assert spec.retry_policy("a").max_attempts == 5
    assert spec.retry_policy("b").max_attempts == 1
    assert RetryPolicy().max_attempts == 3
