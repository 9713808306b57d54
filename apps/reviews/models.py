"""Review gates: the task a paused node waits on and the decisions on it (their audit trail: apps.audit)."""

from __future__ import annotations

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
