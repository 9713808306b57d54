"""Runs for the page tests.

Runs are started with the real ``run_start``; no worker runs in these tests, so their first
nodes stay queued and tests move them along by updating rows, as a worker would.
"""

from __future__ import annotations

from typing import Any

from django.test import Client
from django.utils import timezone

from apps.runs.models import NodeRun, NodeStatus, Run, RunStatus
from apps.runs.services import run_start
from apps.workflows.models import WorkflowVersion


def signed_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def start(version: WorkflowVersion, user: Any = None, topic: str = "tides") -> Run:
    return run_start(workflow=version.workflow, input={"topic": topic}, started_by=user)


def finish(run: Run, status: str = RunStatus.SUCCEEDED, **node_fields: Any) -> Run:
    """Mark the run and all its nodes finished, as a worker would have left them."""
    now = timezone.now()
    node_status = NodeStatus.SUCCEEDED if status == RunStatus.SUCCEEDED else NodeStatus.FAILED
    NodeRun.objects.filter(run=run).update(status=node_status, attempt=1, started_at=now, finished_at=now, **node_fields)
    Run.objects.filter(pk=run.pk).update(status=status, started_at=run.started_at or now, finished_at=now)
    run.refresh_from_db()
    return run
