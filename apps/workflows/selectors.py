from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from django.db.models import F, JSONField, Max, OuterRef, QuerySet, Subquery

from apps.audit.models import AuditEntry
from apps.engine import definition
from apps.engine.diff import DefinitionDiff, definition_diff
from apps.engine.graph import Plan

from .models import Workflow, WorkflowNotPublished, WorkflowVersion


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
    """A workflow with its published version (without its definition) and who published it."""
    return Workflow.objects.select_related("published_version", "published_by").defer("published_version__definition").get(name=name)


def version_get(*, workflow: Workflow, number: int | None = None) -> WorkflowVersion:
    """The given version of a workflow or, without a number, its published version.

    Raises WorkflowVersion.DoesNotExist for an unknown number, WorkflowNotPublished when no
    number is given and nothing is published.
    """
    if number is None:
        if workflow.published_version_id is None:
            raise WorkflowNotPublished(workflow)
        return workflow.versions.get(pk=workflow.published_version_id)
    return workflow.versions.get(number=number)


def version_latest(*, workflow: Workflow) -> WorkflowVersion | None:
    """The newest version, published or not (an editor opens it: it may be a draft)."""
    return workflow.versions.order_by("-number").first()


def workflow_list_with_published() -> QuerySet[Workflow]:
    """Workflows annotated with ``published_number``, ``published_definition`` and
    ``latest_number``; one query whatever the number of workflows (the console's workflow list)."""
    # .order_by(): the Meta ordering joins workflows into the subquery, which would shadow the outer row
    published = WorkflowVersion.objects.filter(pk=OuterRef("published_version_id")).order_by()
    return workflow_list().annotate(
        published_number=F("published_version__number"),
        published_definition=Subquery(published.values("definition")[:1], output_field=JSONField()),
        latest_number=Max("versions__number"),
    )


def workflow_list_with_numbers() -> QuerySet[Workflow]:
    """Workflows with ``latest_number`` and ``published_number`` only: no definitions carried
    (they are up to 256 KiB each)."""
    return workflow_list().select_related("published_by").annotate(latest_number=Max("versions__number"), published_number=F("published_version__number"))


def version_list(*, workflow: Workflow) -> QuerySet[WorkflowVersion]:
    """A workflow's versions, newest first, without their (possibly large) definitions."""
    return workflow.versions.select_related("created_by").defer("definition").order_by("-number")


def version_diff(*, workflow: Workflow, before: int, after: int) -> DefinitionDiff:
    """The structured and unified diff from version ``before`` to version ``after`` (any order:
    rolling back is a diff from newer to older). Raises WorkflowVersion.DoesNotExist."""
    definitions = dict(workflow.versions.filter(number__in=[before, after]).values_list("number", "definition"))
    missing = [n for n in (before, after) if n not in definitions]
    if missing:
        raise WorkflowVersion.DoesNotExist(f"workflow '{workflow.name}' has no version {missing[0]}")
    return definition_diff(definitions[before], definitions[after], before_label=f"{workflow.name} v{before}", after_label=f"{workflow.name} v{after}")


PUBLISH_EVENTS = ("published", "rolled_back")


@dataclass(frozen=True)
class Publication:
    """One move of the published pointer, as the audit trail recorded it."""

    version: int
    event: str  # "published" or "rolled_back"
    actor: str
    at: datetime


def version_publications(*, workflow: Workflow) -> dict[int, Publication]:
    """The last time each version was published (or rolled back to), by version number; one query
    on the audit trail, whatever the number of versions. A version never published is absent."""
    entries = AuditEntry.objects.filter(workflow_name=workflow.name, event__in=PUBLISH_EVENTS).order_by("seq")
    last: dict[int, Publication] = {}
    for event, actor, at, after in entries.values_list("event", "actor", "at", "after_json"):
        number = json.loads(after).get("version") if after else None
        if isinstance(number, int):
            last[number] = Publication(number, event, actor, at)
    return last
