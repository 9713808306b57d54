"""The consumer watchdog: a worker that no longer receives messages stops itself; one that does
is left alone. See orchestrator_site.watchdog."""

from __future__ import annotations

import re
import time

import pytest
from celery.utils.nodenames import worker_direct

from orchestrator_site.watchdog import PROBE_TASK
from tests.reliability.conftest import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.reliability]

FAST = {"DAGWRIGHT_WATCHDOG_SECONDS": 0.5, "DAGWRIGHT_WATCHDOG_TIMEOUT_SECONDS": 3, "DAGWRIGHT_WATCHDOG_GRACE_SECONDS": 1}
TRIPPED = "consumer watchdog: a probe sent"
# Probes sent over more than a timeout: a watchdog that would judge a healthy consumer stuck has
# had the time to, having looked at it once per probe.
HEALTHY_PROBES = int(FAST["DAGWRIGHT_WATCHDOG_TIMEOUT_SECONDS"] / FAST["DAGWRIGHT_WATCHDOG_SECONDS"]) + 2
PROBE_RECEIVED = rf"Task {re.escape(PROBE_TASK)}\[[-0-9a-f]+\] received"


def test_a_worker_that_stops_consuming_stops_itself_and_is_replaced(deployment, report):
    deployment.start_redis(breaker_store=False)
    deployment.configure(**FAST)
    worker = deployment.start_worker(concurrency=2)
    deployment.supervise(worker)
    wait_until(lambda: len(re.findall(PROBE_RECEIVED, worker.log.read_text())) >= HEALTHY_PROBES, "probes to go round", timeout=60)
    assert worker.alive()
    assert TRIPPED not in worker.log.read_text()

    from orchestrator_site.celery import app

    hostname = _hostname(worker)
    replies = app.control.cancel_consumer(worker_direct(hostname).name, destination=[hostname], reply=True, timeout=5)
    assert replies, "the worker did not answer the remote control command"
    stopped_at = time.monotonic()
    deadline = stopped_at + 30
    while worker.alive() and time.monotonic() < deadline:
        time.sleep(0.1)

    assert not worker.alive(), f"the worker kept running without consuming:\n{worker.tail()}"
    assert TRIPPED in worker.log.read_text()
    deadline = time.monotonic() + 45
    while deployment.restarts == 0 or not deployment.live_workers():
        assert time.monotonic() < deadline, "the supervisor started no new worker"
        time.sleep(0.1)
    report(f"a worker that stopped consuming stopped itself {time.monotonic() - stopped_at:.1f} s later and was replaced")


def _hostname(worker) -> str:
    """The node name the worker announced in its log (``-n name@%h``)."""
    for line in worker.log.read_text().splitlines():
        if line.endswith(" ready."):
            return line.split()[-2]
    raise AssertionError(f"no ready line in the worker log:\n{worker.tail()}")
