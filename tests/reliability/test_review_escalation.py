"""Escalation as deployed: celery beat schedules ``reviews.escalate`` and a worker carries it out,
with no test code calling the escalation."""

from __future__ import annotations

import time

import pytest

from apps.audit.audit import audit_verify
from apps.audit.models import AuditEntry
from apps.reviews.models import ReviewTask
from apps.runs.models import NodeRun, NodeStatus, RunStatus
from apps.runs.services import run_start
from tests.factories import save_workflow
from tests.reviews.helpers import gated_definition
from tests.runs.helpers import wait_for_run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.reliability]


def test_beat_escalates_an_overdue_review_and_the_run_goes_on(deployment, report):
    deployment.configure(DAGWRIGHT_REVIEW_ESCALATION_SECONDS=0.5)
    deployment.start_worker(concurrency=2)
    deployment.start_beat()
    gate = {"due_in": "2s", "escalation": {"action": "approve", "allow_auto_approve": True}}
    run = run_start(workflow=save_workflow(gated_definition("beat-escalation", **gate)).workflow, input={"topic": "a refund"})

    deadline = time.monotonic() + 30
    while not ReviewTask.objects.filter(run=run, escalated_at__isnull=False).exists():
        assert time.monotonic() < deadline, f"no escalation within 30 s:\n{deployment.logs()}"
        time.sleep(0.1)
    run = wait_for_run(run.pk, timeout=30)

    task = ReviewTask.objects.get(run=run)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert NodeRun.objects.get(run=run, node_id="send").status == NodeStatus.SUCCEEDED
    assert task.decisions.get().by_escalation
    assert list(AuditEntry.objects.filter(review=task).values_list("event", flat=True)) == ["created", "assigned", "escalated", "decided"]
    assert audit_verify().ok
    report(f"due {task.due_at:%H:%M:%S.%f}, escalated {(task.escalated_at - task.due_at).total_seconds():.2f} s later by beat")
