"""The run page shows the circuit breakers of the models its nodes call, with their transitions."""

from __future__ import annotations

from apps.providers.breaker import circuit_breaker
from tests.factories import definition, llm_node, save_workflow

from .helpers import start


def test_the_run_page_shows_an_open_breaker_of_its_model_and_not_of_others(operator_client):
    version = save_workflow(definition("brk", [llm_node("answer", model="sim-page-breaker")]))
    for model in ("sim-page-breaker", "sim-unrelated"):
        breaker = circuit_breaker("simulated", model)
        for _ in range(6):
            breaker.before_call()
            breaker.after_call(ok=False, error_class="server_error")
    run = start(version)

    page = operator_client.get(f"/runs/{run.pk}/").content.decode()

    assert "Circuit breakers" in page
    assert "sim-page-breaker" in page
    assert 'data-state="open"' in page
    assert "sim-unrelated" not in page
