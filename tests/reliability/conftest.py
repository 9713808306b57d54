"""Real processes for the reliability tests, a set of its own for each test.

A ``Deployment`` is what an operator runs: Celery workers (prefork, so a pool child can be killed
as well as the main process) and a beat running the sweeper every fraction of a second, on a
queue of the test's own, against the test database. Tests about the broker start a Redis server
of their own on a free port, without persistence, which they may kill and restart; the machine's
Redis is never touched.

A test that needs a node to be running at a given moment (to kill its worker then, or to see its
message delivered again) gives it a held model (``Deployment.serve_held_model``, see
tests.providers.held): the node runs until the test releases its call, instead of for a latency
the moment may or may not fall into.

Every process starts in a process group of its own; the group is killed at the end of the test,
whatever happened. Figures the tests measure are printed at the end of the pytest run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from apps.runs.models import ACTIVE_RUN_STATUSES, Run
from tests.conftest import BREAKER_PREFIX, ROOT, missing_service
from tests.providers.held import Call, HeldChatServer

READY_SECONDS = 45
_SESSION_ENV = dict(os.environ)
FIGURES: list[str] = []


def pytest_terminal_summary(terminalreporter) -> None:
    if FIGURES:
        terminalreporter.section("reliability figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture
def report(request) -> Callable[[str], None]:
    """Print a measured figure, and list it again at the end of the run."""

    def add(line: str) -> None:
        FIGURES.append(f"{request.node.name}: {line}")
        print(line)

    return add


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Process:
    """A subprocess in a process group of its own, writing to a log file."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log: Path):
        self.name, self.cmd, self.env, self.log = name, cmd, env, log
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, ready: str) -> None:
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited early:\n{self.tail()}")
            if ready in self.log.read_text(errors="replace"):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready after {READY_SECONDS} s:\n{self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def kill_group(self) -> None:
        """SIGKILL the process and everything it started: the machine it ran on is gone."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


class Worker(Process):
    def children(self) -> list[int]:
        """The pids of the prefork pool's children (Linux /proc; none elsewhere)."""
        found = []
        for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.pid:  # field 4, after the "(comm)"
                    found.append(int(entry))
        return sorted(found)

    def kill_main(self, then_children_after: float) -> None:
        """SIGKILL the main process alone; its children, orphaned, go on for a moment, then die too."""
        os.kill(self.pid, signal.SIGKILL)
        time.sleep(then_children_after)
        self.kill_group()


class RedisServer:
    """A redis-server of the test's own on a free port: no RDB snapshots, no AOF, so a restart
    after ``kill -9`` starts empty, as a Redis without persistence does."""

    def __init__(self, directory: Path):
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            missing_service("redis-server is not installed")
        self.port, self.directory = free_port(), directory
        self.proc: subprocess.Popen | None = None
        self.log = directory / "redis.log"

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        cmd = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.directory)]
        # Redis is a service here, not code under test: a test clock (faketime's LD_PRELOAD) stays ours, and
        # libfaketime 0.9.10 crashes redis-server's allocator at start.
        env = {name: value for name, value in os.environ.items() if name not in ("LD_PRELOAD", "FAKETIME")}
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on {self.port} did not start:\n{self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


def _use_broker(url: str | None, transport_options: dict[str, Any]) -> None:
    """Point this process's Celery app (what ``run_start`` publishes with) at another broker;
    None: back to the settings' broker."""
    from orchestrator_site.celery import app

    # Celery reads CELERY_BROKER_URL from the environment before its configuration
    if url is None:
        os.environ.pop("CELERY_BROKER_URL", None)
        if "CELERY_BROKER_URL" in _SESSION_ENV:
            os.environ["CELERY_BROKER_URL"] = _SESSION_ENV["CELERY_BROKER_URL"]
        url = settings.CELERY_BROKER_URL
    else:
        os.environ["CELERY_BROKER_URL"] = url
    app.conf.broker_url, app.conf.broker_transport_options = url, transport_options
    # the pools were made for the old broker: forget them (not close them, kombu keeps them in a
    # registry and would hand a closed one out again), and Celery makes new ones on the next publish
    app._pool = None
    app.amqp._producer_pool = None


def _forget_queue(queue: str) -> None:
    """Purge the queue on the session's broker, and on Redis the messages of killed workers still
    waiting out their visibility timeout, so nothing is redelivered to the queue later."""
    from orchestrator_site.celery import app

    with app.connection_for_write() as conn:
        channel = conn.default_channel
        channel.queue_purge(queue)
        if conn.transport.driver_type != "redis":
            return
        client = channel.client
        for tag, body in client.hscan_iter(channel.unacked_key):
            if json.loads(body)[2] == queue:  # [message, exchange, routing key]
                client.hdel(channel.unacked_key, tag)
                client.zrem(channel.unacked_index_key, tag)
        client.delete(f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")


class Deployment:
    """Workers, a beat and perhaps a Redis of one test's own, on the test's own queue."""

    def __init__(self, queue: str, database_url: str, directory: Path):
        self.queue, self.directory = queue, directory
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "DAGWRIGHT_QUEUE": queue,
            "DAGWRIGHT_SIM_LATENCY": "fixed:0",
            "DAGWRIGHT_SIM_FAULTS": "{}",
            "DB_CONN_MAX_AGE": "0",
            "DAGWRIGHT_BREAKER_KEY_PREFIX": BREAKER_PREFIX,
        }
        self.workers: list[Worker] = []
        self.beat: Process | None = None
        self.redis: RedisServer | None = None
        self._started = 0
        self.restarts = 0
        self._supervised: list[Worker] = []
        self._closing = threading.Event()
        self._supervisor: threading.Thread | None = None
        self.held: HeldChatServer | None = None

    def configure(self, **env: Any) -> None:
        """Environment for the processes started from now on."""
        self.env.update({name: str(value) for name, value in env.items()})

    def supervise(self, worker: Worker) -> None:
        """Start a new worker whenever this one exits, as docker compose's restart policy does
        (the consumer watchdog stops a worker that no longer consumes, and counts on that)."""
        self._supervised.append(worker)
        if self._supervisor is None:
            self._supervisor = threading.Thread(target=self._supervise_loop, daemon=True)
            self._supervisor.start()

    def _supervise_loop(self) -> None:
        # time.sleep, not Event.wait(timeout): under faketime (libfaketime 0.9.10) a timed wait that
        # nobody ends never returns, and the suite must pass with its clock pinned to any minute.
        while not self._closing.is_set():
            time.sleep(0.5)
            for index, worker in enumerate(self._supervised):
                if not worker.alive() and not self._closing.is_set():
                    self.restarts += 1
                    self._supervised[index] = self.start_worker(int(worker.cmd[worker.cmd.index("-c") + 1]))

    def start_worker(self, concurrency: int = 2) -> Worker:
        self._started += 1
        name = f"{self.queue}-{self._started}"
        cmd = [sys.executable, "-m", "celery", "-A", "orchestrator_site", "worker", "-Q", self.queue, "-c", str(concurrency), "-P", "prefork",
               "--without-mingle", "--without-gossip", "--without-heartbeat", "-l", "info", "-n", f"{name}@%h"]  # fmt: skip
        worker = Worker(name, cmd, dict(self.env), self.directory / f"worker-{self._started}.log")
        worker.start(ready=" ready.")
        self.workers.append(worker)
        return worker

    def live_workers(self) -> list[Worker]:
        return [w for w in self.workers if w.alive()]

    def start_beat(self) -> Process:
        """``celery beat`` sending ``runs.sweep`` every DAGWRIGHT_SWEEP_SECONDS to this queue."""
        schedule = self.directory / "beat-schedule"
        cmd = [sys.executable, "-m", "celery", "-A", "orchestrator_site", "beat", "-s", str(schedule), "--pidfile=", "-l", "info"]
        self.beat = Process("beat", cmd, dict(self.env), self.directory / "beat.log")
        self.beat.start(ready="Sending due task sweep")
        return self.beat

    def start_redis(self, *, breaker_store: bool) -> RedisServer:
        """A Redis of this test's own as the broker of every process, this one's included, and
        (``breaker_store``) as the store of the circuit breakers too."""
        self.redis = RedisServer(self.directory)
        self.redis.start()
        self.configure(CELERY_BROKER_URL=self.redis.url(0), REDIS_URL=self.redis.url(1) if breaker_store else "")
        _use_broker(self.redis.url(0), {})
        from orchestrator_site.celery import app

        assert f":{self.redis.port}/" in app.connection_for_write().as_uri(), "this process would still publish to the session's broker"
        return self.redis

    def serve_held_model(self) -> HeldChatServer:
        """Models ``held-*`` whose calls the test releases, for the processes started from now on."""
        self.held = HeldChatServer().__enter__()
        self.configure(DAGWRIGHT_PROVIDERS=self.held.providers())
        return self.held

    def holder_of(self, call: Call) -> tuple[Worker, int] | None:
        """The live worker and the pool child of it that are in the middle of ``call``."""
        for worker in self.live_workers():
            children = worker.children()
            child = call.process(among=children)
            if child is not None:
                return worker, child
        return None

    def worker_log_count(self, text: str) -> int:
        """How many times ``text`` appears in the logs of every worker this test started."""
        return sum(w.log.read_text(errors="replace").count(text) for w in self.workers)

    def logs(self) -> str:
        return "\n".join(f"--- {p.log.name}\n{p.tail(1500)}" for p in [*self.workers, *([self.beat] if self.beat else [])])

    def close(self) -> None:
        self._closing.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=5)
        for process in [*self.workers, *([self.beat] if self.beat else [])]:
            process.kill_group()
        if self.held is not None:
            self.held.__exit__(None, None, None)
        if self.redis is not None:
            self.redis.kill()
            _use_broker(None, getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}))
        else:
            _forget_queue(self.queue)


