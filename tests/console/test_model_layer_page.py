"""The run page shows the budget, the model that answered and the models passed over."""

from __future__ import annotations

import uuid

import pytest

from apps.providers.breaker import circuit_breaker
from apps.runs.services import run_start
from tests.factories import definition, llm_node, save_workflow
from tests.runs.helpers import drain

pytestmark = pytest.mark.usefixtures("unconsumed_queue")


def test_budget_model_and_fallback_are_on_the_run_page(operator_client):
    primary = f"sim-primary-{uuid.uuid4().hex[:6]}"
    breaker = circuit_breaker("simulated", primary)
    for _ in range(6):
        breaker.before_call()
        breaker.after_call(ok=False, error_class="server_error")
    spec = definition("budgeted", [llm_node("answer", model=primary, fallbacks=["sim-fast"])], budget={"max_tokens": 5000, "max_cost": "0.50"})
    run = drain(run_start(workflow=save_workflow(spec).workflow, input={"topic": "fallbacks"}, options={"simulation": {"latency": "fixed:0"}}))

    page = operator_client.get(f"/runs/{run.pk}/").content.decode()
    detail = operator_client.get(f"/runs/{run.pk}/?node=answer").content.decode()

    assert 'id="run-budget"' in page
    assert "of 5,000 tokens" in page
    assert "sim-fast" in page
    assert ">fallback<" in page
    assert 'id="passed-over"' in detail
    assert primary in detail
    assert "open" in detail  # the reason the primary was passed over
