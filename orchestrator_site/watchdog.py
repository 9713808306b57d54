"""The consumer watchdog: a worker that has stopped receiving messages stops, so that its
supervisor (docker compose's restart policy, systemd, ``bin/dev``) starts a fresh one.

Celery workers on Redis have been seen to stay up after a broker connection reset while no
longer consuming anything (celery/celery#8030, #9054, #10205, #10302). A worker in that state
is worse than a dead one: nothing notices it, and it may even take messages off the queue and
lose them. The sweeper sends lost nodes again, but only a worker that consumes can run them.

So every ``DAGWRIGHT_WATCHDOG_SECONDS`` the worker sends a probe task to its own direct queue
(``worker_direct``, which only it consumes). A healthy consumer with a free pool slot receives
it within milliseconds. When a probe sent more than ``DAGWRIGHT_WATCHDOG_TIMEOUT_SECONDS`` ago
has still not arrived although a pool slot has been free for ``DAGWRIGHT_WATCHDOG_GRACE_SECONDS``
(a worker whose slots are all busy legitimately receives nothing), the worker shuts down: warm
first (running nodes finish), then at once. A probe that cannot be sent (the broker is down)
proves nothing and is not counted; Celery reconnects by itself. Workers need node names of their
own (``-n``, unique per host by default): two sharing a name share a direct queue.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from celery.signals import task_received, worker_ready
from celery.utils.nodenames import worker_direct
from celery.worker import state
from django.conf import settings

log = logging.getLogger(__name__)
PROBE_TASK = "runs.probe"
_arrivals = [0]  # probes that reached this worker's consumer (only the consumer's thread counts them)


@task_received.connect
def _probe_arrived(sender: Any = None, request: Any = None, **kwargs: Any) -> None:
    if request is not None and request.name == PROBE_TASK:
        _arrivals[0] += 1


@worker_ready.connect
def _start(sender: Any = None, **kwargs: Any) -> None:
    if settings.DAGWRIGHT_WATCHDOG_SECONDS <= 0 or not settings.CELERY_WORKER_DIRECT:
        return
    watchdog = ConsumerWatchdog(sender.app, sender.hostname, int(sender.controller.concurrency))
    threading.Thread(target=watchdog.run, name="consumer-watchdog", daemon=True).start()


class ConsumerWatchdog:
    """Probes go out every interval whatever happened to the last one, so one lost probe (a
    Redis restart while it was in flight) is answered by the next; only when no probe has arrived
    since one sent ``timeout`` ago is the consumer judged stuck."""

    def __init__(self, app: Any, hostname: str, concurrency: int, clock: Callable[[], float] = time.monotonic):
        self.app, self.queue, self.concurrency, self.clock = app, worker_direct(hostname), concurrency, clock
        self.interval = settings.DAGWRIGHT_WATCHDOG_SECONDS
        self.timeout = settings.DAGWRIGHT_WATCHDOG_TIMEOUT_SECONDS
        self.grace = settings.DAGWRIGHT_WATCHDOG_GRACE_SECONDS
        self.unanswered_since: float | None = None  # when the oldest probe sent after the last arrival went out
        self.arrivals_then = 0  # the arrivals counted just before that probe went out: one more answers it
        self.last_sent = float("-inf")
        self.free_since: float | None = None

    def run(self) -> None:
        while True:
            time.sleep(min(1.0, self.interval))
            if self.check():
                self.stop()
                return

    def check(self) -> bool:
        """One look at the consumer: True when it is judged stuck, else a probe goes out if one is due."""
        now = self.clock()
        if self.stuck(now):
            return True
        if now - self.last_sent >= self.interval:
            self.send(now)
        return False

    def stuck(self, now: float) -> bool:
        busy = len(state.reserved_requests) >= self.concurrency
        self.free_since = None if busy else (now if self.free_since is None else self.free_since)
        if self.unanswered_since is not None and _arrivals[0] != self.arrivals_then:
            self.unanswered_since = None
        if self.unanswered_since is None or self.free_since is None:
            return False
        return now - self.unanswered_since > self.timeout and now - self.free_since > self.grace

    def send(self, now: float) -> None:
        self.last_sent = now
        arrivals = _arrivals[0]  # counted before sending: the probe may arrive before send_task returns
        try:
            with self.app.connection_for_write() as connection:
                self.app.send_task(PROBE_TASK, queue=self.queue, expires=2 * self.timeout, connection=connection, retry=False)
        except Exception as exc:  # the broker is away: Celery reconnects by itself, nothing to judge
            log.warning("consumer watchdog: probe not sent (%s)", exc)
            return
        if self.unanswered_since is None:
            self.unanswered_since, self.arrivals_then = now, arrivals

    def stop(self) -> None:
        assert self.unanswered_since is not None
        log.critical(
            "consumer watchdog: a probe sent %.0f s ago never arrived although a pool slot was free: "
            "this worker no longer consumes; stopping it so that its supervisor starts a fresh one",
            self.clock() - self.unanswered_since,
        )
        os.kill(os.getpid(), signal.SIGTERM)
        # A warm shutdown lets running nodes finish (their calls are paid for); should it hang,
        # give them up to a lease before leaving, after which the sweeper recovers them anyway.
        begun = time.monotonic()
        deadline = begun + max(self.grace, settings.DAGWRIGHT_LEASE_SECONDS)
        while time.monotonic() < deadline and (state.active_requests or time.monotonic() < begun + self.grace):
            time.sleep(1)
        log.critical("consumer watchdog: warm shutdown did not finish; exiting now")
        os._exit(70)
