"""Workers die at random moments, SIGKILLed: a pool child in the middle of a node, or the main
process with everything it runs. Every run still finishes, no node succeeds twice, no call is
paid for twice and the outbox side effect of every run is written exactly once. A worker that
only stalled (SIGSTOP) past its lease finds, when it resumes, that it can no longer write.

The moments and the kinds of kill come from a seeded random generator (``DAGWRIGHT_CHAOS_SEED``
picks another seed): the same seed replays the same sequence. Each kill lands on a node known to
be running: a run on a held model (tests.providers.held) is in the middle of its call, in the
process the kill is aimed at, until that process is dead; the other runs' nodes fall where they may.
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import time
from collections import Counter

import pytest
from django.utils import timezone

from apps.runs.models import ACTIVE_RUN_STATUSES, NodeRun, NodeStatus, ProviderCall, Run, RunEvent, RunStatus
from tests.providers.held import Call
from tests.reliability.conftest import Deployment, wait_for_runs, wait_until
from tests.reliability.workflows import (
    assert_each_struck_node_recovered_once,
    assert_every_run_succeeded_once_per_node,
    save_five_node_workflow,
    save_held_workflow,
    start_held_run,
    start_runs_of,
)
from tests.runs.helpers import wait_for_run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.reliability]

SEED = int(os.environ.get("DAGWRIGHT_CHAOS_SEED", "20260501"))
RUNS = 50
MAX_ATTEMPTS = 10  # generous: a node may be hit by several kills in a row
KILLS = 10
LATENCY_MS = 150
WORKERS, CONCURRENCY = 2, 2
IN_FLIGHT = 8  # runs started ahead: the workers stay busy, and the queue short enough for each target to come through
TARGET_SECONDS = 60  # for a target's call to reach the held model, behind the other runs' nodes


def strike(rng: random.Random, deployment: Deployment, call: Call) -> str:
    """Kill the pool child in the middle of ``call`` (its main process replaces it) or that child's
    whole worker (replaced by a new worker), chosen by ``rng``."""
    worker, child = wait_until(lambda: deployment.holder_of(call), "the process making the held call")
    if rng.random() < 0.6:
        os.kill(child, signal.SIGKILL)
        return "child"
    worker.kill_main(then_children_after=rng.uniform(0.0, 0.3))
    deployment.start_worker(concurrency=CONCURRENCY)
    return "main"


def running_with_its_lease(run_id) -> bool:
    """The run's node is running its first attempt, and the lease of the worker that claimed it holds."""
    return NodeRun.objects.filter(run_id=run_id, status=NodeStatus.RUNNING, attempt=1, lease_expires_at__gt=timezone.now()).exists()


