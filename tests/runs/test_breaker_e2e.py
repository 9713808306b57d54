"""The circuit breaker seen from a run: an open circuit defers nodes without spending attempts or
reaching the provider; provider failures open it; the half-open probe closes it again."""

from __future__ import annotations

import uuid

import pytest

from apps.providers.breaker import circuit_breaker
from apps.runs import services
from apps.runs.executors import execute
from apps.runs.models import NodeStatus, ProviderCall, RunStatus
from tests.factories import definition, llm_node, save_workflow
from tests.runs.helpers import drain

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("unconsumed_queue")]


@pytest.fixture
def model() -> str:
    return f"sim-breaker-{uuid.uuid4().hex[:6]}"  # a breaker of this test's own


@pytest.fixture
def fast_breaker(settings):
    settings.DAGWRIGHT_BREAKER = {**settings.DAGWRIGHT_BREAKER, "failure_threshold": 3, "open_seconds": 0.0, "probe_wait_seconds": 0.0}


def start(model: str, faults: dict | None = None, max_attempts: int = 3):
    retry = {"max_attempts": max_attempts, "backoff_seconds": 0, "backoff_cap_seconds": 0}
    version = save_workflow(definition(nodes=[llm_node("answer", model=model, retry=retry)]))
    options = {"simulation": {"latency": "fixed:0", "faults": faults or {}}}
    return services.run_start(workflow=version.workflow, input={"topic": "breakers"}, options=options)


def test_an_open_circuit_defers_the_node_without_calling_or_spending_an_attempt(model):
    breaker = circuit_breaker("simulated", model)
    for _ in range(5):
        breaker.before_call()
        breaker.after_call(ok=False, error_class="server_error")
    run = start(model, max_attempts=1)
    node = run.node_runs.get()

    claim = services.node_run_claim(node_run_id=node.pk)
    services.node_run_complete(claim=claim, outcome=execute(claim))

    node.refresh_from_db()
    assert node.status == NodeStatus.RETRY_WAIT
    assert (node.attempt, node.deferrals, node.attempts_spent) == (1, 1, 0)
    assert node.error_class == "circuit_open"
    assert not ProviderCall.objects.filter(run=run).exists()
    event = run.events.get(kind="node_retrying")
    assert event.data["deferred"] is True


def test_provider_errors_open_the_circuit_and_a_successful_probe_closes_it(model, fast_breaker):
    failing = start(model, faults={"error_rate": 1.0}, max_attempts=5)
    drain(failing)
    healthy = drain(start(model))
    assert healthy.status == RunStatus.SUCCEEDED
    transitions = list(circuit_breaker_transitions(model))
    assert transitions[:2] == [("closed", "open"), ("open", "half_open")]
    assert ("half_open", "closed") in transitions


def circuit_breaker_transitions(model: str):
    from apps.providers.models import BreakerTransition

    return BreakerTransition.objects.filter(model=model).order_by("id").values_list("from_state", "to_state")
