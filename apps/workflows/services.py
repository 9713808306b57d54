"""Saving, validating and publishing workflow definitions.

A save creates (or reuses, by content hash) an immutable version and publishes it only when
asked; publishing moves the workflow's pointer, and rolling back is publishing an older version.
Both lock the workflow's row, so publishes serialise; a caller that says which version it saw
published (``expected_published``) is refused with ``PublishConflict`` when someone published
since. Saves that add a version and every publish are appended to the audit trail in the same
transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.audit.audit import audit_append
from apps.engine import definition
from apps.engine.canonical import content_hash
from apps.engine.errors import DefinitionError, Problem
from apps.engine.graph import Plan
from apps.engine.sourcemap import Location, SourceSyntaxError, source_map
from apps.engine.spec import WorkflowSpec
from apps.providers.registry import model_served

from .models import Workflow, WorkflowVersion
from .selectors import version_publications

NOTHING_PUBLISHED = 0  # as ``expected_published``: "I saw no published version"


class PublishConflict(Exception):
    """Someone published another version since the caller looked (``expected_published`` is stale)."""

    def __init__(self, workflow: Workflow, expected: int | None):
        self.workflow, self.expected = workflow, expected
        self.published = published_number(workflow)
        self.published_by = workflow.published_by.get_username() if workflow.published_by else None
        self.published_at: datetime | None = workflow.published_at
        seen = f"version {expected}" if expected else "no version"
        now = f"version {self.published}" if self.published else "no version"
        by = f" by {self.published_by}" if self.published_by else ""
        at = f" at {self.published_at.isoformat()}" if self.published_at else ""
        super().__init__(f"workflow '{workflow.name}': {now} is published{by}{at}, not {seen} as expected")


def published_number(workflow: Workflow) -> int | None:
    """The published version's number (a query unless ``published_version`` was selected with the workflow)."""
    return workflow.published_version.number if workflow.published_version_id else None


def definition_parse_text(*, text: str) -> dict[str, Any]:
    """Read a YAML or JSON definition (JSON is YAML) into plain data; raises DefinitionError."""
    if len(text.encode()) > definition.MAX_DEFINITION_BYTES:
        raise DefinitionError([Problem("", f"definition is over the limit of {definition.MAX_DEFINITION_BYTES} bytes")])
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DefinitionError([Problem("", f"not valid YAML or JSON: {exc}")]) from None
    except RecursionError:  # the parser recurses once per level: "[[[[...]]]]" overflows the stack
        raise DefinitionError([Problem("", "not valid YAML or JSON: nested too deeply")]) from None
    if not isinstance(data, dict):
        raise DefinitionError([Problem("", "a definition must be a mapping")])
    return data


RESERVED_NAMES = frozenset({"new"})  # /workflows/new/ is the editor's page: a workflow of that name would have none


def definition_check(*, spec: WorkflowSpec | dict[str, Any]) -> Plan:
    """Everything a definition must pass to be saved: the engine's checks, then that a configured
    provider serves each model it names (``apps.providers.registry.model_served``). Raises
    DefinitionError with every problem at once."""
    plan = definition.load(spec) if isinstance(spec, dict) else definition.check_spec(spec)
    problems = definition.model_problems(plan.spec, model_served)
    if plan.spec.name in RESERVED_NAMES:
        problems.insert(0, Problem("/name", f"'{plan.spec.name}' is reserved: /workflows/{plan.spec.name}/ is a page of its own, choose another name"))
    if problems:
        raise DefinitionError(problems)
    return plan


@dataclass(frozen=True)
class LocatedProblem:
    pointer: str
    message: str
    location: Location | None  # None: the text could not be read at all

    def as_dict(self) -> dict[str, Any]:
        where = self.location.as_dict() if self.location else {"line": None, "column": None}
        return {"pointer": self.pointer, "detail": self.message, **where}


@dataclass(frozen=True)
class Validation:
    """What ``definition_validate`` found: the problems, each at its line and column; the plan when there are none."""

    problems: list[LocatedProblem]
    plan: Plan | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def definition_validate(*, text: str) -> Validation:
    """Check a YAML or JSON text as a save would, without saving; locate each problem in the text.

    Syntax errors come at the parser's line and column; every other problem at its JSON pointer's
    place in the text (``apps.engine.sourcemap``).
    """
    if len(text.encode()) > definition.MAX_DEFINITION_BYTES:
        return Validation([LocatedProblem("", f"definition is over the limit of {definition.MAX_DEFINITION_BYTES} bytes", None)])
    try:
        where = source_map(text)
    except SourceSyntaxError as exc:
        at = Location(exc.line, exc.column, exc.line, exc.column, exc.offset, exc.offset)
        return Validation([LocatedProblem("", f"not valid YAML or JSON: {exc.message}", at)])
    try:
        plan = definition_check(spec=definition_parse_text(text=text))
    except DefinitionError as exc:
        return Validation([LocatedProblem(p.pointer, p.message, where.locate(p.pointer)) for p in exc.problems])
    return Validation([], plan)


def _user(user: Any) -> Any:
    return user if getattr(user, "is_authenticated", False) else None


