"""Races on the real database: many claimers on one node, many completions into one join."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from apps.runs import services
from apps.runs.executors import Outcome
from apps.runs.models import NodeRun, NodeStatus, RunEvent
from tests.conftest import require_database
from tests.factories import fan_out_definition, save_workflow

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("unconsumed_queue")]


def race(count: int, action: Callable[[int], object]) -> list[object]:
    """Run ``action(i)`` in ``count`` threads released at the same instant."""
    barrier = threading.Barrier(count)
    results: list[object] = [None] * count
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            barrier.wait()
            results[i] = action(i)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


def test_ten_workers_claiming_one_node_yield_exactly_one_claim():
    version = save_workflow(fan_out_definition())
    run = services.run_start(workflow=version.workflow, input={"topic": "x"})
    start = run.node_runs.get(node_id="start")

    claims = race(10, lambda i: services.node_run_claim(node_run_id=start.pk))

    assert sum(c is not None for c in claims) == 1
    assert RunEvent.objects.filter(run=run, kind="node_started").count() == 1
    start.refresh_from_db()
    assert start.attempt == 1


def test_parallel_branches_finishing_together_queue_the_join_once():
    version = save_workflow(fan_out_definition(width=8))
    run = services.run_start(workflow=version.workflow, input={"topic": "x"})
    start = run.node_runs.get(node_id="start")
    claim = services.node_run_claim(node_run_id=start.pk)
    services.node_run_complete(claim=claim, outcome=Outcome(ok=True, output={"words": 1}))
    branches = list(run.node_runs.filter(node_id__startswith="branch_").order_by("node_id"))
    claims = [services.node_run_claim(node_run_id=b.pk) for b in branches]

    queued = race(len(claims), lambda i: services.node_run_complete(claim=claims[i], outcome=Outcome(ok=True, output=f"b{i}")))

    join = run.node_runs.get(node_id="join")
    assert [q for q in queued if q] == [[join.pk]]
    assert join.status == NodeStatus.QUEUED
    assert RunEvent.objects.filter(run=run, node_id="join", kind="node_queued").count() == 1
    assert NodeRun.objects.filter(run=run, status=NodeStatus.SUCCEEDED).count() == 9


def test_a_claim_read_before_another_worker_retried_the_node_claims_nothing():
    """The claim's compare-and-set is on (status, attempt), not status alone: a worker that read
    the node in retry_wait at attempt 1 must not claim it after another worker claimed attempt 2,
    failed and put it back in retry_wait (the ABA case), or two attempts would share a number."""
    require_database("postgresql", "the interleaving is made with a row lock held across threads")
    version = save_workflow()
    run = services.run_start(workflow=version.workflow, input={"topic": "x"})
    node = run.node_runs.get()
    claim = services.node_run_claim(node_run_id=node.pk)
    services.node_run_complete(claim=claim, outcome=Outcome(ok=False, error="503", error_class="server_error", retryable=True))
    NodeRun.objects.filter(pk=node.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))  # the retry is due
    retried, commit, late = threading.Event(), threading.Event(), []

    def other_worker() -> None:  # claims attempt 2 and fails it again, its row lock held until told to commit
        try:
            with transaction.atomic():
                again = services.node_run_claim(node_run_id=node.pk)
                services.node_run_complete(claim=again, outcome=Outcome(ok=False, error="503", error_class="server_error", retryable=True))
                retried.set()
                assert commit.wait(30)
        finally:
            connection.close()

    def late_worker() -> None:  # read the node as it was (retry_wait, attempt 1), then waits on the lock
        try:
            late.append(services.node_run_claim(node_run_id=node.pk))
        finally:
            connection.close()

    threads = [threading.Thread(target=other_worker)]
    threads[0].start()
    assert retried.wait(30)
    threads.append(threading.Thread(target=late_worker))
    threads[1].start()
    wait_until_a_backend_waits_for_a_lock()
    commit.set()
    for t in threads:
        t.join(30)
    assert late == [None]
    node.refresh_from_db()
    assert (node.status, node.attempt) == (NodeStatus.RETRY_WAIT, 2)
    assert list(run.events.filter(kind="node_started").values_list("attempt", flat=True).order_by("attempt")) == [1, 2]


def wait_until_a_backend_waits_for_a_lock(timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")
            if cursor.fetchone()[0]:
                return
            time.sleep(0.01)
    raise AssertionError(f"no backend waited for a lock within {timeout} s")
