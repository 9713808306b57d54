"""A provider that fails, seen through real workers: an outage opens the circuit breaker, which
keeps the calls made during it few, and the runs finish once it is over; a node that always
fails is tried exactly its max attempts, then fails its run with the last error."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.providers.models import BreakerTransition
from apps.runs.models import NodeRun, NodeStatus, ProviderCall, Run, RunStatus
from apps.runs.services import run_start
from tests.factories import definition, llm_node, save_workflow
from tests.reliability.conftest import wait_for_runs
from tests.reliability.workflows import own_model
from tests.runs.helpers import wait_for_run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.reliability]


def one_node_workflow(scenario: str, model: str, max_attempts: int):
    retry = {"max_attempts": max_attempts, "backoff_seconds": 0.2, "backoff_cap_seconds": 1}
    return save_workflow(definition(f"rel-{scenario}-{model[-6:]}", [llm_node("answer", model=model)], retry=retry))


THRESHOLD, OPEN_SECONDS, CONCURRENCY = 3, 1.0, 4
OUTAGE_SECONDS, RUNS = 4.0, 10


def test_an_outage_opens_the_breaker_bounds_the_calls_and_every_run_finishes_after_it(deployment, report):
    deployment.configure(
        DAGWRIGHT_BREAKER_THRESHOLD=THRESHOLD, DAGWRIGHT_BREAKER_OPEN_SECONDS=OPEN_SECONDS, DAGWRIGHT_BREAKER_PROBE_WAIT_SECONDS=0.2,
        DAGWRIGHT_SWEEP_SECONDS=0.5, DAGWRIGHT_REDISPATCH_SECONDS=5,
    )  # fmt: skip
    deployment.start_worker(concurrency=CONCURRENCY)
    deployment.start_beat()
    model = own_model("outage")
    version = one_node_workflow("outage", model, max_attempts=10)

    outage_from = timezone.now()
    outage_until = outage_from + timedelta(seconds=OUTAGE_SECONDS)
    options = {"simulation": {"latency": "fixed:50", "faults": {"outage_until": outage_until.isoformat()}}}
    run_ids = [run_start(workflow=version.workflow, input={"topic": f"outage {i}"}, options=options).pk for i in range(RUNS)]
    wait_for_runs(run_ids, deployment, timeout=60)

    nodes = NodeRun.objects.filter(run_id__in=run_ids)
    assert set(nodes.values_list("run__status", flat=True)) == {RunStatus.SUCCEEDED}
    transitions = list(BreakerTransition.objects.filter(model=model).order_by("at", "id").values_list("from_state", "to_state", "at"))
    assert transitions[0][:2] == ("closed", "open")
    assert transitions[-1][:2] == ("half_open", "closed")
    assert transitions[-1][2] >= outage_until  # only a probe after the outage could close it
    # Open, one probe, open again while the probes fail, closed by the first one that succeeds;
    # by the times the breaker recorded, each open period lasted OPEN_SECONDS before its probe.
    opened = [at for _, to_state, at in transitions if to_state == "open"]
    probes = [at for _, to_state, at in transitions if to_state == "half_open"]
    assert [to_state for _, to_state, _ in transitions] == ["open", "half_open"] * len(probes) + ["closed"]
    open_for = [probe - opened_at for opened_at, probe in zip(opened, probes, strict=True)]
    assert min(open_for) >= timedelta(seconds=OPEN_SECONDS, microseconds=-1), open_for  # -1 µs: each time is stored rounded to the microsecond
    during = ProviderCall.objects.filter(run_id__in=run_ids, error_class="unavailable").count()
    # While closed, calls go until THRESHOLD failures are counted, and those already let through
    # (at most one per other pool slot) fail too. Then each time it is half open the breaker lets
    # one probe through.
    bound = THRESHOLD + (CONCURRENCY - 1) + len(probes)
    assert during <= bound, f"{during} calls during the outage, more than the {bound} the breaker allows"
    deferrals = sum(nodes.values_list("deferrals", flat=True))
    assert deferrals > 0  # nodes waited for the breaker instead of calling
    calls = ProviderCall.objects.filter(run_id__in=run_ids).count()
    last_finished = max(Run.objects.filter(pk__in=run_ids).values_list("finished_at", flat=True))
    report(
        f"outage {OUTAGE_SECONDS:g} s, {RUNS} runs: {during} provider calls during it (bound {bound} = threshold {THRESHOLD} + "
        f"{CONCURRENCY - 1} in flight + {len(probes)} probes), {deferrals} deferred attempts, {len(transitions)} breaker transitions, "
        f"{calls} calls in all; the last run succeeded {(last_finished - outage_until).total_seconds():.1f} s after the outage ended"
    )


def test_a_node_that_always_fails_is_tried_max_attempts_times_then_fails_its_run(deployment, report):
    deployment.configure(DAGWRIGHT_BREAKER_THRESHOLD=100)  # the breaker is not what this test is about
    deployment.start_worker(concurrency=2)
    version = one_node_workflow("always-fails", own_model("always-fails"), max_attempts=3)

    options = {"simulation": {"latency": "fixed:0", "faults": {"error_rate": 1.0}}}
    run = run_start(workflow=version.workflow, input={"topic": "doomed"}, options=options)
    run = wait_for_run(run.pk, timeout=30)

    calls = list(ProviderCall.objects.filter(run=run).order_by("id"))
    assert [c.attempt for c in calls] == [1, 2, 3]
    assert {c.error_class for c in calls} == {"server_error"}
    node = NodeRun.objects.get(run=run)
    assert (node.status, node.attempt, node.error) == (NodeStatus.FAILED, 3, calls[-1].error)
    assert run.status == RunStatus.FAILED
    assert run.error == f"node 'answer' failed: {calls[-1].error}"
    assert list(run.events.filter(kind="node_retrying").values_list("attempt", flat=True)) == [1, 2]
    assert list(run.events.filter(kind="node_failed").values_list("attempt", flat=True)) == [3]
    report(f"{len(calls)} provider calls for max_attempts 3; run error: {run.error[:90]}")
