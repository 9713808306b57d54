"""The consumer watchdog's verdict (orchestrator_site.watchdog), on a clock of the test's own;
tests/reliability/test_watchdog.py shows it on a real worker and Redis."""

from __future__ import annotations

import pytest

from orchestrator_site import watchdog


class Clock:
    """Drives a ConsumerWatchdog through time: probes sent, probes that arrive."""

    def __init__(self, dog: watchdog.ConsumerWatchdog, start: float = 1000.0):
        self.dog, self.now = dog, start
        watchdog._last_arrival[0] = start

    def probe_sent(self) -> None:
        self.dog.last_sent = self.now
        if self.dog.unanswered_since is None:
            self.dog.unanswered_since = self.now

    def probe_arrived(self) -> None:
        watchdog._last_arrival[0] = self.now

    def tick(self, seconds: float) -> bool:
        self.now += seconds
        return self.dog.stuck(self.now)


@pytest.fixture
def clock(settings) -> Clock:
    settings.DAGWRIGHT_WATCHDOG_SECONDS, settings.DAGWRIGHT_WATCHDOG_TIMEOUT_SECONDS, settings.DAGWRIGHT_WATCHDOG_GRACE_SECONDS = 1, 10, 2
    return Clock(watchdog.ConsumerWatchdog(app=None, hostname="w1@host", concurrency=2))


def test_a_consumer_whose_probes_arrive_is_never_judged_stuck(clock):
    for _ in range(60):
        clock.probe_sent()
        assert not clock.tick(0.01)
        clock.probe_arrived()
        assert not clock.tick(1)


def test_one_lost_probe_is_forgiven_when_the_next_one_arrives(clock):
    clock.probe_sent()  # lost: a Redis restart while it was in flight
    for _ in range(8):
        assert not clock.tick(1)
        clock.probe_sent()
    clock.probe_arrived()
    assert not clock.tick(5)
    assert clock.dog.unanswered_since is None


def test_a_consumer_that_receives_nothing_is_judged_stuck_after_the_timeout(clock):
    stuck = []
    for _ in range(15):
        clock.probe_sent()
        stuck.append(clock.tick(1))
    assert stuck.index(True) == 10  # the first probe is over 10 s old, and a slot has been free for 2 s
