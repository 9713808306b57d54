"""The execution contract, driven in-process: compare-and-set transitions, one advance step,
events in the same transaction, failure handling. The worker process is tested in tests/integration."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.dispatch import receiver

from apps.engine.errors import InputError
from apps.runs import services, signals
from apps.runs.executors import Outcome
from apps.runs.models import AppendOnly, NodeRun, NodeStatus, ProviderCall, Run, RunEvent, RunStatus
from tests.factories import definition, fan_out_definition, llm_node, save_workflow, tool_node
from tests.runs.helpers import drain

pytestmark = pytest.mark.django_db
FAST = {"simulation": {"latency": "fixed:0"}}


def start(version, topic: str = "harbours", **kwargs) -> Run:
    return services.run_start(workflow=version.workflow, input={"topic": topic}, options=FAST, **kwargs)


def states(run: Run) -> dict[str, str]:
    return dict(run.node_runs.values_list("node_id", "status"))


def test_run_start_creates_node_rows_and_queues_only_the_roots(operator):
    version = save_workflow(fan_out_definition())
    run = start(version, started_by=operator)
    assert run.status == RunStatus.RUNNING
    assert run.started_by == operator
    assert states(run) == {"start": "queued", "branch_0": "pending", "branch_1": "pending", "branch_2": "pending", "join": "pending"}
    assert list(run.events.values_list("kind", "node_id")) == [("run_created", ""), ("run_started", ""), ("node_queued", "start")]


def test_invalid_input_is_rejected_before_anything_is_written():
    version = save_workflow()
    with pytest.raises(InputError) as caught:
        services.run_start(workflow=version.workflow, input={"topic": 42})
    assert caught.value.problems[0].pointer == "/topic"
    assert Run.objects.count() == NodeRun.objects.count() == RunEvent.objects.count() == 0


def test_the_same_idempotency_key_returns_the_same_run(operator):
    version = save_workflow()
    first = start(version, idempotency_key="order-17", started_by=operator)
    again = start(version, idempotency_key="order-17", started_by=operator)
    assert again.pk == first.pk
    assert Run.objects.count() == 1


def test_an_idempotency_key_reused_for_other_input_is_a_conflict(operator):
    version = save_workflow()
    start(version, idempotency_key="order-17", started_by=operator)
    with pytest.raises(services.IdempotencyConflict):
        start(version, topic="something else", idempotency_key="order-17", started_by=operator)


def test_a_fan_out_runs_to_completion_with_outputs_tokens_and_cost():
    version = save_workflow(fan_out_definition())
    run = drain(start(version))
    assert run.status == RunStatus.SUCCEEDED
    assert set(states(run).values()) == {"succeeded"}
    calls = ProviderCall.objects.filter(run=run)
    assert calls.count() == 4  # three branches and the join; start is a tool
    assert run.tokens_in == sum(c.tokens_in for c in calls)
    assert run.tokens_out == sum(c.tokens_out for c in calls)
    assert run.cost == sum((c.cost for c in calls), Decimal(0))
    assert run.cost > 0
    join = run.node_runs.get(node_id="join")
    branch_texts = [run.node_runs.get(node_id=f"branch_{i}").output for i in range(3)]
    assert join.input["prompt"] == " ".join(branch_texts)  # the join saw its upstream outputs


def test_a_node_is_claimed_once_and_its_input_is_stored_with_a_hash():
    version = save_workflow()
    run = start(version)
    node = run.node_runs.get()
    claim = services.node_run_claim(node_run_id=node.pk)
    assert claim is not None
    assert services.node_run_claim(node_run_id=node.pk) is None  # no longer queued: the second claim loses
    node.refresh_from_db()
    assert node.status == NodeStatus.RUNNING
    assert node.attempt == 1
    assert node.input["prompt"] == "Say something about harbours."
    assert len(node.input_hash) == 64


def test_a_stale_claim_cannot_write_its_outcome():
    version = save_workflow()
    run = start(version)
    node = run.node_runs.get()
    claim = services.node_run_claim(node_run_id=node.pk)
    NodeRun.objects.filter(pk=node.pk).update(attempt=2)  # another worker took the node over
    assert services.node_run_complete(claim=claim, outcome=Outcome(ok=True, output="late")) == []
    node.refresh_from_db()
    assert node.status == NodeStatus.RUNNING
    assert node.output is None


def test_the_first_failed_node_fails_the_run_and_cancels_what_has_not_started():
    spec = definition(nodes=[tool_node("count"), tool_node("merge", "json_merge", {"objects": "{{ input.topic }}"}, depends_on=["count"]),
                             llm_node("after", depends_on=["merge"])])  # fmt: skip
    run = drain(start(save_workflow(spec)))
    assert run.status == RunStatus.FAILED
    assert states(run) == {"count": "succeeded", "merge": "failed", "after": "cancelled"}
    merge = run.node_runs.get(node_id="merge")
    assert merge.error_class == "tool_argument_error"
    assert "json_merge" in run.error
    assert "merge" in run.error


def test_failure_cancels_queued_siblings():
    spec = definition(nodes=[tool_node("bad", "json_pick", {"value": {}, "paths": "not a list"}), llm_node("other")])
    run = start(save_workflow(spec))
    bad = run.node_runs.get(node_id="bad")
    services.node_run_execute(node_run_id=bad.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert states(run) == {"bad": "failed", "other": "cancelled"}
    other = run.node_runs.get(node_id="other")
    assert services.node_run_claim(node_run_id=other.pk) is None  # its message, arriving late, does nothing


def test_a_template_that_fails_at_run_time_fails_the_node():
    spec = definition(nodes=[llm_node("answer", "About {{ input.missing_field }}")])
    run = drain(start(save_workflow(spec)))
    node = run.node_runs.get()
    assert run.status == RunStatus.FAILED
    assert node.error_class == "template_error"
    assert "missing_field" in node.error


NO_WAIT = {"max_attempts": 3, "backoff_seconds": 0, "backoff_cap_seconds": 0}


def test_invalid_structured_output_is_retried_until_attempts_run_out_keeping_every_raw_response():
    impossible = {"type": "object", "required": ["code"], "properties": {"code": {"type": "string", "pattern": "^[0-9]{6}$"}}}
    run = drain(start(save_workflow(definition(nodes=[llm_node("answer", output_schema=impossible, retry=NO_WAIT)]))))
    calls = list(ProviderCall.objects.filter(run=run))
    node = run.node_runs.get()
    assert run.status == RunStatus.FAILED
    assert [c.attempt for c in calls] == [1, 2, 3]
    assert all(c.error_class == "invalid_output" and c.raw_response for c in calls)
    assert node.attempt == 3
    assert node.output is None
    assert run.tokens_out == sum(c.tokens_out for c in calls)  # failed attempts are paid for too
    assert list(run.events.filter(kind="node_retrying").values_list("attempt", flat=True)) == [1, 2]


def test_tool_nodes_receive_a_stable_idempotency_key():
    seen: list[str] = []
    from apps.engine.tools import TOOLS, tool

    @tool("record_key")
    def record_key(*, context, **_):
        seen.append(context.idempotency_key)
        return {"key": context.idempotency_key}

    try:
        run = drain(start(save_workflow(definition(nodes=[{"id": "rec", "type": "tool", "tool": "record_key"}]))))
    finally:
        TOOLS.pop("record_key")
    assert seen == [f"{run.pk}:rec"]


def test_node_signals_are_sent_inside_the_transition():
    received: list[tuple[str, str]] = []

    @receiver(signals.node_succeeded)
    def on_success(sender, run, node_run, **kwargs):
        # sent inside the transaction: the event row of this transition is already visible here
        assert RunEvent.objects.filter(run=run, node_id=node_run.node_id, kind="node_succeeded").exists()
        received.append(("succeeded", node_run.node_id))

    try:
        drain(start(save_workflow()))
    finally:
        signals.node_succeeded.disconnect(on_success)
    assert received == [("succeeded", "answer")]


def test_run_events_are_append_only():
    run = drain(start(save_workflow()))
    event = run.events.first()
    event.data = {"tampered": True}
    with pytest.raises(AppendOnly):
        event.save()
    with pytest.raises(AppendOnly):
        event.delete()
    with pytest.raises(AppendOnly):
        RunEvent.objects.filter(run=run).update(kind="x")


def test_a_run_pins_its_version():
    version = save_workflow()
    run = start(version)
    save_workflow(definition(nodes=[llm_node("answer", "A different prompt about {{ input.topic }}")]))
    drain(run)
    assert run.version == version
    assert run.node_runs.get().input["prompt"] == "Say something about harbours."
