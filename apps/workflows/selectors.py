from __future__ import annotations

from functools import lru_cache

from django.db.models import JSONField, Max, OuterRef, QuerySet, Subquery

from apps.engine import definition
from apps.engine.graph import Plan

from .models import Workflow, WorkflowVersion


@lru_cache(maxsize=256)
def _plan_cached(content_hash: str, version_id: int) -> Plan:
    return definition.load(WorkflowVersion.objects.values_list("definition", flat=True).get(pk=version_id))


def version_plan(*, version_id: int, content_hash: str) -> Plan:
    """The parsed plan of a version, cached per process.

    Keyed by the content hash too: a version's content never changes, but an id can be handed
    out again after a rolled-back transaction, and a stale plan must never be served for it.
    """
    return _plan_cached(content_hash, version_id)


def workflow_list() -> QuerySet[Workflow]:
    return Workflow.objects.order_by("name")


def workflow_get(*, name: str) -> Workflow:
    return Workflow.objects.get(name=name)


def version_get(*, workflow: Workflow, number: int | None = None) -> WorkflowVersion:
    """The given version of a workflow, or its latest."""
    versions = workflow.versions.all()
    if number is None:
        version = versions.order_by("-number").first()
        if version is None:
            raise WorkflowVersion.DoesNotExist(f"workflow '{workflow.name}' has no version")
        return version
    return versions.get(number=number)


def workflow_list_with_latest() -> QuerySet[Workflow]:
    """Workflows annotated with their latest version: ``latest_number`` and ``latest_definition``.

    One query whatever the number of workflows (the console's workflow list).
    """
    latest = WorkflowVersion.objects.filter(workflow=OuterRef("pk")).order_by("-number")
    return workflow_list().annotate(
        latest_number=Subquery(latest.values("number")[:1]),
        latest_definition=Subquery(latest.values("definition")[:1], output_field=JSONField()),
    )


def workflow_list_with_latest_number() -> QuerySet[Workflow]:
    """Workflows with ``latest_number`` only: no definitions carried (they are up to 256 KiB each)."""
    return workflow_list().annotate(latest_number=Max("versions__number"))


def version_list(*, workflow: Workflow) -> QuerySet[WorkflowVersion]:
    """A workflow's versions, newest first, without their (possibly large) definitions."""
    return workflow.versions.select_related("created_by").defer("definition").order_by("-number")
