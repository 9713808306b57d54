"""The opt-in model-output cache (``cache: {ttl_seconds}`` on llm and router nodes): a valid
answer for the same rendered request of the same node and version is reused, at no cost."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from apps.runs import services
from apps.runs.models import ProviderCall, Run, RunStatus
from tests.factories import definition, llm_node, save_workflow
from tests.runs.helpers import drain

pytestmark = pytest.mark.django_db
FAST = {"simulation": {"latency": "fixed:0"}}


def run_topic(version, topic: str) -> Run:
    return drain(services.run_start(workflow=version.workflow, input={"topic": topic}, options=FAST))


def cached_workflow(ttl: int = 600, name: str = "cached"):
    return save_workflow(definition(name, [llm_node("answer", cache={"ttl_seconds": ttl})]))


def test_the_same_input_reuses_the_stored_answer_and_pays_nothing():
    version = cached_workflow()
    first = run_topic(version, "harbours")

    second = run_topic(version, "harbours")

    assert first.status == second.status == RunStatus.SUCCEEDED
    assert ProviderCall.objects.count() == 1
    call = ProviderCall.objects.get()
    answer = second.node_runs.get(node_id="answer")
    assert answer.output == first.node_runs.get(node_id="answer").output == call.output
    assert (answer.tokens_in, answer.tokens_out, answer.cost) == (0, 0, Decimal(0))
    assert (second.tokens_in, second.tokens_out, second.cost) == (0, 0, Decimal(0))
    assert first.cost == call.cost > 0
    assert second.events.filter(kind="provider_response_reused", node_id="answer", data={"call": call.pk}).exists()


def test_a_different_input_calls_the_model_again():
    version = cached_workflow()
    run_topic(version, "harbours")

    other = run_topic(version, "lighthouses")

    assert ProviderCall.objects.count() == 2
    assert other.provider_calls.count() == 1
    assert other.cost > 0


def test_after_the_ttl_the_model_is_called_again():
    version = cached_workflow(ttl=60)
    run_topic(version, "harbours")
    ProviderCall.objects.update(created_at=timezone.now() - timedelta(seconds=61))

    again = run_topic(version, "harbours")

    assert ProviderCall.objects.count() == 2
    assert again.provider_calls.count() == 1


def test_without_cache_every_run_pays():
    version = save_workflow(definition("uncached", [llm_node("answer")]))
    run_topic(version, "harbours")

    run_topic(version, "harbours")

    assert ProviderCall.objects.count() == 2


def test_an_invalid_stored_answer_is_not_reused():
    version = cached_workflow()
    run_topic(version, "harbours")
    ProviderCall.objects.update(output=None, error_class="invalid_output")

    run_topic(version, "harbours")

    assert ProviderCall.objects.count() == 2


def test_another_version_of_the_workflow_does_not_share_the_cache():
    run_topic(cached_workflow(ttl=600), "harbours")
    newer = cached_workflow(ttl=601)  # a changed definition is a new version

    run_topic(newer, "harbours")

    assert ProviderCall.objects.count() == 2


def test_an_llm_router_reuses_its_routing_decision():
    router = {
        "id": "route", "type": "router", "routes": ["short", "long"], "cache": {"ttl_seconds": 600},
        "llm": {"model": "sim-fast", "prompt": "Pick a length for {{ input.topic }}.", "min_confidence": 0.0, "low_confidence_route": "short"},
    }  # fmt: skip
    nodes = [router, llm_node("short", depends_on=["route"]), llm_node("long", depends_on=["route"])]
    version = save_workflow(definition("routed", nodes))
    first = run_topic(version, "harbours")

    second = run_topic(version, "harbours")

    assert first.status == second.status == RunStatus.SUCCEEDED
    assert second.node_runs.get(node_id="route").output == first.node_runs.get(node_id="route").output
    assert not second.provider_calls.filter(node_run__node_id="route").exists()
