"""The broker's traps: a restarted Redis without persistence loses its queue; Redis delivers a
message again when its task outlives the visibility timeout; a message published before its
transaction commits would reach a worker that cannot see the rows yet.

The Redis tests use a redis-server of their own (see conftest), on either backend pass.
"""

from __future__ import annotations

import re
import time

import pytest
from django.db import transaction
from django.utils import timezone

from apps.runs.models import NodeRun, NodeStatus, ProviderCall, Run, RunStatus
from apps.runs.services import run_start
from orchestrator_site.celery import probe as probe_task
from orchestrator_site.watchdog import PROBE_TASK
from tests.factories import definition, llm_node, save_workflow
from tests.reliability.conftest import wait_for_runs, wait_until
from tests.reliability.workflows import (
    assert_every_run_succeeded_once_per_node,
    own_model,
    save_five_node_workflow,
    save_held_workflow,
    start_held_run,
    start_runs_of,
)
from tests.runs.helpers import wait_for_run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.reliability]

RUNS = 50
# A worker that stops consuming after the reset (celery/celery#10205) stops itself within seconds
# and its supervisor starts another (orchestrator_site.watchdog).
WATCHDOG = {"DAGWRIGHT_WATCHDOG_SECONDS": 1, "DAGWRIGHT_WATCHDOG_TIMEOUT_SECONDS": 5, "DAGWRIGHT_WATCHDOG_GRACE_SECONDS": 2}
RUNS_WHILE_DOWN = 5
MAX_ATTEMPTS = 5


def test_every_run_finishes_when_redis_restarts_empty_in_the_middle(deployment, report):
    redis = deployment.start_redis(breaker_store=True)
    deployment.configure(DAGWRIGHT_SWEEP_SECONDS=0.5, DAGWRIGHT_REDISPATCH_SECONDS=2, DAGWRIGHT_LEASE_SECONDS=5, **WATCHDOG)
    deployment.supervise(deployment.start_worker(concurrency=4))
    deployment.start_beat()
    version = save_five_node_workflow("redis-restart", MAX_ATTEMPTS)

    started_at = time.monotonic()
    run_ids = []
    for _ in range(RUNS // 2):
        run_ids += start_runs_of(version, 1, latency_ms=100, start_index=len(run_ids))
        time.sleep(0.05)
    in_flight = Run.objects.filter(pk__in=run_ids, status=RunStatus.RUNNING).count()
    redis.kill()  # kill -9: every queued and unacknowledged message is gone
    down_at = time.monotonic()
    during_outage = []
    while len(during_outage) < RUNS_WHILE_DOWN and time.monotonic() - down_at < 1.5:  # clients keep starting runs
        during_outage += start_runs_of(version, 1, latency_ms=100, start_index=len(run_ids) + len(during_outage))
        time.sleep(0.1)
    time.sleep(max(0.0, 1.5 - (time.monotonic() - down_at)))
    redis.start()
    up_at = time.monotonic()
    run_ids += during_outage
    while len(run_ids) < RUNS:
        run_ids += start_runs_of(version, 1, latency_ms=100, start_index=len(run_ids))
        time.sleep(0.05)
    finished_at = wait_for_runs(run_ids, deployment, timeout=90)

    assert_every_run_succeeded_once_per_node(run_ids, MAX_ATTEMPTS)
    resent = sum(int(n) for w in deployment.workers for n in re.findall(r"redispatched=(\d+)", w.log.read_text()))
    assert resent > 0, "the sweeper sent nothing again: no message was lost, the test proved nothing"
    report(
        f"Redis killed with {in_flight} runs in flight, down {up_at - down_at:.1f} s, {len(during_outage)} runs started while it was down; "
        f"the sweeper sent {resent} queued nodes again; "
        f"all {len(run_ids)} runs succeeded {finished_at - up_at:.1f} s after the restart ({finished_at - started_at:.1f} s in all); "
        f"the consumer watchdog restarted {deployment.restarts} workers"
    )


def test_a_node_slower_than_the_visibility_timeout_is_executed_once(deployment, report):
    deployment.start_redis(breaker_store=False)
    held = deployment.serve_held_model()
    deployment.configure(CELERY_VISIBILITY_TIMEOUT=2)
    worker = deployment.start_worker(concurrency=2)

    run = start_held_run(save_held_workflow("slow"), "patience")
    call = held.wait_for_call("patience")  # the node runs until its call is released
    # Redis gives the unacknowledged message out again once the visibility timeout has passed,
    # while the node still runs; only then does its call come back
    wait_until(lambda: _deliveries(worker) >= 2, "Redis to deliver the message again", timeout=60)
    call.release()
    run = wait_for_run(run.pk, timeout=30)

    assert run.status == RunStatus.SUCCEEDED, run.error
    node = NodeRun.objects.get(run=run)
    assert node.attempt == 1
    assert ProviderCall.objects.filter(run=run).count() == 1
    assert len(held.calls) == 1  # the model was asked once
    assert list(run.events.filter(kind="node_started").values_list("attempt", flat=True)) == [1]
    assert run.events.filter(kind="node_succeeded").count() == 1
    deliveries = _deliveries(worker)
    report(f"visibility timeout 2 s, node held until its message came again: delivered {deliveries} times, executed once (1 provider call, attempt 1)")


def _deliveries(worker) -> int:
    return len(re.findall(r"Task runs\.execute_node\[[-0-9a-f]+\] received", worker.log.read_text()))


def test_no_message_is_published_before_its_transaction_commits(deployment):
    worker = deployment.start_worker(concurrency=1)  # no beat: only the run's own message can move it
    version = save_workflow(definition(f"rel-commit-{own_model('commit')[-6:]}", [llm_node("answer", model=own_model("commit"))]))

    with transaction.atomic():
        run = run_start(workflow=version.workflow, input={"topic": "patience"}, options={"simulation": {"latency": "fixed:0"}})
        # A probe sent now, on the same queue, reaches the idle worker after any message sent before
        # it (a Redis list and the filesystem transport's time-stamped files both hand messages out
        # in order): once the worker has received the probe, it would have received the run's too.
        probe = probe_task.apply_async(queue=deployment.queue)
        wait_until(lambda: f"Task {PROBE_TASK}[{probe.id}] received" in worker.log.read_text(), "the worker to receive the probe", timeout=20)
        node = NodeRun.objects.get(run=run)
        assert (node.status, node.attempt, node.started_at) == (NodeStatus.QUEUED, 0, None)
        assert _deliveries(worker) == 0
        committed_at = timezone.now()

    run = wait_for_run(run.pk, timeout=20)
    assert run.status == RunStatus.SUCCEEDED, run.error
    node = NodeRun.objects.get(run=run)
    assert node.attempt == 1
    assert node.started_at >= committed_at
