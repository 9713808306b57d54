"""Two processes writing at once (a web process and a worker, say) must both succeed.

On SQLite this is what WAL, the busy timeout and IMMEDIATE transactions are for.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.db import connection

from apps.runs.models import Run
from apps.runs.services import run_start
from tests.conftest import ROOT
from tests.factories import save_workflow

pytestmark = pytest.mark.django_db(transaction=True)

WRITER = """
from apps.workflows.models import Workflow
from apps.runs.services import run_start
wf = Workflow.objects.get(name="tiny")
for i in range({count}):
    run_start(workflow=wf, input={{"topic": f"child {{i}}"}})
"""


def test_sqlite_runs_in_wal_mode_with_immediate_transactions():
    if connection.vendor != "sqlite":
        pytest.skip("SQLite settings only")  # the PostgreSQL pass covers its own concurrency
    with connection.cursor() as cursor:
        assert cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert cursor.execute("PRAGMA busy_timeout").fetchone()[0] >= 10_000
    assert connection.settings_dict["OPTIONS"]["transaction_mode"] == "IMMEDIATE"


def test_two_processes_starting_runs_at_once_lose_nothing(test_database_url, unconsumed_queue):
    # both processes send to a queue no worker consumes: the session's worker must not start
    # running these nodes while the test counts them queued
    version = save_workflow()
    count = 60
    env = {**os.environ, "DATABASE_URL": test_database_url, "DAGWRIGHT_QUEUE": unconsumed_queue}
    child = subprocess.Popen([sys.executable, "manage.py", "shell", "-c", WRITER.format(count=count)], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    for i in range(count):
        run_start(workflow=version.workflow, input={"topic": f"parent {i}"})
    output, _ = child.communicate(timeout=120)
    assert child.returncode == 0, output
    assert Run.objects.count() == 2 * count
    assert Run.objects.filter(node_runs__status="queued").count() == 2 * count
