"""The Celery app. Messages carry ids only; the database holds every state."""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import task_prerun, worker_init, worker_process_init

from . import broker, telemetry

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator_site.settings")
broker.install()  # filesystem:// (the embedded default) with atomic writes

app = Celery("dagwright")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.task(name="runs.probe", ignore_result=True)
def probe() -> None:
    """The consumer watchdog's probe (orchestrator_site.watchdog): receiving it is the point."""


from . import watchdog  # noqa: E402, F401  (connects the watchdog to the worker's signals)


@task_prerun.connect
def _close_old_connections(**kwargs: object) -> None:
    """What Django does at each request: drop a connection that broke or outlived CONN_MAX_AGE.
    Workers reuse connections between tasks (CELERY_DB_REUSE_MAX), so this is the health check."""
    from django.db import close_old_connections

    close_old_connections()


@worker_init.connect
def _telemetry_in_worker(sender: object = None, **kwargs: object) -> None:
    """Thread and solo pools run tasks in this process; a prefork pool's children set up their own
    (``worker_process_init``): the SDK's export threads do not survive a fork."""
    from celery.concurrency import get_implementation
    from celery.concurrency.prefork import TaskPool as PreforkPool

    pool = get_implementation(getattr(sender, "pool_cls", None) or "prefork")
    if not (isinstance(pool, type) and issubclass(pool, PreforkPool)):
        telemetry.setup(service_name=telemetry.WORKER_SERVICE)


@worker_process_init.connect
def _telemetry_in_pool_process(**kwargs: object) -> None:
    telemetry.setup(service_name=telemetry.WORKER_SERVICE)
