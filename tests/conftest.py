"""Fixtures shared by the whole suite: users per role, and a real Celery worker process.

``DAGWRIGHT_REQUIRE_SERVICES=1`` (set by CI's second pass) turns a skip for a missing service into
a failure, and refuses the whole session unless it really runs on PostgreSQL and Redis. The header
of every pass says which database, broker and shared store it runs on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import dj_database_url
import pytest
import redis
from django.conf import settings
from django.db import connection
from kombu.utils.url import maybe_sanitize_url

from apps.workflows.roles import ADMINS, OPERATORS, REVIEWERS
from tests.factories import UserFactory

ROOT = Path(__file__).resolve().parent.parent
REQUIRE_SERVICES = os.environ.get("DAGWRIGHT_REQUIRE_SERVICES", "").lower() in {"1", "true", "yes"}


def missing_service(reason: str) -> None:
    """Skip the test, or fail it when CI requires every service."""
    __tracebackhide__ = True  # the skip is reported at the test's line, not here
    if REQUIRE_SERVICES:
        pytest.fail(f"required service missing: {reason}")
    pytest.skip(reason)


def configured_database_vendor() -> str:
    """The database DATABASE_URL names, in ``connection.vendor``'s words; SQLite when it is unset
    (the embedded default)."""
    url = os.environ.get("DATABASE_URL", "")
    engine = dj_database_url.parse(url)["ENGINE"] if url else "django.db.backends.sqlite3"
    name = engine.rsplit(".", 1)[-1]
    return "sqlite" if name == "sqlite3" else name


def require_database(vendor: str, reason: str) -> None:
    """Go on only on the ``vendor`` database (``"postgresql"``, ``"sqlite"``); skip elsewhere.

    Two skips would hide a broken pass, so they fail: DATABASE_URL names ``vendor`` but the test
    database is another one (the pass believes it tests PostgreSQL and does not), and PostgreSQL
    missing while CI requires every service.
    """
    __tracebackhide__ = True
    if connection.vendor == vendor:
        return
    if configured_database_vendor() == vendor:
        pytest.fail(f"DATABASE_URL names {vendor} but the test database is {connection.vendor}: {reason}")
    if vendor == "postgresql":
        missing_service(f"the test database is {connection.vendor}, not PostgreSQL: {reason}")
    pytest.skip(reason)


def _redis_problem(url: str) -> str | None:
    if urlparse(url).scheme not in {"redis", "rediss"}:
        return f"{maybe_sanitize_url(url) if url else '(unset)'} is not Redis"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2).ping()
    except redis.RedisError as exc:
        return f"no answer to PING at {maybe_sanitize_url(url)}: {exc}"
    return None


def services_problems() -> list[str]:
    """Why this pass does not run on PostgreSQL and Redis, as CI's second pass must (none if it does)."""
    from orchestrator_site.celery import app

    problems = []
    if connection.vendor != "postgresql":
        named = maybe_sanitize_url(os.environ.get("DATABASE_URL", "(unset)"))
        problems.append(f"the test database is {connection.vendor}, not PostgreSQL (DATABASE_URL={named})")
    for name, url in (("the Celery broker (CELERY_BROKER_URL)", app.conf.broker_url or ""), ("REDIS_URL", settings.REDIS_URL)):
        if problem := _redis_problem(url):
            problems.append(f"{name}: {problem}")
    return problems


def pass_services() -> str:
    """One line: the database, broker and shared store this pass runs on."""
    from orchestrator_site.celery import app

    db = connection.settings_dict
    database = f"{connection.vendor} {db['TEST'].get('NAME') or 'test_' + db['NAME']}"
    if connection.vendor != "sqlite":
        database += f" at {db.get('HOST') or 'localhost'}:{db.get('PORT') or 5432}"
    broker = maybe_sanitize_url(app.conf.broker_url)
    if broker.startswith("filesystem"):
        broker = f"filesystem {app.conf.broker_transport_options['data_folder_in']}"
    shared = maybe_sanitize_url(settings.REDIS_URL) if settings.REDIS_URL else "the database (REDIS_URL unset)"
    required = "required" if REQUIRE_SERVICES else "not required"
    return f"database={database}; broker={broker}; cache and breakers={shared}; services {required}"


def pytest_report_header(config: pytest.Config) -> str:
    return f"dagwright pass: {pass_services()}"


@pytest.hookimpl(wrapper=True)
def pytest_sessionstart(session: pytest.Session) -> Iterator[None]:
    yield  # the header first: a refused pass still says where it was
    if REQUIRE_SERVICES and (problems := services_problems()):
        lines = "\n  ".join(problems)
        raise pytest.UsageError(f"DAGWRIGHT_REQUIRE_SERVICES=1 but this pass does not run on PostgreSQL and Redis:\n  {lines}")