def test_every_run_finishes_once_whichever_worker_is_killed_when(deployment, report):
    held = deployment.serve_held_model()
    deployment.configure(DAGWRIGHT_LEASE_SECONDS=2, DAGWRIGHT_SWEEP_SECONDS=0.5, DAGWRIGHT_REDISPATCH_SECONDS=3)
    for _ in range(WORKERS):
        deployment.start_worker(concurrency=CONCURRENCY)
    deployment.start_beat()
    version, targets = save_five_node_workflow("kills", MAX_ATTEMPTS), save_held_workflow("kills", MAX_ATTEMPTS)
    rng = random.Random(SEED)

    started_at = time.monotonic()
    run_ids: list = []
    struck: list = []  # the runs on the held model, one per kill
    kills: list[tuple[str, object]] = []
    target, target_since = None, 0.0
    next_kill = started_at + rng.uniform(0.5, 1.5)
    while len(run_ids) < RUNS or len(kills) < KILLS:
        if len(run_ids) < RUNS and Run.objects.filter(pk__in=run_ids, status__in=ACTIVE_RUN_STATUSES).count() < IN_FLIGHT:
            run_ids += start_runs_of(version, 1, LATENCY_MS, start_index=len(run_ids))
        if len(kills) < KILLS and target is None:
            target, target_since = start_held_run(targets, f"target-{len(struck):02d}."), time.monotonic()
            struck.append(target.pk)
        if target is not None and time.monotonic() >= next_kill:
            call = held.held_call(f"target-{len(struck) - 1:02d}.")
            if call is not None and running_with_its_lease(target.pk):
                kills.append((strike(rng, deployment, call), timezone.now()))
                call.release()  # to a dead process: its answer goes nowhere
                target, next_kill = None, time.monotonic() + rng.uniform(0.3, 1.5)
            elif time.monotonic() - target_since > TARGET_SECONDS:
                raise AssertionError(f"run {target.pk}: its first attempt was never seen running under its lease\n{deployment.logs()}")
        time.sleep(0.1)
    finished_at = wait_for_runs(run_ids + struck, deployment, timeout=120)

    assert_every_run_succeeded_once_per_node(run_ids, MAX_ATTEMPTS)
    assert_each_struck_node_recovered_once(struck, MAX_ATTEMPTS)
    everything = run_ids + struck
    paid = Counter(ProviderCall.objects.filter(run_id__in=everything, output__isnull=False).values_list("node_run_id", flat=True))
    twice = {node_run: n for node_run, n in paid.items() if n > 1}
    assert not twice, f"nodes paid for more than once: {twice}"
    recovered = list(RunEvent.objects.filter(run_id__in=everything, kind="node_lease_expired").values_list("run_id", "node_id", "created_at"))
    assert len(recovered) >= len(kills) == KILLS  # each kill cost at least its target its worker
    sweeps, dropped = deployment.beat.log.read_text().count("Sending due task sweep"), deployment.worker_log_count("Discarding revoked task: runs.sweep")
    assert dropped == 0, f"{dropped} of {sweeps} sweeps expired waiting behind the nodes: recovery starves under load"
    recovery = _recovery_seconds(everything, recovered, [at for _, at in kills])
    attempts = sorted(NodeRun.objects.filter(run_id__in=everything).values_list("attempt", flat=True))
    report(
        f"seed {SEED}: {len(kills)} kills ({sum(k == 'child' for k, _ in kills)} pool children, {sum(k == 'main' for k, _ in kills)} main processes), "
        f"{len(recovered)} nodes recovered from an expired lease ({len(recovered) - len(kills)} besides the targets), "
        f"{sum(a > 1 for a in attempts)} nodes needed more than one attempt (max {attempts[-1]}); "
        f"kill to recovered node's success: median {statistics.median(recovery):.1f} s, max {max(recovery):.1f} s; "
        f"no node paid for twice; {sweeps} sweeps; {RUNS} runs and {len(struck)} targets in {finished_at - started_at:.1f} s"
    )


def _recovery_seconds(run_ids: list, recovered: list, kill_times: list) -> list[float]:
    """For each node recovered from an expired lease: from the kill that cost it its worker (the
    last kill before the sweeper noticed) to the node's success."""
    succeeded = {(r, n): at for r, n, at in RunEvent.objects.filter(run_id__in=run_ids, kind="node_succeeded").values_list("run_id", "node_id", "created_at")}
    seconds = []
    for run_id, node_id, noticed_at in recovered:
        kill = max((at for at in kill_times if at <= noticed_at), default=None)
        if kill is not None:
            seconds.append((succeeded[(run_id, node_id)] - kill).total_seconds())
    return seconds or [0.0]


def test_a_worker_paused_past_its_lease_cannot_write_when_it_resumes(deployment, report):
    held = deployment.serve_held_model()
    deployment.configure(DAGWRIGHT_LEASE_SECONDS=2, DAGWRIGHT_SWEEP_SECONDS=0.5)
    paused = deployment.start_worker(concurrency=1)
    deployment.start_beat()
    run = start_held_run(save_held_workflow("paused"), "stalls")
    call = held.wait_for_call("stalls")  # the first worker is in the middle of the call, and stays there
    wait_until(lambda: running_with_its_lease(run.pk), "the first worker's claim of the node")
    assert wait_until(lambda: deployment.holder_of(call), "the process making the call")[0] is paused

    os.killpg(paused.pid, signal.SIGSTOP)  # mid-call, its heartbeat with it: a long GC pause, a frozen VM
    stopped_at = time.monotonic()
    deployment.start_worker(concurrency=1)
    run = wait_for_run(run.pk, timeout=30)  # the sweeper hands the node to the second worker, whose call is answered
    os.killpg(paused.pid, signal.SIGCONT)
    call.release()  # the first call's answer comes back now, too late
    wait_until(lambda: "lost its claim; outcome dropped" in paused.log.read_text(), "the resumed worker to try its late write")

    node = NodeRun.objects.get(run=run)
    assert run.status == RunStatus.SUCCEEDED
    assert node.attempt == 2
    assert list(run.events.filter(kind="node_succeeded").values_list("attempt", flat=True)) == [2]
    late = ProviderCall.objects.get(run=run, attempt=1)  # what the model said is kept, though too late
    assert late.created_at > node.finished_at
    report(f"paused 1 worker mid-call; the node succeeded on attempt 2 after {time.monotonic() - stopped_at:.1f} s; the resumed worker's write was refused")
