from __future__ import annotations

from typing import Any

import yaml
from django.db import IntegrityError, transaction

from apps.engine import definition
from apps.engine.canonical import content_hash
from apps.engine.errors import DefinitionError, Problem
from apps.engine.spec import WorkflowSpec

from .models import Workflow, WorkflowVersion


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


def workflow_save(*, spec: WorkflowSpec | dict[str, Any], user: Any = None) -> tuple[WorkflowVersion, bool]:
    """Create the workflow or a new version of it. An identical definition reuses its version.

    Returns ``(version, created)``. Raises DefinitionError before writing anything.
    """
    plan = definition.load(spec) if isinstance(spec, dict) else definition.check_spec(spec)
    data = definition.dump(plan.spec)
    digest = content_hash(data)  # what ``definition.spec_hash`` computes, without dumping the spec again
    user = user if getattr(user, "is_authenticated", False) else None
    for _ in range(3):  # two saves of a new version at once: the loser retries with the next number
        try:
            with transaction.atomic():
                return _save_version(plan.spec, data, digest, user)
        except IntegrityError:
            continue
    raise DefinitionError([Problem("", "the workflow is being changed by someone else; try again")])


def _save_version(spec: WorkflowSpec, data: dict[str, Any], digest: str, user: Any) -> tuple[WorkflowVersion, bool]:
    workflow, _ = Workflow.objects.get_or_create(name=spec.name, defaults={"description": spec.description, "created_by": user})
    existing = workflow.versions.filter(content_hash=digest).first()
    if existing:
        return existing, False
    latest = workflow.versions.order_by("-number").values_list("number", flat=True).first() or 0
    version = WorkflowVersion.objects.create(workflow=workflow, number=latest + 1, content_hash=digest, definition=data, created_by=user)
    if workflow.description != spec.description:
        Workflow.objects.filter(pk=workflow.pk).update(description=spec.description)
    return version, True
