"""The event log: every run and node signal becomes a RunEvent row in the same transaction."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from . import signals
from .models import RunEvent


@receiver(signals.run_created)
def _run_created(sender: Any, run, **kwargs: Any) -> None:
    RunEvent.objects.create(run=run, kind="run_created", data={"version": run.version_id})


@receiver(signals.run_started)
def _run_started(sender: Any, run, **kwargs: Any) -> None:
    RunEvent.objects.create(run=run, kind="run_started")


@receiver(signals.run_finished)
def _run_finished(sender: Any, run, status: str, error: str = "", **kwargs: Any) -> None:
    RunEvent.objects.create(run=run, kind="run_finished", data={"status": status, "error": error})


@receiver(signals.nodes_queued)
def _nodes_queued(sender: Any, run, node_ids: list[str], **kwargs: Any) -> None:
    RunEvent.objects.bulk_create([RunEvent(run=run, node_id=n, kind="node_queued") for n in node_ids])


@receiver(signals.nodes_skipped)
def _nodes_skipped(sender: Any, run, node_ids: list[str], reasons: dict[str, str], **kwargs: Any) -> None:
    RunEvent.objects.bulk_create([RunEvent(run=run, node_id=n, kind="node_skipped", data={"reason": reasons.get(n, "")}) for n in node_ids])


@receiver(signals.node_started)
def _node_started(sender: Any, run, node_run, **kwargs: Any) -> None:
    RunEvent.objects.create(run=run, node_id=node_run.node_id, kind="node_started", attempt=node_run.attempt)


@receiver(signals.node_succeeded)
def _node_succeeded(sender: Any, run, node_run, **kwargs: Any) -> None:
    RunEvent.objects.create(run=run, node_id=node_run.node_id, kind="node_succeeded", attempt=node_run.attempt)


@receiver(signals.node_failed)
def _node_failed(sender: Any, run, node_run, error: str, error_class: str, **kwargs: Any) -> None:
    data = {"error": error[:2000], "error_class": error_class}
    RunEvent.objects.create(run=run, node_id=node_run.node_id, kind="node_failed", attempt=node_run.attempt, data=data)


@receiver(signals.nodes_cancelled)
def _nodes_cancelled(sender: Any, run, node_ids: list[str], reason: str, **kwargs: Any) -> None:
    RunEvent.objects.bulk_create([RunEvent(run=run, node_id=n, kind="node_cancelled", data={"reason": reason}) for n in node_ids])


@receiver(signals.node_waiting_review)
def _node_waiting_review(sender: Any, run, node_run, **kwargs: Any) -> None:
    RunEvent.objects.create(run=run, node_id=node_run.node_id, kind="node_waiting_review", attempt=node_run.attempt)


@receiver(signals.node_reviewed)
def _node_reviewed(sender: Any, run, node_run, decision: dict, status: str, **kwargs: Any) -> None:
    data = {"decision": decision.get("decision"), "by": decision.get("decided_by"), "status": status}
    RunEvent.objects.create(run=run, node_id=node_run.node_id, kind="node_reviewed", attempt=node_run.attempt, data=data)


@receiver(signals.run_paused)
def _run_paused(sender: Any, run, **kwargs: Any) -> None:
    RunEvent.objects.create(run=run, kind="run_waiting_review")


@receiver(signals.run_resumed)
def _run_resumed(sender: Any, run, **kwargs: Any) -> None:
    RunEvent.objects.create(run=run, kind="run_resumed")


@receiver(signals.node_retrying)
def _node_retrying(sender: Any, run, node_run, error: str, error_class: str, next_attempt_at, deferred: bool, **kwargs: Any) -> None:
    data = {"error": error[:2000], "error_class": error_class, "next_attempt_at": next_attempt_at.isoformat(), "deferred": deferred}
    RunEvent.objects.create(run=run, node_id=node_run.node_id, kind="node_retrying", attempt=node_run.attempt, data=data)


@receiver(signals.node_lease_expired)
def _node_lease_expired(sender: Any, run, node_run, **kwargs: Any) -> None:
    RunEvent.objects.create(run=run, node_id=node_run.node_id, kind="node_lease_expired", attempt=node_run.attempt)


@receiver(signals.provider_response_reused)
def _provider_response_reused(sender: Any, run, node_run, call_id: int, **kwargs: Any) -> None:
    RunEvent.objects.create(run=run, node_id=node_run.node_id, kind="provider_response_reused", attempt=node_run.attempt, data={"call": call_id})


def _who(user: Any) -> str:
    return user.get_username() if getattr(user, "is_authenticated", False) else ""


@receiver(signals.run_cancelled)
def _run_cancelled(sender: Any, run, by: Any, **kwargs: Any) -> None:
    RunEvent.objects.create(run=run, kind="run_cancelled", data={"by": _who(by)})


@receiver(signals.run_retried)
def _run_retried(sender: Any, run, by: Any, node_ids: list[str], **kwargs: Any) -> None:
    RunEvent.objects.create(run=run, kind="run_retried", data={"by": _who(by), "nodes": node_ids})


@receiver(signals.run_rerun_created)
def _run_rerun_created(sender: Any, run, source, node_id: str, by: Any, reused: list[str], **kwargs: Any) -> None:
    data = {"by": _who(by), "source": str(source.pk), "node": node_id, "reused": reused}
    RunEvent.objects.create(run=run, kind="run_rerun", data=data)
