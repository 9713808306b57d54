"""Review gates: the task a paused node waits on, the decisions on it, and the audit trail."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models

from apps.runs.models import NodeRun, Run


class ReviewStatus(models.TextChoices):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    CANCELLED = "cancelled"  # its run ended (cancelled, failed elsewhere, over budget) first


class ReviewTask(models.Model):
    """What a review gate asks of its reviewers, frozen when the gate was reached.

    ``subject`` is the upstream output under review and ``subject_hash`` its content hash: the
    reviewer approves exactly that (or their edit of it), and that is what downstream nodes get.
    ``version`` grows with every change of the task; a decision made on an older version (a
    stale page) is refused, never applied over a newer state.
    """

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="reviews")
    node_run = models.ForeignKey(NodeRun, on_delete=models.CASCADE, related_name="reviews")
    node_id = models.CharField(max_length=64)
    attempt = models.PositiveIntegerField()
    subject_node_id = models.CharField(max_length=64)
    subject = models.JSONField(null=True)
    subject_hash = models.CharField(max_length=64)
    current_output = models.JSONField(null=True)  # the subject, or the latest approver's edit of it
    output_schema = models.JSONField(null=True, blank=True)  # the producing node's, for edits
    context = models.JSONField(default=dict)  # run input, upstream outputs, their model calls, cost so far
    instructions = models.TextField(blank=True)
    assigned_users = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="assigned_reviews")
    assigned_groups = models.ManyToManyField(Group, blank=True, related_name="assigned_reviews")
    approvals_required = models.PositiveSmallIntegerField(default=1)
    approvals = models.PositiveSmallIntegerField(default=0)
    due_at = models.DateTimeField(null=True, blank=True)
    escalation = models.JSONField(null=True, blank=True)  # the definition's escalation
    due_in_seconds = models.PositiveIntegerField(null=True, blank=True)
    escalated_at = models.DateTimeField(null=True, blank=True)
    on_reject = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=16, choices=ReviewStatus.choices, default=ReviewStatus.PENDING)
    version = models.PositiveIntegerField(default=1)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["node_run", "attempt"], name="review_once_per_gate_attempt")]
        indexes = [models.Index(fields=["status", "due_at"]), models.Index(fields=["status", "-created_at"])]

    def __str__(self) -> str:
        return f"review {self.pk} of {self.node_id} ({self.status})"

    @property
    def is_pending(self) -> bool:
        return self.status == ReviewStatus.PENDING


class DecisionKind(models.TextChoices):
    APPROVE = "approve"
    EDIT = "edit"  # edit then approve
    REJECT = "reject"


class ReviewDecision(models.Model):
    """One reviewer's decision. ``ordinal`` numbers them per task and is unique: however many
    reviewers press at once, each required approval is given exactly once."""

    task = models.ForeignKey(ReviewTask, on_delete=models.CASCADE, related_name="decisions")
    ordinal = models.PositiveSmallIntegerField()
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="review_decisions")
    by_escalation = models.BooleanField(default=False)
    decision = models.CharField(max_length=8, choices=DecisionKind.choices)
    original = models.JSONField(null=True)
    edited = models.JSONField(null=True, blank=True)
    diff = models.TextField(blank=True)
    comment = models.TextField(blank=True)
    client_address = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["task", "ordinal"]
        constraints = [
            models.UniqueConstraint(fields=["task", "ordinal"], name="one_decision_per_required_approval"),
            models.UniqueConstraint(fields=["task", "reviewer"], condition=models.Q(reviewer__isnull=False), name="one_decision_per_reviewer"),
        ]

    def __str__(self) -> str:
        return f"{self.decision} #{self.ordinal} on review {self.task_id} by {self.actor}"

    @property
    def actor(self) -> str:
        return self.reviewer.get_username() if self.reviewer_id else "escalation"


class AuditLogReadOnly(Exception):
    """The audit trail is append-only."""


class AuditQuerySet(models.QuerySet):
    def update(self, **kwargs: Any) -> int:
        raise AuditLogReadOnly("audit entries are never updated")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AuditLogReadOnly("audit entries are never deleted")


class AuditEntry(models.Model):
    """An append-only, hash-chained record of a review event (see ``apps.reviews.audit``).

    ``hash`` is SHA-256 over the entry's canonical JSON, which includes ``prev_hash``, the hash of
    the entry before it (``seq`` - 1): changing, removing or reordering any entry breaks the chain
    from there on. On PostgreSQL a trigger refuses UPDATE and DELETE as well.
    """

    seq = models.PositiveBigIntegerField(unique=True)
    review = models.ForeignKey(ReviewTask, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="audit")
    run_id = models.UUIDField(null=True, blank=True)
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
        ordering = ["seq"]
        verbose_name_plural = "audit entries"

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
