"""The sweeper: what makes a lost message or a dead worker harmless. Run by Celery beat.

Three questions, each answered with an indexed query and compare-and-set updates:
- running nodes whose lease expired (their worker died or hung): tried again, or failed when
  their attempts are spent;
- queued nodes whose message may be lost (a restarted Redis, a crash between commit and send):
  sent again; a duplicate is harmless because claims are compare-and-set;
- retries that are due: queued and sent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from . import signals
from .budgets import budget_release_abandoned
from .models import NodeRun, NodeStatus, Run
from .services import node_runs_dispatch, run_advance, run_lock

log = logging.getLogger(__name__)
BATCH = 500


@dataclass(frozen=True)
class SweepReport:
    leases_expired: int = 0
    redispatched: int = 0
    retries_due: int = 0


def sweep(*, now: datetime | None = None) -> SweepReport:
    """One pass of the sweeper. Safe to run on several machines at once."""
    now = now or timezone.now()
    report = SweepReport(
        leases_expired=_recover_expired_leases(now),
        redispatched=_redispatch_lost_messages(now),
        retries_due=_queue_due_retries(now),
    )
    if report != SweepReport():
        log.info("sweep: %s", report)
    return report


def _recover_expired_leases(now: datetime) -> int:
    expired = NodeRun.objects.filter(status=NodeStatus.RUNNING, lease_expires_at__lt=now).values_list("pk", "run_id", "attempt")
    return sum(_recover(pk, run_id, attempt, now) for pk, run_id, attempt in expired[:BATCH])


def _recover(node_run_id: int, run_id, attempt: int, now: datetime) -> int:
    """The worker holding this attempt stopped renewing its lease: the attempt is spent."""
    with transaction.atomic():
        run = run_lock(run_id)
        # Read again, locked: the heartbeat of a worker that is late but alive may have renewed the
        # lease since the listing, and then the node stays its own (taking it over would pay twice).
        expired = NodeRun.objects.filter(pk=node_run_id, status=NodeStatus.RUNNING, attempt=attempt, lease_expires_at__lt=now)
        node_run = expired.select_for_update().first()
        if node_run is None:
            return 0
        policy = run.version.plan.spec.retry_policy(node_run.node_id)
        signals.node_lease_expired.send(sender=NodeRun, run=run, node_run=node_run)
        budget_release_abandoned(node_run=node_run)  # its call's reservation would otherwise hold for ever
        error = {"error": "the worker running this attempt stopped (its lease expired)", "error_class": "worker_lost", "lease_expires_at": None}
        if node_run.attempts_spent < policy.max_attempts:
            NodeRun.objects.filter(pk=node_run_id, attempt=attempt).update(status=NodeStatus.QUEUED, queued_at=now, **error)
            signals.nodes_queued.send(sender=NodeRun, run=run, node_ids=[node_run.node_id])
            node_runs_dispatch([node_run_id])
            return 1
        NodeRun.objects.filter(pk=node_run_id, attempt=attempt).update(status=NodeStatus.FAILED, finished_at=now, **error)
        signals.node_failed.send(sender=NodeRun, run=run, node_run=node_run, error=error["error"], error_class="worker_lost")
        node_runs_dispatch(run_advance(run, run.version.plan))
        return 1


def _redispatch_lost_messages(now: datetime) -> int:
    cutoff = now - timedelta(seconds=settings.DAGWRIGHT_REDISPATCH_SECONDS)
    stale = list(NodeRun.objects.filter(status=NodeStatus.QUEUED, queued_at__lt=cutoff).values_list("pk", "queued_at")[:BATCH])
    sent = []
    for pk, queued_at in stale:
        # moving queued_at on (compare-and-set) sends each stale node once per interval, even
        # with several sweepers running
        if NodeRun.objects.filter(pk=pk, status=NodeStatus.QUEUED, queued_at=queued_at).update(queued_at=now):
            sent.append(pk)
    node_runs_dispatch(sent)
    return len(sent)


def _queue_due_retries(now: datetime) -> int:
    due = list(NodeRun.objects.filter(status=NodeStatus.RETRY_WAIT, next_attempt_at__lte=now).values_list("pk", "run_id", "node_id")[:BATCH])
    queued = []
    for pk, run_id, node_id in due:
        with transaction.atomic():
            if NodeRun.objects.filter(pk=pk, status=NodeStatus.RETRY_WAIT).update(status=NodeStatus.QUEUED, queued_at=now):
                signals.nodes_queued.send(sender=NodeRun, run=Run(pk=run_id), node_ids=[node_id])
                queued.append(pk)
    node_runs_dispatch(queued)
    return len(queued)
