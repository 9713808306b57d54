"""Leases on running nodes, kept alive by one heartbeat thread per worker process.

A claim takes a lease (``lease_expires_at``) for ``DAGWRIGHT_LEASE_SECONDS``. While the node
executes, the heartbeat renews it every third of that time, under the same compare-and-set as
every write (status running, same attempt), so a node slower than the lease stays owned, and a
worker that dies stops renewing: the sweeper then sees the lease expire and recovers the node.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from .models import NodeRun, NodeStatus

log = logging.getLogger(__name__)


def lease_seconds() -> float:
    return float(settings.DAGWRIGHT_LEASE_SECONDS)


def lease_until(now: datetime | None = None) -> datetime:
    return (now or timezone.now()) + timedelta(seconds=lease_seconds())


class _Heartbeat:
    """One daemon thread renewing the leases of every claim this process holds. It wakes often
    (at most every second) and renews a claim once a third of its lease has passed."""

    def __init__(self) -> None:
        self._held: dict[int, tuple[int, float]] = {}  # node run id -> (attempt, renewed at)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def hold(self, node_run_id: int, attempt: int) -> None:
        with self._lock:
            self._held[node_run_id] = (attempt, time.monotonic())
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="dagwright-lease-heartbeat", daemon=True)
                self._thread.start()

    def release(self, node_run_id: int) -> None:
        with self._lock:
            self._held.pop(node_run_id, None)

    def _due(self) -> list[tuple[int, int]]:
        now, every = time.monotonic(), lease_seconds() / 3
        with self._lock:
            due = [(pk, attempt) for pk, (attempt, renewed) in self._held.items() if now - renewed >= every]
            for pk, attempt in due:
                self._held[pk] = (attempt, now)
        return due

    def _run(self) -> None:
        while True:
            time.sleep(min(1.0, lease_seconds() / 6))
            due = self._due()
            if not due:
                continue
            try:
                for node_run_id, attempt in due:
                    renewed = NodeRun.objects.filter(pk=node_run_id, status=NodeStatus.RUNNING, attempt=attempt).update(lease_expires_at=lease_until())
                    if not renewed:
                        log.warning("node run %s attempt %s lost its lease", node_run_id, attempt)
            except Exception:  # a database hiccup must not kill the heartbeat; the next beat retries
                log.exception("lease heartbeat failed")
            finally:
                connection.close()


_heartbeat = _Heartbeat()


@contextmanager
def lease_kept(node_run_id: int, attempt: int) -> Iterator[None]:
    """Renew the lease of this claim for as long as the block runs."""
    _heartbeat.hold(node_run_id, attempt)
    try:
        yield
    finally:
        _heartbeat.release(node_run_id)