@pytest.fixture(autouse=True)
def fast_password_hashing(settings) -> None:
    # Tests make users afresh and rarely sign in with a password: PBKDF2's deliberate slowness
    # would only make the suite slow.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def admin(db):
    return UserFactory(username="ada-admin", role=ADMINS, is_superuser=True, is_staff=True)


@pytest.fixture
def operator(db):
    return UserFactory(username="otto-operator", role=OPERATORS)


@pytest.fixture
def reviewer(db):
    return UserFactory(username="rita-reviewer", role=REVIEWERS)


@pytest.fixture
def outsider(db):
    return UserFactory(username="oscar-outsider")


def _database_url(settings_dict: dict) -> str:
    """A DATABASE_URL for the test database, so a worker process writes where the test reads."""
    if settings_dict["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    user = settings_dict.get("USER") or ""
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{auth}{host}:{port}/{settings_dict['NAME']}"


class WorkerProcess:
    """A real ``celery worker`` subprocess on its own queue, against the test database."""

    def __init__(self, queue: str, env: dict[str, str], concurrency: int, pool: str):
        self.queue, self.env, self.concurrency, self.pool = queue, env, concurrency, pool
        self.log = Path(settings.VAR_DIR) / f"worker-{queue}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "celery", "-A", "orchestrator_site", "worker", "-Q", self.queue, "-c", str(self.concurrency),
               "-P", self.pool, "--without-mingle", "--without-gossip", "-l", "info", "-n", f"{self.queue}@%h"]  # fmt: skip
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=self.log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log.read_text()[-3000:]}")
            if " ready." in self.log.read_text():
                return
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready after 30 s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture(scope="session")
def test_database_url(django_db_setup, django_db_blocker) -> str:
    """The test database as a DATABASE_URL, for subprocesses that must write where tests read."""
    with django_db_blocker.unblock():
        return _database_url(connection.settings_dict)


SESSION_TAG = uuid.uuid4().hex[:8]
BREAKER_PREFIX = f"dagwright-test-{SESSION_TAG}:breaker:"


@pytest.fixture(autouse=True)
def isolated_breakers(settings) -> None:
    """Breaker state in Redis outlives a test: this session's keys carry a prefix of their own
    (the session's worker process gets the same one), and tests that open a breaker use models
    of their own."""
    settings.DAGWRIGHT_BREAKER = {**settings.DAGWRIGHT_BREAKER, "key_prefix": BREAKER_PREFIX}


@pytest.fixture(scope="session", autouse=True)
def test_queue() -> Iterator[str]:
    """Every message this session sends goes to a queue of its own, purged at the end,
    so tests never feed a developer's running worker (or another session's)."""
    from orchestrator_site.celery import app

    queue = f"dagwright-test-{SESSION_TAG}"
    app.conf.task_default_queue = queue
    yield queue
    if settings.REDIS_URL:
        client = redis.Redis.from_url(settings.REDIS_URL)
        for key in client.scan_iter(f"{BREAKER_PREFIX}*"):
            client.delete(key)
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(queue)


@pytest.fixture
def unconsumed_queue(test_queue: str) -> Iterator[str]:
    """Send this test's messages to a queue no worker consumes, so the session's worker cannot
    compete with what the test does by hand (races, claims); purged afterwards."""
    from orchestrator_site.celery import app

    queue = f"{test_queue}-idle-{uuid.uuid4().hex[:6]}"
    app.conf.task_default_queue = queue
    yield queue
    app.conf.task_default_queue = test_queue
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(queue)


def worker_environment(database_url: str, queue: str, **extra: str) -> dict[str, str]:
    """A test worker's environment: the test database, a queue of its own, no simulated latency,
    and this session's breaker keys."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "DAGWRIGHT_QUEUE": queue,
        "DAGWRIGHT_SIM_LATENCY": "fixed:0",
        "DB_CONN_MAX_AGE": "0",
        "DAGWRIGHT_BREAKER_KEY_PREFIX": BREAKER_PREFIX,
        **extra,
    }


@pytest.fixture(scope="session")
def celery_worker(test_database_url: str, test_queue: str) -> Iterator[WorkerProcess]:
    """One real Celery worker for the session, consuming the session's queue.

    Tests that use it must commit their data: mark them ``django_db(transaction=True)``.
    """
    queue = test_queue
    # The worker's finished spans as JSON lines (orchestrator_site.telemetry), for tests/site/test_telemetry.py.
    env = worker_environment(test_database_url, queue, DAGWRIGHT_OTEL_SPANS_FILE=str(Path(settings.VAR_DIR) / f"spans-{queue}.jsonl"))
    worker = WorkerProcess(queue, env, concurrency=4, pool="threads")
    worker.start()
    yield worker
    worker.stop()
