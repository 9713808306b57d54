"""Celery tasks: thin. They take ids, call one service and return."""

from __future__ import annotations

from celery import shared_task

from . import services, sweeper


@shared_task(name="runs.execute_node", ignore_result=True)
def execute_node(node_run_id: int) -> None:
    services.node_run_execute(node_run_id=node_run_id)


@shared_task(name="runs.sweep", ignore_result=True)
def sweep() -> None:
    sweeper.sweep()
