"""The audit trail's hash chain: append one entry, verify the whole chain.

An entry's hash is SHA-256 over the canonical JSON of its fields (``prev_hash`` included), so each
entry seals the one before it. Appends serialise on the unique ``seq``: two appenders that read
the same head both try ``seq`` = head + 1; one wins, the other retries on the new head.

Review gates record their events here, and workflows their changes (``saved``, ``published``,
``rolled_back``, with ``workflow_name`` set). The workflow's name joined the hashed fields after
the chain began: it is hashed (as ``"workflow"``) only when set, so every entry written before
keeps the hash it was written with.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.engine.canonical import canonical_json

from .models import AuditEntry

GENESIS = "0" * 64
HASHED_FIELDS = (
    *("seq", "review_id", "run_id", "event", "actor", "actor_id", "at", "client_address"),
    *("decision", "comment", "before_json", "after_json", "prev_hash"),
)


def hashed_value(entry: AuditEntry, name: str) -> Any:
    """A field of the entry as its hash sees it: times in UTC with microseconds, the run id as text."""
    value = getattr(entry, name)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if name == "run_id" and value is not None:
        return str(value)
    return value


def hashed_fields(entry: AuditEntry) -> dict[str, Any]:
    """What the entry's hash covers: ``HASHED_FIELDS``, and ``workflow`` when the entry names one."""
    fields = {name: hashed_value(entry, name) for name in HASHED_FIELDS}
    if entry.workflow_name:
        fields["workflow"] = entry.workflow_name
    return fields


def entry_hash(entry: AuditEntry) -> str:
    """SHA-256 of the entry's canonical JSON (every field but ``hash`` itself)."""
    payload = canonical_json(hashed_fields(entry))
    return hashlib.sha256(payload.encode()).hexdigest()


def _text(value: Any) -> str:
    return "" if value is None else canonical_json(value)


def audit_append(
    *, event: str, review: Any = None, run_id: Any = None, workflow: str = "", actor: Any = None, client_address: str | None = "",
    decision: str = "", comment: str = "", before: Any = None, after: Any = None,
) -> AuditEntry:  # fmt: skip
    """Append an entry at the head of the chain; call it inside the transaction of the change it records."""
    name = actor.get_username() if getattr(actor, "is_authenticated", False) else (actor if isinstance(actor, str) else "system")
    entry = AuditEntry(
        review=review, run_id=run_id if run_id is not None else getattr(review, "run_id", None), workflow_name=workflow, event=event, actor=name,
        actor_id=actor.pk if getattr(actor, "is_authenticated", False) else None, at=timezone.now().replace(tzinfo=UTC),
        client_address=client_address or "", decision=decision, comment=comment, before_json=_text(before), after_json=_text(after),
    )  # fmt: skip
    for _ in range(50):
        head = AuditEntry.objects.order_by("-seq").values_list("seq", "hash").first()
        entry.seq, entry.prev_hash = (head[0] + 1, head[1]) if head else (1, GENESIS)
        entry.hash = entry_hash(entry)
        try:
            with transaction.atomic():
                entry.save(force_insert=True)
            return entry
        except IntegrityError:
            entry._state.adding = True  # another append took this seq first: chain onto it
    raise RuntimeError("could not append to the audit trail")


@dataclass(frozen=True)
class ChainReport:
    """The verdict on the chain: ``broken_seq`` names the first entry that does not verify."""

    entries: int
    broken_seq: int | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.broken_seq is None


def audit_verify(entries: Iterator[AuditEntry] | None = None) -> ChainReport:
    """Recompute every hash in order and check each link; stops at the first broken entry."""
    rows = entries if entries is not None else AuditEntry.objects.order_by("seq").iterator(chunk_size=2000)
    previous, expected_seq, count = GENESIS, 1, 0
    for entry in rows:
        count += 1
        if entry.seq != expected_seq:
            return ChainReport(count, entry.seq, f"entry #{expected_seq} is missing (the next one is #{entry.seq})")
        if entry.prev_hash != previous:
            return ChainReport(count, entry.seq, f"entry #{entry.seq} does not link to the entry before it")
        if entry_hash(entry) != entry.hash:
            return ChainReport(count, entry.seq, f"entry #{entry.seq} was altered: its content no longer matches its hash")
        previous, expected_seq = entry.hash, entry.seq + 1
    return ChainReport(count)
