"""A template resource attack fails its node, with the limit named, and leaves the worker's memory
where it was (issue 11, point 3); the same worker then serves the next run."""

from __future__ import annotations

import tracemalloc

import pytest

from apps.runs import services
from apps.runs.models import NodeStatus, RunStatus
from tests.factories import definition, llm_node, save_workflow
from tests.runs.helpers import drain

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("unconsumed_queue")]
PEAK_BYTES = 20_000_000
FAST = {"simulation": {"latency": "fixed:0"}}
ATTACKS = [
    pytest.param("{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}", "MAX_LOOP_ITERATIONS", id="loops"),
    pytest.param(
        "{% set ns = namespace(s='a') %}{% for _ in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}", "MAX_VALUE_SIZE", id="concatenation"
    ),
    pytest.param("{{ 'a'.ljust(10**9) }}", "MAX_VALUE_SIZE", id="padding"),
    pytest.param("{{ lipsum(100000, max=1000) }}", "MAX_LIPSUM_WORDS", id="lipsum"),
]


@pytest.mark.parametrize(("prompt", "limit"), ATTACKS)
def test_a_template_attack_fails_its_node_for_good_and_the_next_run_is_served(prompt: str, limit: str) -> None:
    version = save_workflow(definition(nodes=[llm_node("attack", prompt=prompt)]))
    run = services.run_start(workflow=version.workflow, input={"topic": "tides"}, options=FAST)

    tracemalloc.start()
    try:
        run = drain(run)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    attack = run.node_runs.get(node_id="attack")
    assert (run.status, attack.status, attack.error_class) == (RunStatus.FAILED, NodeStatus.FAILED, "template_error")
    assert limit in attack.error
    assert attack.attempt == 1  # refused for good: a template does not get better by trying again
    assert peak < PEAK_BYTES
    honest = save_workflow(definition(name="honest"))
    assert drain(services.run_start(workflow=honest.workflow, input={"topic": "tides"}, options=FAST)).status == RunStatus.SUCCEEDED
