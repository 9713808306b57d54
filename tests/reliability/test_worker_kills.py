"""Workers die at random moments, SIGKILLed: a pool child in the middle of a node, or the main
process with everything it runs. Every run still finishes, no node succeeds twice and the outbox
side effect of every run is written exactly once. A worker that only stalled (SIGSTOP) past its
lease finds, when it resumes, that it can no longer write.

The moments and the victims come from a seeded random generator (``DAGWRIGHT_CHAOS_SEED`` picks
another seed): the same seed replays the same sequence of kills, though how it meets the work
still depends on the machine's timing.
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

from apps.runs.models import NodeRun, NodeStatus, ProviderCall, RunEvent, RunStatus
from apps.runs.services import run_start
from tests.factories import definition, llm_node, save_workflow
from tests.reliability.conftest import Deployment, wait_for_runs
from tests.reliability.workflows import assert_every_run_succeeded_once_per_node, own_model, save_five_node_workflow, start_runs_of
from tests.runs.helpers import wait_for_run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.reliability]

SEED = int(os.environ.get("DAGWRIGHT_CHAOS_SEED", "20260501"))
RUNS = 50
MAX_ATTEMPTS = 10  # generous: a node may be hit by several kills in a row
MAX_KILLS = 10
LATENCY_MS = 150
WORKERS, CONCURRENCY = 2, 2


def strike(rng: random.Random, deployment: Deployment) -> str:
    """Kill a pool child (it is replaced by its main process) or a whole worker (replaced by a
    new worker), chosen by ``rng``."""
    worker = rng.choice(deployment.live_workers())
    children = worker.children()
    if children and rng.random() < 0.6:
        os.kill(rng.choice(children), signal.SIGKILL)
        return "child"
    worker.kill_main(then_children_after=rng.uniform(0.0, 0.3))
    deployment.start_worker(concurrency=CONCURRENCY)
    return "main"


def test_every_run_finishes_once_whichever_worker_is_killed_when(deployment, report):
    deployment.configure(DAGWRIGHT_LEASE_SECONDS=2, DAGWRIGHT_SWEEP_SECONDS=0.5, DAGWRIGHT_REDISPATCH_SECONDS=3)
    for _ in range(WORKERS):
        deployment.start_worker(concurrency=CONCURRENCY)
    deployment.start_beat()
    version = save_five_node_workflow("kills", MAX_ATTEMPTS)
    rng = random.Random(SEED)

    started_at = time.monotonic()
    run_ids: list = []
    kills: list[tuple[str, object]] = []
    next_kill = started_at + rng.uniform(0.5, 1.5)
    while len(run_ids) < RUNS or (len(kills) < MAX_KILLS and not _all_finished(run_ids)):
        if len(run_ids) < RUNS:
            run_ids += start_runs_of(version, 1, LATENCY_MS, start_index=len(run_ids))
        if len(kills) < MAX_KILLS and time.monotonic() >= next_kill:
            kills.append((strike(rng, deployment), timezone.now()))
            next_kill = time.monotonic() + rng.uniform(0.3, 1.5)
        time.sleep(0.1)
    finished_at = wait_for_runs(run_ids, deployment, timeout=120)

    assert_every_run_succeeded_once_per_node(run_ids, MAX_ATTEMPTS)
    recovered = list(RunEvent.objects.filter(run_id__in=run_ids, kind="node_lease_expired").values_list("run_id", "node_id", "created_at"))
    assert kills
    assert recovered, "no kill hit a running node: the test proved nothing"
    sweeps, dropped = deployment.beat.log.read_text().count("Sending due task sweep"), deployment.worker_log_count("Discarding revoked task: runs.sweep")
    assert dropped == 0, f"{dropped} of {sweeps} sweeps expired waiting behind the nodes: recovery starves under load"
    recovery = _recovery_seconds(run_ids, recovered, [at for _, at in kills])
    attempts = sorted(NodeRun.objects.filter(run_id__in=run_ids).values_list("attempt", flat=True))
    paid = Counter(ProviderCall.objects.filter(run_id__in=run_ids, output__isnull=False).values_list("node_run_id", flat=True))
    report(
        f"seed {SEED}: {len(kills)} kills ({sum(k == 'child' for k, _ in kills)} pool children, {sum(k == 'main' for k, _ in kills)} main processes), "
        f"{len(recovered)} nodes recovered from an expired lease, {sum(a > 1 for a in attempts)} nodes needed more than one attempt (max {attempts[-1]}); "
        f"kill to recovered node's success: median {statistics.median(recovery):.1f} s, max {max(recovery):.1f} s; "
        f"{sum(n > 1 for n in paid.values())} nodes paid for twice; {sweeps} sweeps; {RUNS} runs in {finished_at - started_at:.1f} s"
    )


def _all_finished(run_ids: list) -> bool:
    from apps.runs.models import ACTIVE_RUN_STATUSES, Run

    return not Run.objects.filter(pk__in=run_ids, status__in=ACTIVE_RUN_STATUSES).exists()


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
    deployment.configure(DAGWRIGHT_LEASE_SECONDS=2, DAGWRIGHT_SWEEP_SECONDS=0.5)
    paused = deployment.start_worker(concurrency=1)
    deployment.start_beat()
    version = save_workflow(definition(f"rel-paused-{own_model('paused')[-6:]}", [llm_node("answer", model=own_model("paused"))]))
    run = run_start(workflow=version.workflow, input={"topic": "stalls"}, options={"simulation": {"latency": "fixed:3000"}})
    _wait_until(lambda: NodeRun.objects.filter(run=run, status=NodeStatus.RUNNING, attempt=1).exists(), "the first worker to claim the node")

    os.killpg(paused.pid, signal.SIGSTOP)  # mid-call, its heartbeat with it: a long GC pause, a frozen VM
    stopped_at = time.monotonic()
    deployment.start_worker(concurrency=1)
    run = wait_for_run(run.pk, timeout=30)  # the sweeper hands the node to the second worker
    os.killpg(paused.pid, signal.SIGCONT)
    _wait_until(lambda: "lost its claim; outcome dropped" in paused.log.read_text(), "the resumed worker to try its late write")

    node = NodeRun.objects.get(run=run)
    assert run.status == RunStatus.SUCCEEDED
    assert node.attempt == 2
    assert list(run.events.filter(kind="node_succeeded").values_list("attempt", flat=True)) == [2]
    late = ProviderCall.objects.get(run=run, attempt=1)  # what the model said is kept, though too late
    assert late.created_at > node.finished_at
    report(f"paused 1 worker mid-call; the node succeeded on attempt 2 after {time.monotonic() - stopped_at:.1f} s; the resumed worker's write was refused")


def _wait_until(condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
