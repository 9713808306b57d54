"""The append-only, hash-chained audit trail shared by review decisions and workflow changes."""

from __future__ import annotations

import json
from typing import Any

from django.db import models


class AuditLogReadOnly(Exception):
    """The audit trail is append-only."""


class AuditQuerySet(models.QuerySet):
    def update(self, **kwargs: Any) -> int:
        raise AuditLogReadOnly("audit entries are never updated")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AuditLogReadOnly("audit entries are never deleted")


class AuditEntry(models.Model):
    """An append-only, hash-chained record of a review event or a workflow change (see ``apps.audit.audit``).

    ``hash`` is SHA-256 over the entry's canonical JSON, which includes ``prev_hash``, the hash of
    the entry before it (``seq`` - 1): changing, removing or reordering any entry breaks the chain
    from there on. On PostgreSQL a trigger refuses UPDATE and DELETE as well.

    The table keeps the name it had in ``apps.reviews`` (where the trail began): moving the model
    moved no row, and the trigger of ``reviews/migrations/0002`` stays on it. ``review`` points at
    a review by name only ("reviews.ReviewTask"): this app imports nothing from the reviews app,
    which writes to it.
    """

    seq = models.PositiveBigIntegerField(unique=True)
    review = models.ForeignKey("reviews.ReviewTask", null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="audit")
    run_id = models.UUIDField(null=True, blank=True)
    # The workflow a save, publish or rollback changed, by name (an entry outlives its workflow).
    workflow_name = models.CharField(max_length=100, blank=True, default="")
    event = models.CharField(max_length=16)
    actor = models.CharField(max_length=150)
    actor_id = models.IntegerField(null=True, blank=True)
    at = models.DateTimeField()
    client_address = models.CharField(max_length=64, blank=True)
    decision = models.CharField(max_length=8, blank=True)
    comment = models.TextField(blank=True)
    # Stored as the canonical JSON text that was hashed, not as a JSON column: PostgreSQL's jsonb
    # rewrites numbers (-0.0, 1e16), which would make an untouched entry fail verification.
    before_json = models.TextField(blank=True)
    after_json = models.TextField(blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    objects = AuditQuerySet.as_manager()

    class Meta:
        db_table = "reviews_auditentry"
        ordering = ["seq"]
        verbose_name_plural = "audit entries"
        indexes = [models.Index(fields=["workflow_name", "seq"], name="audit_workflow_seq")]

    def __str__(self) -> str:
        return f"#{self.seq} {self.event} by {self.actor}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AuditLogReadOnly("audit entries are never updated")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise AuditLogReadOnly("audit entries are never deleted")

    @property
    def before(self) -> Any:
        return json.loads(self.before_json) if self.before_json else None

    @property
    def after(self) -> Any:
        return json.loads(self.after_json) if self.after_json else None
