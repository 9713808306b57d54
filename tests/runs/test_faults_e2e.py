"""Fault injection through a whole run, in-process: a run's simulation options reach the provider,
its failure is classified on the node, and the raw error body is stored with the call."""

from __future__ import annotations

import json
from typing import Any

import pytest

from apps.runs import services
from apps.runs.models import NodeStatus, ProviderCall, Run, RunStatus
from tests.factories import definition, llm_node, save_workflow
from tests.runs.helpers import drain

pytestmark = pytest.mark.django_db
SCHEMA = {"type": "object", "required": ["summary"], "properties": {"summary": {"type": "string"}}}


@pytest.fixture(autouse=True)
def _no_site_faults(settings) -> None:
    settings.DAGWRIGHT_SIMULATION = {"seed": 7, "latency": "fixed:0"}


def start(version, faults: dict[str, Any]) -> Run:
    options = {"simulation": {"latency": "fixed:0", "faults": faults}}
    return services.run_start(workflow=version.workflow, input={"topic": "harbours"}, options=options)


def test_a_permanent_error_fails_the_node_as_bad_request_and_keeps_the_error_body():
    run = drain(start(save_workflow(), {"permanent_error_rate": 1.0}), retries_due=False)

    node = run.node_runs.get()
    assert (node.status, node.error_class, node.attempt) == (NodeStatus.FAILED, "bad_request", 1)
    assert run.status == RunStatus.FAILED
    call = ProviderCall.objects.get(node_run=node)
    assert (call.error_class, call.attempt, call.tokens_in, call.cost) == ("bad_request", 1, 0, 0)
    body = json.loads(call.raw_response)
    assert body["error"]["type"] == "invalid_request_error"
    assert body["simulated"] == {"seed": 7, "attempt": 1, "fault": "bad_request", "status": 400}
    assert body["error"]["message"] in call.error
    assert node.error == call.error


def test_malformed_output_is_stored_verbatim_and_refused_as_invalid_output():
    run = drain(start(save_workflow(definition(nodes=[llm_node("answer", output_schema=SCHEMA)])), {"malformed_rate": 1.0}), retries_due=False)

    call = ProviderCall.objects.filter(run=run).first()
    assert call.error_class == "invalid_output"
    assert call.output is None
    raw = json.loads(call.raw_response)
    assert raw["simulated"]["fault"] == "malformed"
    assert "is not JSON" in call.error
    assert raw["choices"][0]["message"]["content"].startswith(("```json", "Sure!", "{"))
