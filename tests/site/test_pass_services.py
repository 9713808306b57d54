"""A pass says where it runs, and CI's PostgreSQL + Redis pass refuses to run anywhere else.

The session check is proved on real pytest sessions in subprocesses: the same small selection
passes as this pass is configured, and fails, saying why, once one service is wrong while
``DAGWRIGHT_REQUIRE_SERVICES=1`` is set. The selection is a pure engine test: it needs no
database, so these sessions never touch the test database this one uses.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.db import connection

import tests.conftest
from tests.conftest import ROOT, require_database

SELECTION = "tests/engine/test_retry.py"
OTHER_VENDOR = {"sqlite": "postgresql", "postgresql": "sqlite"}
URL_NAMING = {"sqlite": "sqlite:////tmp/named-but-not-used.sqlite3", "postgresql": "postgres://postgres@127.0.0.1:5432/named_but_not_used"}


def pytest_session(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", SELECTION], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_a_pass_as_configured_runs_and_its_header_says_on_what():
    session = pytest_session(dict(os.environ))

    assert session.returncode == 0, session.stdout + session.stderr
    header = next(line for line in session.stdout.splitlines() if line.startswith("dagwright pass: "))
    assert f"database={connection.vendor} " in header
    assert "broker=" in header
    assert "cache and breakers=" in header


@pytest.mark.parametrize(
    ("variable", "wrong", "complaint"),
    [
        ("DATABASE_URL", "sqlite:////tmp/not-postgres.sqlite3", "the test database is sqlite, not PostgreSQL"),
        ("CELERY_BROKER_URL", "filesystem://", "the Celery broker (CELERY_BROKER_URL): filesystem:/// is not Redis"),
        ("REDIS_URL", "", "REDIS_URL: (unset) is not Redis"),
        ("REDIS_URL", "redis://127.0.0.1:1/0", "REDIS_URL: no answer to PING at redis://127.0.0.1:1/0"),  # nothing listens on port 1
    ],
)
def test_a_pass_requiring_services_fails_on_a_wrong_one_and_says_which(variable, wrong, complaint):
    session = pytest_session({**os.environ, "DAGWRIGHT_REQUIRE_SERVICES": "1", variable: wrong})

    assert session.returncode == pytest.ExitCode.USAGE_ERROR, session.stdout + session.stderr
    assert "DAGWRIGHT_REQUIRE_SERVICES=1 but this pass does not run on PostgreSQL and Redis" in session.stderr
    assert complaint in session.stderr
    assert " passed" not in session.stdout


# --- the per-test helper ----------------------------------------------------------------------


def outcome(vendor: str) -> tuple[str, str]:
    """What ``require_database(vendor, ...)`` does to a test, caught so that a skip cannot pass for a pass."""
    try:
        require_database(vendor, "the reason given")
    except pytest.skip.Exception as exc:
        return "skipped", str(exc)
    except pytest.fail.Exception as exc:
        return "failed", str(exc)
    return "ran", ""


def test_the_database_a_test_needs_lets_it_run():
    assert outcome(connection.vendor) == ("ran", "")


def test_another_database_is_a_skip(monkeypatch):
    monkeypatch.setattr(tests.conftest, "REQUIRE_SERVICES", False)
    monkeypatch.setenv("DATABASE_URL", URL_NAMING[connection.vendor])

    assert outcome(OTHER_VENDOR[connection.vendor])[0] == "skipped"


def test_a_database_url_the_connection_does_not_match_fails_the_test(monkeypatch):
    """DATABASE_URL names the database the test needs, yet the connection is another: never a skip."""
    monkeypatch.setattr(tests.conftest, "REQUIRE_SERVICES", False)
    other = OTHER_VENDOR[connection.vendor]
    monkeypatch.setenv("DATABASE_URL", URL_NAMING[other])

    assert outcome(other) == ("failed", f"DATABASE_URL names {other} but the test database is {connection.vendor}: the reason given")


def test_postgresql_missing_while_services_are_required_fails_the_test(monkeypatch):
    monkeypatch.setattr(tests.conftest, "REQUIRE_SERVICES", True)
    monkeypatch.setenv("DATABASE_URL", URL_NAMING["sqlite"])
    monkeypatch.setattr(connection, "vendor", "sqlite")  # what a pass that fell back to SQLite sees

    assert outcome("postgresql") == ("failed", "required service missing: the test database is sqlite, not PostgreSQL: the reason given")
