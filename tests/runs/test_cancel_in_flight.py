"""A cancelled run's in-flight simulated call stops at its next check and frees its slot (issue 11, point 3)."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection

from apps.runs import operations, services
from apps.runs.models import NodeRun, NodeStatus, ProviderCall
from tests.factories import definition, llm_node, save_workflow

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("unconsumed_queue")]
HANG_GUARD = 30  # seconds: only so that a broken cancel fails the test instead of hanging it


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + HANG_GUARD
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.02)


def test_cancelling_a_run_stops_its_simulated_call_mid_wait(operator):
    version = save_workflow(definition(nodes=[llm_node("slow", prompt="Write about {{ input.topic }}")]))
    run = services.run_start(workflow=version.workflow, input={"topic": "tides"}, options={"simulation": {"latency": "fixed:60000"}})
    node = run.node_runs.get(node_id="slow")
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            services.node_run_execute(node_run_id=node.pk)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    slot = threading.Thread(target=worker)
    slot.start()
    # claimed: the call is waiting, or about to (then its first check finds the run cancelled)
    wait_until(lambda: NodeRun.objects.filter(pk=node.pk, status=NodeStatus.RUNNING).exists(), "the claim")
    operations.run_cancel(run=run, by=operator)
    slot.join(HANG_GUARD)

    assert not slot.is_alive(), "the worker slot is still held by the simulated call"
    assert not errors, errors
    call = ProviderCall.objects.get(node_run=node)
    assert call.error_class == "cancelled"
    node.refresh_from_db()
    # An attempt in flight when its run ends keeps its own outcome (as a call that returned would):
    # here a permanent failure, classified as given up, not as the provider's fault.
    assert (node.status, node.error_class) == (NodeStatus.FAILED, "cancelled")
