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
from tests.conftest import ROOT, require_database
from tests.factories import save_workflow

pytestmark = pytest.mark.django_db(transaction=True)

# The child says when each of its first two runs is committed and waits, after the first, until the
# parent has written one: the parent's first run falls between the child's first and second, the
# child's second between the parent's first and the rest, whatever the scheduler does. The rest go at once.
WRITER = """
import sys
from apps.workflows.models import Workflow
from apps.runs.services import run_start
wf = Workflow.objects.get(name="tiny")
for i in range({count}):
    run_start(workflow=wf, input={{"topic": f"child {{i}}"}})
    if i == 0:
        print("wrote child 0", flush=True)
        assert sys.stdin.readline() == "go\\n"
    if i == 1:
        print("wrote child 1", flush=True)
"""


def test_sqlite_runs_in_wal_mode_with_immediate_transactions():
    require_database("sqlite", "SQLite settings only")  # the PostgreSQL pass covers its own concurrency
    with connection.cursor() as cursor:
        assert cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert cursor.execute("PRAGMA busy_timeout").fetchone()[0] >= 10_000
    assert connection.settings_dict["OPTIONS"]["transaction_mode"] == "IMMEDIATE"


def test_two_processes_starting_runs_at_once_lose_nothing(test_database_url, unconsumed_queue, tmp_path):
    # both processes send to a queue no worker consumes: the session's worker must not start
    # running these nodes while the test counts them queued
    version = save_workflow()
    count = 60
    env = {**os.environ, "DATABASE_URL": test_database_url, "DAGWRIGHT_QUEUE": unconsumed_queue}
    log = tmp_path / "child.log"
    with log.open("w") as stderr:
        child = subprocess.Popen([sys.executable, "manage.py", "shell", "--no-imports", "-c", WRITER.format(count=count)], cwd=ROOT, env=env,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True)  # fmt: skip
        try:
            assert child.stdout.readline() == "wrote child 0\n", log.read_text()
            run_start(workflow=version.workflow, input={"topic": "parent 0"})
            child.stdin.write("go\n")
            child.stdin.flush()
            assert child.stdout.readline() == "wrote child 1\n", log.read_text()
            for i in range(1, count):
                run_start(workflow=version.workflow, input={"topic": f"parent {i}"})
            child.wait(timeout=120)
        finally:
            child.kill()  # a no-op for a child that finished; one that hangs must not outlive the test
            child.wait()
    assert child.returncode == 0, log.read_text()
    assert Run.objects.count() == 2 * count
    assert Run.objects.filter(node_runs__status="queued").count() == 2 * count
    parents, children = created_at("parent"), created_at("child")
    assert any(children[0] < at < children[-1] for at in parents)  # each wrote while the other was writing
    assert any(parents[0] < at < parents[-1] for at in children)


def created_at(writer: str) -> list:
    """When the runs ``writer`` started were created, in order (their topics name the writer)."""
    return sorted(Run.objects.filter(input__topic__startswith=writer).values_list("created_at", flat=True))
