"""Recovery without a worker process: leases, the heartbeat, the sweeper, reuse of paid responses.

The reliability tests with real worker processes killed mid-run are in tests/reliability.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.runs import services
from apps.runs.executors import Outcome, execute
from apps.runs.leases import lease_kept
from apps.runs.models import NodeRun, NodeStatus, OutboxMessage, ProviderCall, RunStatus
from apps.runs.sweeper import SweepReport, sweep
from tests.factories import definition, llm_node, save_workflow, tool_node

FAST = {"simulation": {"latency": "fixed:0"}}
LEASE = timedelta(seconds=60)  # DAGWRIGHT_LEASE_SECONDS' default


def start(spec=None):
    version = save_workflow(spec or definition())
    return services.run_start(workflow=version.workflow, input={"topic": "recovery"}, options=FAST)


def later(seconds: float):
    return timezone.now() + timedelta(seconds=seconds)


@pytest.mark.django_db
def test_a_claim_takes_a_lease():
    node = start().node_runs.get()
    before = timezone.now()
    services.node_run_claim(node_run_id=node.pk)
    after = timezone.now()
    node.refresh_from_db()
    assert before + LEASE <= node.lease_expires_at <= after + LEASE  # the lease runs from the claim


@pytest.mark.django_db
@pytest.mark.usefixtures("unconsumed_queue")
def test_an_expired_lease_sends_the_node_again_and_spends_the_attempt():
    run = start()
    node = run.node_runs.get()
    services.node_run_claim(node_run_id=node.pk)  # ... and the worker dies here

    assert sweep(now=later(30)) == SweepReport()  # the lease still holds
    assert sweep(now=later(120)).leases_expired == 1

    node.refresh_from_db()
    assert node.status == NodeStatus.QUEUED
    assert node.error_class == "worker_lost"
    claim = services.node_run_claim(node_run_id=node.pk)
    assert claim.attempt == 2
    assert list(run.events.filter(kind="node_lease_expired").values_list("attempt", flat=True)) == [1]


@pytest.mark.django_db
@pytest.mark.usefixtures("unconsumed_queue")
def test_a_node_whose_workers_keep_dying_fails_when_its_attempts_are_spent():
    run = start(definition(nodes=[llm_node("answer", retry={"max_attempts": 2})]))
    node = run.node_runs.get()
    for minutes in (2, 4):
        services.node_run_claim(node_run_id=node.pk)
        sweep(now=later(60 * minutes))
    node.refresh_from_db()
    run.refresh_from_db()
    assert node.status == NodeStatus.FAILED
    assert node.attempt == 2
    assert run.status == RunStatus.FAILED
    assert "lease expired" in run.error


@pytest.mark.django_db
@pytest.mark.usefixtures("unconsumed_queue")
def test_a_worker_whose_lease_was_taken_over_cannot_write():
    node = start().node_runs.get()
    old = services.node_run_claim(node_run_id=node.pk)
    sweep(now=later(120))
    new = services.node_run_claim(node_run_id=node.pk)
    assert services.node_run_complete(claim=old, outcome=Outcome(ok=True, output="from the dead")) == []
    node.refresh_from_db()
    assert (node.status, node.attempt, node.output) == (NodeStatus.RUNNING, 2, None)  # the dead worker wrote nothing
    assert not node.run.events.filter(kind="node_succeeded").exists()
    services.node_run_complete(claim=new, outcome=Outcome(ok=True, output="from the living"))
    node.refresh_from_db()
    assert (node.status, node.attempt, node.output) == (NodeStatus.SUCCEEDED, 2, "from the living")
    assert list(node.run.events.filter(kind="node_succeeded").values_list("attempt", flat=True)) == [2]


@pytest.mark.django_db
@pytest.mark.usefixtures("unconsumed_queue")
def test_a_queued_node_whose_message_was_lost_is_sent_again_once_per_interval():
    node = start().node_runs.get()
    assert sweep(now=later(10)).redispatched == 0
    assert sweep(now=later(61)).redispatched == 1
    assert sweep(now=later(62)).redispatched == 0  # queued_at moved on: not sent again at once
    assert sweep(now=later(125)).redispatched == 1
    node.refresh_from_db()
    assert node.status == NodeStatus.QUEUED


@pytest.mark.django_db
@pytest.mark.usefixtures("unconsumed_queue")
def test_a_due_retry_is_queued_by_the_sweeper():
    node = start().node_runs.get()
    claim = services.node_run_claim(node_run_id=node.pk)
    before = timezone.now()
    services.node_run_complete(claim=claim, outcome=Outcome(ok=False, error="503", error_class="server_error", retryable=True, retry_after=600))
    after = timezone.now()
    node.refresh_from_db()
    assert node.status == NodeStatus.RETRY_WAIT
    # Retry-After honoured: 600 s from the failure, above the policy's backoff (at most 60 s)
    assert before + timedelta(seconds=600) <= node.next_attempt_at <= after + timedelta(seconds=600)
    assert services.node_run_claim(node_run_id=node.pk) is None  # not due yet: an early message does nothing
    assert sweep(now=later(300)).retries_due == 0
    assert sweep(now=later(601)).retries_due == 1
    node.refresh_from_db()
    assert node.status == NodeStatus.QUEUED


@pytest.mark.django_db
def test_a_deferred_attempt_is_not_spent():
    run = start(definition(nodes=[llm_node("answer", retry={"max_attempts": 1})]))
    node = run.node_runs.get()
    claim = services.node_run_claim(node_run_id=node.pk)
    wait = Outcome(ok=False, error="circuit open", error_class="circuit_open", deferred_until=later(-1))
    services.node_run_complete(claim=claim, outcome=wait)
    node.refresh_from_db()
    assert (node.status, node.attempt, node.deferrals, node.attempts_spent) == (NodeStatus.RETRY_WAIT, 1, 1, 0)
    claim = services.node_run_claim(node_run_id=node.pk)  # due: claimable straight from retry_wait
    assert claim.attempt == 2
    services.node_run_complete(claim=claim, outcome=execute(claim))
    node.refresh_from_db()
    assert node.status == NodeStatus.SUCCEEDED  # max_attempts 1, and the one real attempt succeeded


@pytest.mark.django_db
@pytest.mark.usefixtures("unconsumed_queue")
def test_a_valid_response_already_paid_for_is_reused_on_recovery():
    run = start()
    node = run.node_runs.get()
    claim = services.node_run_claim(node_run_id=node.pk)
    execute(claim)  # the provider answered and the call was stored ... then the worker died
    assert ProviderCall.objects.filter(run=run).count() == 1
    sweep(now=later(120))

    claim = services.node_run_claim(node_run_id=node.pk)
    services.node_run_complete(claim=claim, outcome=execute(claim))

    call = ProviderCall.objects.get(run=run)  # still one: nothing was paid twice
    node.refresh_from_db()
    run.refresh_from_db()
    assert node.status == NodeStatus.SUCCEEDED
    assert node.output == call.output
    assert run.cost == call.cost  # the money spent is on the bill once
    assert run.events.filter(kind="provider_response_reused").count() == 1


@pytest.mark.django_db
@pytest.mark.usefixtures("unconsumed_queue")
def test_the_outbox_tool_writes_its_message_once_however_often_the_node_runs():
    run = start(definition(nodes=[tool_node("notify", "outbox", {"topic": "tickets", "payload": {"about": "{{ input.topic }}"}})]))
    node = run.node_runs.get()
    first = services.node_run_claim(node_run_id=node.pk)
    first_outcome = execute(first)  # the message is written ... and the worker dies
    sweep(now=later(120))
    second = services.node_run_claim(node_run_id=node.pk)
    second_outcome = execute(second)
    services.node_run_complete(claim=second, outcome=second_outcome)

    message = OutboxMessage.objects.get()
    assert message.idempotency_key == f"{run.pk}:notify"
    assert message.payload == {"about": "recovery"}
    assert first_outcome.output == second_outcome.output == {"message_id": message.pk, "topic": "tickets"}


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("unconsumed_queue")  # the session's worker must not claim the node first
def test_the_heartbeat_keeps_the_lease_of_a_node_slower_than_the_lease(settings):
    settings.DAGWRIGHT_LEASE_SECONDS = 0.6
    node = start().node_runs.get()
    claim = services.node_run_claim(node_run_id=node.pk)
    first_lease = NodeRun.objects.get(pk=node.pk).lease_expires_at
    deadline = time.monotonic() + 30
    with lease_kept(claim.node_run_id, claim.attempt):
        # the node works on until the heartbeat has renewed its lease to past twice its length
        while NodeRun.objects.get(pk=node.pk).lease_expires_at < first_lease + timedelta(seconds=1.2):
            assert time.monotonic() < deadline, "the heartbeat did not renew the lease"
            time.sleep(0.05)
    node.refresh_from_db()
    assert (node.status, node.attempt) == (NodeStatus.RUNNING, claim.attempt)
    assert sweep(now=first_lease + timedelta(seconds=1)).leases_expired == 0  # past its first lease, still owned


@pytest.mark.django_db
@pytest.mark.usefixtures("unconsumed_queue")
def test_a_lease_renewed_after_the_sweeper_listed_it_stays_with_its_worker():
    from apps.runs.sweeper import _recover

    run = start()
    node = run.node_runs.get()
    services.node_run_claim(node_run_id=node.pk)
    # the sweeper listed the lease as expired at `now`; before it took the node, the late but
    # living worker's heartbeat renewed it
    now = later(120)
    NodeRun.objects.filter(pk=node.pk).update(lease_expires_at=later(180))

    assert _recover(node.pk, run.pk, 1, now) == 0
    node.refresh_from_db()
    assert (node.status, node.attempt) == (NodeStatus.RUNNING, 1)
    assert not run.events.filter(kind="node_lease_expired").exists()
