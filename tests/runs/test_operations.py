"""Operations on runs, driven in-process: cancel, retry a failed run in place, re-run from a node
as a new run. Nodes execute here with ``drain``; the messages a service sends go to a queue no
worker consumes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import pytest
from django.dispatch import receiver
from django.utils import timezone

from apps.engine.tools import TOOLS, tool
from apps.runs import executors, operations, services, signals
from apps.runs.models import NodeRun, NodeStatus, ProviderCall, Run, RunEvent, RunStatus
from apps.runs.sweeper import sweep
from tests.factories import definition, fan_out_definition, llm_node, save_workflow, tool_node
from tests.runs.test_services import FAST, drain, start, states

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("unconsumed_queue")]
NO_WAIT = {"backoff_seconds": 0, "backoff_cap_seconds": 0}


def rows() -> tuple[int, int, int]:
    return Run.objects.count(), NodeRun.objects.count(), RunEvent.objects.count()


def calls_by_node(run: Run) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node_id in ProviderCall.objects.filter(run=run).values_list("node_run__node_id", flat=True):
        counts[node_id] = counts.get(node_id, 0) + 1
    return counts


@pytest.fixture
def switch() -> Iterator[dict[str, bool]]:
    """A tool that fails while ``switch["broken"]`` is set, as a flaky dependency would."""
    state = {"broken": True}

    @tool("flaky")
    def flaky(*, text, context):
        if state["broken"]:
            raise RuntimeError("the dependency is down")
        return {"text": text}

    yield state
    TOOLS.pop("flaky")


def diamond():
    """draft (llm) -> check (flaky tool) and aside (llm) -> final (llm, after check)."""
    return save_workflow(
        definition(
            "diamond",
            [
                llm_node("draft"),
                tool_node("check", "flaky", {"text": "{{ nodes.draft }}"}, depends_on=["draft"]),
                llm_node("aside", "Aside on {{ input.topic }}.", depends_on=["draft"]),
                llm_node("final", "Final: {{ nodes.check.text }}", depends_on=["check"]),
            ],
        )
    )


# --- cancel ---------------------------------------------------------------------------------------


def test_cancelling_a_run_cancels_its_idle_nodes_and_records_who(operator):
    run = start(save_workflow(fan_out_definition()))

    operations.run_cancel(run=run, by=operator)

    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    assert run.finished_at is not None
    assert run.error == "cancelled by otto-operator"
    assert set(states(run).values()) == {"cancelled"}
    kinds = list(run.events.values_list("kind", flat=True))
    assert kinds[-7:] == ["run_cancelled", *["node_cancelled"] * 5, "run_finished"]
    assert run.events.get(kind="run_cancelled").data == {"by": "otto-operator"}
    assert run.events.get(kind="run_finished").data == {"status": "cancelled", "error": "cancelled by otto-operator"}


def test_after_a_cancel_nothing_further_executes(operator):
    spec = definition(nodes=[llm_node("first"), llm_node("second", "More on {{ nodes.first }}", depends_on=["first"])])
    run = start(save_workflow(spec))
    first = run.node_runs.get(node_id="first")
    claim = services.node_run_claim(node_run_id=first.pk)  # a worker is executing "first"

    operations.run_cancel(run=run, by=operator)
    # the abandoned node finishes: its own result is recorded, and nothing advances
    assert services.node_run_complete(claim=claim, outcome=executors.execute(claim)) == []
    drain(run)

    assert run.status == RunStatus.CANCELLED
    assert states(run) == {"first": "succeeded", "second": "cancelled"}
    assert calls_by_node(run) == {"first": 1}
    assert not run.events.filter(kind="node_queued", node_id="second").exists()


def test_a_queued_node_of_a_cancelled_run_is_never_claimed(operator):
    run = start(save_workflow())
    node = run.node_runs.get()

    operations.run_cancel(run=run, by=operator)

    assert services.node_run_claim(node_run_id=node.pk) is None  # its message, arriving late, does nothing
    assert ProviderCall.objects.count() == 0


def test_a_node_waiting_for_its_retry_is_cancelled_and_the_sweeper_leaves_it(operator):
    impossible = {"type": "object", "required": ["code"], "properties": {"code": {"type": "string", "pattern": "^[0-9]{6}$"}}}
    run = start(save_workflow(definition(nodes=[llm_node("answer", output_schema=impossible, retry={"backoff_seconds": 600})])))
    services.node_run_execute(node_run_id=run.node_runs.get().pk)
    assert states(run) == {"answer": "retry_wait"}

    operations.run_cancel(run=run, by=operator)

    node = run.node_runs.get()
    assert (node.status, node.next_attempt_at) == (NodeStatus.CANCELLED, None)
    assert sweep().retries_due == 0


def test_a_worker_lost_on_a_cancelled_run_does_not_bring_it_back(operator):
    run = start(save_workflow())
    node = run.node_runs.get()
    services.node_run_claim(node_run_id=node.pk)
    operations.run_cancel(run=run, by=operator)
    NodeRun.objects.filter(pk=node.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))  # the worker died

    sweep()
    drain(run)

    assert run.status == RunStatus.CANCELLED
    assert states(run) == {"answer": "cancelled"}  # sent again by the sweeper, refused by the claim
    assert ProviderCall.objects.count() == 0


@pytest.mark.parametrize("status", [RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED])
def test_a_finished_run_cannot_be_cancelled_and_nothing_is_written(operator, status):
    run = start(save_workflow())
    Run.objects.filter(pk=run.pk).update(status=status)
    before = rows()

    with pytest.raises(operations.RunStateConflict, match="only an active run can be cancelled"):
        operations.run_cancel(run=run, by=operator)

    assert rows() == before
    assert Run.objects.get(pk=run.pk).status == status


def test_a_cancel_that_fails_half_way_writes_nothing(operator):
    run = start(save_workflow(fan_out_definition()))
    before = rows()

    @receiver(signals.run_finished)
    def explode(sender, **kwargs):
        raise RuntimeError("the event log is down")

    try:
        with pytest.raises(RuntimeError):
            operations.run_cancel(run=run, by=operator)
    finally:
        signals.run_finished.disconnect(explode)

    assert rows() == before
    assert Run.objects.get(pk=run.pk).status == RunStatus.RUNNING
    assert states(run)["start"] == "queued"


# --- retry a failed run ------------------------------------------------------------------------------


def test_retry_resumes_from_the_failed_node_and_reuses_what_succeeded(operator, switch):
    run = drain(start(diamond()))
    assert run.status == RunStatus.FAILED
    assert states(run) == {"draft": "succeeded", "check": "failed", "aside": "cancelled", "final": "cancelled"}
    draft_before = run.node_runs.values("output", "attempt", "finished_at").get(node_id="draft")
    assert calls_by_node(run) == {"draft": 1}

    switch["broken"] = False
    operations.run_retry_failed(run=run, by=operator)
    run.refresh_from_db()
    assert (run.status, run.error, run.finished_at) == (RunStatus.RUNNING, "", None)
    assert states(run) == {"draft": "succeeded", "check": "queued", "aside": "queued", "final": "pending"}
    drain(run)

    assert run.status == RunStatus.SUCCEEDED
    assert set(states(run).values()) == {"succeeded"}
    assert calls_by_node(run) == {"draft": 1, "aside": 1, "final": 1}  # draft was not paid for again
    assert run.node_runs.values("output", "attempt", "finished_at").get(node_id="draft") == draft_before
    check = run.node_runs.get(node_id="check")
    assert (check.attempt, check.attempt_base, check.attempts_spent) == (2, 1, 1)  # the fencing token only grows
    assert run.events.get(kind="run_retried").data == {"by": "otto-operator", "nodes": ["check", "aside", "final"]}
    assert run.cost == sum((c.cost for c in ProviderCall.objects.filter(run=run)), Decimal(0))


def test_a_retried_node_gets_its_max_attempts_afresh_and_attempts_keep_growing(operator):
    impossible = {"type": "object", "required": ["code"], "properties": {"code": {"type": "string", "pattern": "^[0-9]{6}$"}}}
    spec = definition(nodes=[llm_node("answer", output_schema=impossible, retry={"max_attempts": 2, **NO_WAIT})])
    run = drain(start(save_workflow(spec)))
    assert run.status == RunStatus.FAILED

    operations.run_retry_failed(run=run, by=operator)
    drain(run)

    node = run.node_runs.get()
    assert run.status == RunStatus.FAILED  # the model is still wrong: two more attempts, then it fails again
    assert list(ProviderCall.objects.filter(run=run).values_list("attempt", flat=True)) == [1, 2, 3, 4]
    assert (node.attempt, node.attempt_base, node.attempts_spent) == (4, 2, 2)
    assert list(run.events.filter(kind="node_retrying").values_list("attempt", flat=True)) == [1, 3]


@pytest.mark.parametrize("status", [RunStatus.RUNNING, RunStatus.SUCCEEDED, RunStatus.CANCELLED, RunStatus.BUDGET_EXCEEDED])
def test_only_a_failed_run_can_be_retried(operator, status):
    run = start(save_workflow())
    Run.objects.filter(pk=run.pk).update(status=status)
    before = rows()

    with pytest.raises(operations.RunStateConflict, match="only a failed run can be retried"):
        operations.run_retry_failed(run=run, by=operator)

    assert rows() == before


def test_a_retry_that_fails_half_way_writes_nothing(operator, switch):
    run = drain(start(diamond()))
    before, node_states = rows(), states(run)

    @receiver(signals.run_retried)
    def explode(sender, **kwargs):
        raise RuntimeError("the event log is down")

    try:
        with pytest.raises(RuntimeError):
            operations.run_retry_failed(run=run, by=operator)
    finally:
        signals.run_retried.disconnect(explode)

    assert rows() == before
    assert states(run) == node_states
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.node_runs.get(node_id="check").attempt_base == 0


# --- re-run from a node --------------------------------------------------------------------------------


@pytest.fixture
def fan_run() -> Run:
    """start (tool) -> branch_0..2 (llm) -> join (llm), run to success."""
    run = drain(start(save_workflow(fan_out_definition())))
    assert run.status == RunStatus.SUCCEEDED
    return run


def test_the_preview_lists_the_node_and_its_descendants_with_an_estimated_cost(fan_run):
    before = rows()

    rerun = operations.run_rerun_preview(run=fan_run, node_id="branch_1")

    assert [n.node_id for n in rerun.execute] == ["branch_1", "join"]
    assert rerun.reuse == ("start", "branch_0", "branch_2")
    for estimate in rerun.execute:
        recorded = fan_run.node_runs.get(node_id=estimate.node_id)
        assert estimate.basis == "recorded"
        assert (estimate.tokens_in, estimate.tokens_out) == (recorded.tokens_in, recorded.tokens_out)
        assert estimate.cost == recorded.cost > 0  # the same tokens at the same prices
    assert rerun.estimated_cost == sum((n.cost for n in rerun.execute), Decimal(0)) > 0
    assert rows() == before  # a preview writes nothing


def test_the_preview_from_a_root_executes_everything_and_tools_cost_nothing(fan_run):
    rerun = operations.run_rerun_preview(run=fan_run, node_id="start")

    assert [n.node_id for n in rerun.execute] == ["start", "branch_0", "branch_1", "branch_2", "join"]
    assert rerun.reuse == ()
    assert (rerun.execute[0].basis, rerun.execute[0].cost) == ("tool", Decimal(0))


def test_nodes_that_never_ran_are_estimated_from_max_tokens(switch):
    run = drain(start(diamond()))  # check failed: final never ran, aside was cancelled

    rerun = operations.run_rerun_preview(run=run, node_id="check")

    assert [n.node_id for n in rerun.execute] == ["check", "aside", "final"]  # aside had no output to reuse
    assert rerun.reuse == ("draft",)
    final = next(n for n in rerun.execute if n.node_id == "final")
    assert (final.basis, final.tokens_out) == ("max_tokens", 512)
    assert final.tokens_in > 0
    assert final.cost > 0


def test_an_unknown_node_is_refused(fan_run):
    with pytest.raises(operations.UnknownNode, match="no node 'nowhere'"):
        operations.run_rerun_preview(run=fan_run, node_id="nowhere")


def test_a_rerun_is_a_new_run_that_pays_nothing_for_reused_nodes_and_finishes(fan_run, operator):
    new = operations.run_rerun_from(run=fan_run, node_id="branch_1", by=operator)

    assert new.pk != fan_run.pk
    assert (new.version_id, new.input, new.options, new.started_by) == (fan_run.version_id, fan_run.input, FAST, operator)
    assert (new.rerun_of, new.rerun_from_node) == (fan_run, "branch_1")
    assert states(new) == {"start": "succeeded", "branch_0": "succeeded", "branch_1": "queued", "branch_2": "succeeded", "join": "pending"}
    for node_id in ("start", "branch_0", "branch_2"):
        copied, source = new.node_runs.get(node_id=node_id), fan_run.node_runs.get(node_id=node_id)
        assert (copied.output, copied.input, copied.input_hash, copied.model) == (source.output, source.input, source.input_hash, source.model)
        assert (copied.tokens_in, copied.tokens_out, copied.cost, copied.attempt, copied.reused) == (0, 0, 0, 0, True)

    drain(new)

    assert new.status == RunStatus.SUCCEEDED
    assert calls_by_node(new) == {"branch_1": 1, "join": 1}
    assert new.cost == sum((c.cost for c in ProviderCall.objects.filter(run=new)), Decimal(0)) > 0
    assert new.cost < fan_run.cost
    join = new.node_runs.get(node_id="join")
    assert fan_run.node_runs.get(node_id="branch_0").output in join.input["prompt"]  # reused outputs feed the join
    assert calls_by_node(fan_run) == {"branch_0": 1, "branch_1": 1, "branch_2": 1, "join": 1}  # the source is untouched
    event = new.events.get(kind="run_rerun")
    assert event.data == {"by": "otto-operator", "source": str(fan_run.pk), "node": "branch_1", "reused": ["start", "branch_0", "branch_2"]}


def test_a_rerun_of_a_failed_run_from_its_failed_node_finishes(operator, switch):
    run = drain(start(diamond()))
    switch["broken"] = False

    new = drain(operations.run_rerun_from(run=run, node_id="check", by=operator))

    assert new.status == RunStatus.SUCCEEDED
    assert calls_by_node(new) == {"aside": 1, "final": 1}
    assert run.status == RunStatus.FAILED  # the source stays as it was


def test_a_rerun_from_an_unknown_node_writes_nothing(fan_run, operator):
    before = rows()
    with pytest.raises(operations.UnknownNode):
        operations.run_rerun_from(run=fan_run, node_id="nowhere", by=operator)
    assert rows() == before


def test_a_rerun_that_fails_half_way_writes_nothing(fan_run, operator):
    before = rows()

    @receiver(signals.run_rerun_created)
    def explode(sender, **kwargs):
        raise RuntimeError("the event log is down")

    try:
        with pytest.raises(RuntimeError):
            operations.run_rerun_from(run=fan_run, node_id="join", by=operator)
    finally:
        signals.run_rerun_created.disconnect(explode)

    assert rows() == before


# --- races --------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_cancel_racing_with_claims_cancels_exactly_the_nodes_not_taken(operator):
    from tests.runs.test_concurrency import race

    run = start(save_workflow(fan_out_definition(width=6)))
    first = services.node_run_claim(node_run_id=run.node_runs.get(node_id="start").pk)
    assert len(services.node_run_complete(claim=first, outcome=executors.execute(first))) == 6  # the six branches are queued
    branches = list(run.node_runs.filter(node_id__startswith="branch_").values_list("pk", flat=True))

    def act(i: int):
        if i == len(branches):
            return operations.run_cancel(run=Run.objects.get(pk=run.pk), by=operator)
        return services.node_run_claim(node_run_id=branches[i])

    *claims, _ = race(len(branches) + 1, act)
    for claim in filter(None, claims):  # the claims that won finish; they advance nothing
        assert services.node_run_complete(claim=claim, outcome=executors.execute(claim)) == []

    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    won = {c.node.id for c in claims if c is not None}
    cancelled = set(run.events.filter(kind="node_cancelled").values_list("node_id", flat=True))
    assert states(run) == {"start": "succeeded", "join": "cancelled"} | {f"branch_{i}": "succeeded" if f"branch_{i}" in won else "cancelled" for i in range(6)}
    assert cancelled == {n for n, s in states(run).items() if s == "cancelled"}  # the event log says exactly what happened
