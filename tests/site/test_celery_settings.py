"""The Celery settings that defend against the known traps of Celery on Redis (issue 3)."""

from __future__ import annotations

from django.conf import settings

from orchestrator_site.celery import app


def test_a_killed_worker_never_acknowledges_its_message():
    assert app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is True
    assert app.conf.worker_prefetch_multiplier == 1


def test_no_countdown_outlives_the_visibility_timeout():
    assert settings.DAGWRIGHT_MAX_COUNTDOWN_SECONDS <= settings.CELERY_VISIBILITY_TIMEOUT / 2


def test_the_sweeper_runs_on_beat_and_a_late_sweep_still_runs():
    sweep = app.conf.beat_schedule["sweep"]
    assert sweep["task"] == "runs.sweep"
    assert sweep["schedule"] == settings.DAGWRIGHT_SWEEP_SECONDS
    assert sweep["options"]["expires"] >= 10 * settings.DAGWRIGHT_SWEEP_SECONDS


def test_workers_reuse_database_connections():
    assert app.conf.get("CELERY_DB_REUSE_MAX")