def workflow_save(
    *,
    spec: WorkflowSpec | dict[str, Any],
    user: Any = None,
    publish: bool = False,
    expected_published: int | None = None,
    check_models: bool = True,
) -> tuple[WorkflowVersion, bool]:
    """Create the workflow or a new version of it; an identical definition reuses its version.
    Publishes the version only with ``publish`` (reusing an older version and publishing it is
    a rollback).

    ``expected_published`` is the version number the caller saw published (``NOTHING_PUBLISHED``,
    0, for none; None: do not check): if another is published by now, PublishConflict and
    nothing is written. ``check_models`` False skips the provider check, for definitions meant to
    fail at run time (tests of that). Returns ``(version, created)``; raises DefinitionError
    before writing anything. Locks the workflow's row.
    """
    plan = definition_check(spec=spec) if check_models else definition.load(spec) if isinstance(spec, dict) else definition.check_spec(spec)
    data = definition.dump(plan.spec)
    digest = content_hash(data)  # what ``definition.spec_hash`` computes, without dumping the spec again
    user = _user(user)
    for _ in range(3):  # two saves creating the same new workflow at once: the loser retries and finds it
        try:
            with transaction.atomic():
                workflow = _workflow_locked(plan.spec, user)
                _check_expected(workflow, expected_published)
                version, created = _version_for(workflow, plan.spec, data, digest, user)
                if publish:
                    _publish(workflow, version, user)
                return version, created
        except IntegrityError:
            continue
    raise DefinitionError([Problem("", "the workflow is being changed by someone else; try again")])


def _workflow_locked(spec: WorkflowSpec, user: Any) -> Workflow:
    workflow, created = Workflow.objects.get_or_create(name=spec.name, defaults={"description": spec.description, "created_by": user})
    if created:
        return workflow
    return _lock(workflow.pk)


def _lock(pk: int) -> Workflow:
    """The workflow, its row locked, read after the lock with its published version and publisher.

    The row lock serialises every save and publish of this workflow (version numbers, the
    pointer). The related rows are read by a second statement, once the lock is held: joined to
    the locking one, PostgreSQL would re-read only the locked row after waiting for a concurrent
    publish, and could pair the new pointer with no (or the old) version.
    """
    Workflow.objects.select_for_update().filter(pk=pk).values_list("pk", flat=True).get()
    return Workflow.objects.select_related("published_version", "published_by").get(pk=pk)


def _check_expected(workflow: Workflow, expected: int | None) -> None:
    if expected is not None and (published_number(workflow) or NOTHING_PUBLISHED) != expected:
        raise PublishConflict(workflow, expected)


def _version_for(workflow: Workflow, spec: WorkflowSpec, data: dict[str, Any], digest: str, user: Any) -> tuple[WorkflowVersion, bool]:
    existing = workflow.versions.filter(content_hash=digest).first()
    if existing:
        return existing, False
    latest = workflow.versions.order_by("-number").values_list("number", flat=True).first() or 0
    version = WorkflowVersion.objects.create(workflow=workflow, number=latest + 1, content_hash=digest, definition=data, created_by=user)
    if workflow.description != spec.description:
        Workflow.objects.filter(pk=workflow.pk).update(description=spec.description)
    audit_append(event="saved", workflow=workflow.name, actor=user, after={"version": version.number, "content_hash": digest})
    return version, True


def workflow_load_file(*, path: Path, user: Any = None, publish: bool = False) -> tuple[WorkflowVersion, bool]:
    """Save the definition in a YAML or JSON file (``workflow_load``, ``load_demos``); raises
    OSError, DefinitionError."""
    return workflow_save(spec=definition_parse_text(text=path.read_text(encoding="utf-8")), user=user, publish=publish)


def workflow_publish(*, workflow: Workflow, version_number: int, user: Any = None, expected_published: int | None = None) -> WorkflowVersion:
    """Publish one of the workflow's versions; an older one than the published is a rollback.

    Takes a row lock on the workflow, so concurrent publishes serialise: with the same
    ``expected_published`` exactly one succeeds, the others raise PublishConflict. Publishing the
    version already published changes nothing. Raises WorkflowVersion.DoesNotExist for an unknown
    number.
    """
    with transaction.atomic():
        locked = _lock(workflow.pk)
        _check_expected(locked, expected_published)
        version = locked.versions.get(number=version_number)
        _publish(locked, version, _user(user))
    workflow.refresh_from_db()
    return version


def _publish(workflow: Workflow, version: WorkflowVersion, user: Any) -> None:
    """Move the pointer (the caller holds the workflow's lock) and audit the move."""
    before = published_number(workflow)
    if before == version.number:
        return
    now = timezone.now()
    Workflow.objects.filter(pk=workflow.pk).update(published_version=version, published_at=now, published_by=user)
    workflow.published_version, workflow.published_at, workflow.published_by = version, now, user
    # A rollback returns to a version that was published before; a draft saved before a colleague's
    # publish and published over it afterwards is a publish, whatever its number.
    returning = before is not None and version.number < before and version.number in version_publications(workflow=workflow)
    event = "rolled_back" if returning else "published"
    after = {"version": version.number, "content_hash": version.content_hash}
    audit_append(event=event, workflow=workflow.name, actor=user, before={"version": before} if before else None, after=after)