@pytest.fixture
def deployment(request, test_database_url: str, test_queue: str) -> Iterator[Deployment]:
    """This test's processes, on a queue of its own; every one of them killed at the end."""
    from orchestrator_site.celery import app

    queue = f"{test_queue}-rel-{uuid.uuid4().hex[:6]}"
    directory = Path(settings.VAR_DIR) / "reliability" / f"{request.node.name[:60]}-{queue[-6:]}"
    directory.mkdir(parents=True, exist_ok=True)
    app.conf.task_default_queue = queue
    deployment = Deployment(queue, test_database_url, directory)
    try:
        yield deployment
    finally:
        deployment.close()
        app.conf.task_default_queue = test_queue


def wait_for_runs(run_ids: list, deployment: Deployment, timeout: float) -> float:
    """Wait until every run is finished; returns when the last one did (monotonic seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Run.objects.filter(pk__in=run_ids, status__in=ACTIVE_RUN_STATUSES).exists():
            return time.monotonic()
        time.sleep(0.1)
    stuck = Run.objects.filter(pk__in=run_ids, status__in=ACTIVE_RUN_STATUSES)
    states = {str(r.pk)[:8]: list(r.node_runs.values_list("node_id", "status", "attempt")) for r in stuck[:5]}
    raise AssertionError(f"{stuck.count()} of {len(run_ids)} runs unfinished after {timeout} s: {states}\n{deployment.logs()}")


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    """Poll ``condition`` until it returns something true, and return that; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.05)
    return found
