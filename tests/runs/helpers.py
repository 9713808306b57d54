from __future__ import annotations

import time

from django.db.models import Q
from django.utils import timezone

from apps.runs import services
from apps.runs.models import ACTIVE_RUN_STATUSES, NodeRun, NodeStatus, Run


def wait_for_run(run_id, timeout: float = 30.0) -> Run:
    """Poll the database until the run is finished; fail with its state if it is not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = Run.objects.get(pk=run_id)
        if run.status not in ACTIVE_RUN_STATUSES:
            return run
        time.sleep(0.05)
    states = list(Run.objects.get(pk=run_id).node_runs.values_list("node_id", "status"))
    raise AssertionError(f"run {run_id} still {run.status} after {timeout} s: {states}")


def drain(run: Run, *, retries_due: bool = True) -> Run:
    """Execute queued nodes in this process until nothing is queued (what workers would do),
    due retries included unless ``retries_due`` is False (then a node waiting for its retry
    stays waiting, as it would with no sweeper running)."""
    for _ in range(100):
        ready = Q(status=NodeStatus.QUEUED)
        if retries_due:
            ready |= Q(status=NodeStatus.RETRY_WAIT, next_attempt_at__lte=timezone.now())
        queued = list(NodeRun.objects.filter(ready, run=run).values_list("pk", flat=True))
        if not queued:
            break
        for pk in queued:
            services.node_run_execute(node_run_id=pk)
    run.refresh_from_db()
    return run
