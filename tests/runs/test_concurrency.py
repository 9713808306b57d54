"""Races on the real database: many claimers on one node, many completions into one join."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from django.db import connection

from apps.runs import services
from apps.runs.executors import Outcome
from apps.runs.models import NodeRun, NodeStatus, RunEvent
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
