"""The audit trail, exported for admins and operators: CSV for people, JSON for programs.

Both stream the entries in ``seq`` order, all of them or those of one review (``?review=<id>``),
one run (``?run=<uuid>``) or one workflow's changes (``?workflow=<name>``). The JSON export keeps
every hashed field exactly as the chain hashes it (``at`` in UTC with microseconds,
``before_json``/``after_json`` as the canonical JSON text that was hashed), so a program can
re-verify the chain outside Dagwright: the hash covers ``HASHED_FIELDS``, plus ``workflow`` when
it is not empty (``apps.audit.audit.hashed_fields``). The CSV neutralises spreadsheet formulas in its
untrusted cells (comments and model output), so it is for reading, not for re-hashing.
"""

from __future__ import annotations

import csv
import json
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, QueryDict, StreamingHttpResponse
from django.utils import timezone
from django.views.decorators.http import require_safe

from apps.workflows.roles import OPERATORS, is_admin, user_groups

from .audit import hashed_value
from .models import AuditEntry

FIELDS = (
    *("seq", "at", "event", "actor", "actor_id", "client_address", "review_id", "run_id", "workflow"),
    *("decision", "comment", "before_json", "after_json", "prev_hash", "hash"),
)
# A cell starting with one of these is a formula to Excel, LibreOffice and Google Sheets (OWASP
# "CSV injection"); a leading quote makes it text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
ROWS_PER_CHUNK = 500


class BadFilter(ValueError):
    """A ``review`` or ``run`` filter that is not an id."""


def can_read_audit(user: Any) -> bool:
    """Admins and operators read the whole trail."""
    return is_admin(user) or OPERATORS in user_groups(user)


def audit_reader_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Sign-in first (anonymous people go to the login page), then admin or operator (403)."""

    @login_required
    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not can_read_audit(request.user):
            raise PermissionDenied("the audit trail is for admins and operators")
        return view(request, *args, **kwargs)

    return wrapped


@require_safe
@audit_reader_required
def audit_csv(request: HttpRequest) -> HttpResponse:
    return _export(request, "csv", "text/csv; charset=utf-8", _csv_lines)


@require_safe
@audit_reader_required
def audit_json(request: HttpRequest) -> HttpResponse:
    return _export(request, "json", "application/json", _json_lines)


def _export(request: HttpRequest, extension: str, content_type: str, lines: Callable[[QuerySet[AuditEntry]], Iterator[str]]) -> HttpResponse:
    try:
        entries, label = _filtered(request.GET)
    except BadFilter as exc:
        return HttpResponseBadRequest(str(exc), content_type="text/plain; charset=utf-8")
    response = StreamingHttpResponse(_chunks(lines(entries)), content_type=content_type)
    filename = f"dagwright-audit-{timezone.now():%Y-%m-%d}{label}.{extension}"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _filtered(params: QueryDict) -> tuple[QuerySet[AuditEntry], str]:
    """The entries the filters ask for, and a filename suffix naming the filters."""
    entries, label = AuditEntry.objects.order_by("seq"), ""
    if review := params.get("review"):
        if not re.fullmatch(r"[0-9]{1,18}", review):
            raise BadFilter("review must be a review id (a number)")
        entries, label = entries.filter(review_id=int(review)), f"{label}-review-{int(review)}"
    if run := params.get("run"):
        try:
            run_id = uuid.UUID(run)
        except ValueError:
            raise BadFilter("run must be a run id (a UUID)") from None
        entries, label = entries.filter(run_id=run_id), f"{label}-run-{run_id}"
    if workflow := params.get("workflow"):
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,99}", workflow):
            raise BadFilter("workflow must be a workflow's name")
        entries, label = entries.filter(workflow_name=workflow), f"{label}-workflow-{workflow}"
    return entries, label


def _chunks(lines: Iterable[str]) -> Iterator[str]:
    """Lines joined in chunks: one write per few hundred entries, not per entry."""
    batch: list[str] = []
    for line in lines:
        batch.append(line)
        if len(batch) >= ROWS_PER_CHUNK:
            yield "".join(batch)
            batch = []
    if batch:
        yield "".join(batch)


def _row(entry: AuditEntry) -> dict[str, Any]:
    """The entry's fields as its hash sees them."""
    return {name: entry.workflow_name if name == "workflow" else hashed_value(entry, name) for name in FIELDS}


def _json_lines(entries: QuerySet[AuditEntry]) -> Iterator[str]:
    """One JSON array, an entry per line."""
    yield "["
    separator = "\n"
    for entry in entries.iterator(chunk_size=ROWS_PER_CHUNK):
        yield separator + json.dumps(_row(entry), ensure_ascii=False)
        separator = ",\n"
    yield "\n]\n"


class _Echo:
    """A file for csv.writer that hands each formatted row back instead of storing it."""

    def write(self, value: str) -> str:
        return value


def _csv_lines(entries: QuerySet[AuditEntry]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(FIELDS)
    for entry in entries.iterator(chunk_size=ROWS_PER_CHUNK):
        row = _row(entry)
        yield writer.writerow([_cell(row[name]) for name in FIELDS])


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value
