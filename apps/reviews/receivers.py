"""The review app listens to the run's events, inside the transaction of each transition."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from apps.runs import signals

from .services import review_task_open, reviews_close_for_nodes


@receiver(signals.node_waiting_review)
def _open_review(sender: Any, run, node_run, node, **kwargs: Any) -> None:
    review_task_open(run=run, node_run=node_run, node=node)


@receiver(signals.nodes_cancelled)
def _close_reviews(sender: Any, run, node_ids: list[str], reason: str, **kwargs: Any) -> None:
    reviews_close_for_nodes(run=run, node_ids=node_ids, reason=reason)
