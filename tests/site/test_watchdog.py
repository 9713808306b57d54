"""The consumer watchdog's verdict (orchestrator_site.watchdog) through its real paths: its probes go
to the worker's direct queue on an in-memory broker, reach the watchdog through the ``task_received``
signal as a consumer reports them, and pool slots are taken in ``celery.worker.state`` as a worker
takes them. Only the clock is the test's. tests/reliability/test_watchdog.py shows it on a real
worker and Redis."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import pytest
from celery import Celery
from celery.signals import task_received
from celery.utils.nodenames import worker_direct
from celery.worker import state
from celery.worker.request import Request
from kombu import Queue

import apps.runs.tasks  # noqa: F401  (registers the node task on every Celery app, this test's too)
from orchestrator_site import watchdog

INTERVAL, TIMEOUT, GRACE, CONCURRENCY = 1, 10, 2, 2
NODE_TASK = "runs.execute_node"  # what holds a pool slot: a node being executed


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class Worker:
    """What surrounds a ConsumerWatchdog in a worker: its direct queue, its consumer, its pool slots."""

    def __init__(self, app: Celery, hostname: str):
        self.app, self.clock = app, Clock()
        self.dog = watchdog.ConsumerWatchdog(app, hostname, CONCURRENCY, clock=self.clock)
        self.direct, self.work = worker_direct(hostname), Queue(f"work-{hostname}")
        self.slots: list[Request] = []  # state.reserved_requests holds them weakly
        with app.connection_for_write() as connection:
            for queue in (self.direct, self.work):
                queue(connection.default_channel).declare()

    def wait(self, seconds: float) -> bool:
        """``seconds`` pass and the watchdog has a look, as its thread does: True when it judges the consumer stuck."""
        self.clock.now += seconds
        return self.dog.check()

    def consume(self) -> int:
        """The consumer takes every probe waiting on the direct queue and reports it, as a worker does."""
        received = self._take(self.direct)
        for request in received:
            task_received.send(sender=None, request=request)
        return len(received)

    def lose(self) -> int:
        """The probes waiting on the direct queue vanish unreported (a Redis restart while they were in flight)."""
        return len(self._take(self.direct))

    def occupy(self, slots: int) -> None:
        """Nodes start, ``slots`` of them, each holding a pool slot until it finishes."""
        with self.app.connection_for_write() as connection:
            for _ in range(slots):
                self.app.send_task(NODE_TASK, args=[0], queue=self.work, connection=connection)
        for request in self._take(self.work):
            state.task_reserved(request)
            self.slots.append(request)

    def finish_one(self) -> None:
        state.task_ready(self.slots.pop())

    def _take(self, queue: Queue) -> list[Request]:
        taken = []
        with self.app.connection_for_write() as connection:
            while (message := queue(connection.default_channel).get(no_ack=True)) is not None:
                taken.append(Request(message, app=self.app))
        return taken


@pytest.fixture(autouse=True)
def fast_watchdog(settings, monkeypatch) -> None:
    settings.DAGWRIGHT_WATCHDOG_SECONDS = INTERVAL
    settings.DAGWRIGHT_WATCHDOG_TIMEOUT_SECONDS = TIMEOUT
    settings.DAGWRIGHT_WATCHDOG_GRACE_SECONDS = GRACE
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)  # Celery prefers it to the broker an app names


@pytest.fixture
def worker() -> Iterator[Worker]:
    app = Celery("watchdog-test", broker="memory://", set_as_current=False)
    worker = Worker(app, f"w-{uuid.uuid4().hex[:8]}@host")
    assert len(state.reserved_requests) == 0, "another test left pool slots taken"
    yield worker
    while worker.slots:
        worker.finish_one()


def test_a_probe_goes_to_the_workers_own_direct_queue_once_per_interval(worker):
    sent = []
    for _ in range(8):
        assert not worker.wait(0.5)
        sent.append(worker.lose())

    assert sent == [1, 0, 1, 0, 1, 0, 1, 0]  # the first look sends one, then one every second


def test_a_consumer_whose_probes_arrive_is_never_judged_stuck(worker):
    for _ in range(60):
        assert not worker.wait(1)
        assert worker.consume() == 1


def test_a_consumer_that_receives_nothing_is_judged_stuck_after_the_timeout(worker):
    stuck = [worker.wait(1) for _ in range(15)]

    # the first probe went out on the first look; 11 looks later it is over TIMEOUT old, the slots free all along
    assert stuck.index(True) == 11
    assert worker.lose() == 11  # every look until then sent one, and none was received


def test_one_lost_probe_is_forgiven_when_the_next_one_arrives(worker):
    assert not worker.wait(1)
    assert worker.lose() == 1
    for _ in range(2 * TIMEOUT):  # well past the lost probe's timeout
        assert not worker.wait(1)
        assert worker.consume() == 1  # the next probes arrive


def test_a_worker_whose_slots_are_all_busy_is_never_judged_stuck_however_old_the_probe(worker):
    worker.occupy(CONCURRENCY)

    stuck = [worker.wait(1) for _ in range(1000)]

    assert not any(stuck)
    assert worker.dog.unanswered_since == 1001.0  # the first probe, a thousand seconds old, never arrived
    assert worker.lose() == 1000


def test_a_busy_worker_is_judged_stuck_only_grace_seconds_after_a_slot_became_free(worker):
    worker.occupy(CONCURRENCY)
    for _ in range(100):
        assert not worker.wait(1)
    worker.finish_one()

    verdicts = [worker.wait(0.5) for _ in range(8)]

    # the look 0.5 s after the node finished sees the slot free; the probe has gone unanswered for 100 s,
    # yet the verdict waits for the first look more than GRACE (2 s) after that one
    assert verdicts == [False, False, False, False, False, True, True, True]


def test_one_free_slot_of_several_is_enough_to_judge(worker):
    worker.occupy(CONCURRENCY - 1)

    stuck = [worker.wait(1) for _ in range(15)]

    assert stuck.index(True) == 11


def test_a_probe_that_cannot_be_sent_is_not_counted():
    with socket.socket() as closed:  # bound, never listening: connecting to it is refused
        closed.bind(("127.0.0.1", 0))
        app = Celery("watchdog-test", broker=f"redis://127.0.0.1:{closed.getsockname()[1]}/0", set_as_current=False)
        app.conf.broker_transport_options = {"max_retries": 0}  # refused at once, not after kombu's retries
        clock = Clock()
        dog = watchdog.ConsumerWatchdog(app, "w-away@host", CONCURRENCY, clock=clock)

        stuck = []
        for _ in range(3 * TIMEOUT):
            clock.now += 1
            stuck.append(dog.check())

    assert not any(stuck)
    assert dog.unanswered_since is None
    assert dog.last_sent == clock.now  # it kept trying
