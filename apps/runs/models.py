from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from apps.workflows.models import Workflow, WorkflowVersion


class RunStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    WAITING_REVIEW = "waiting_review"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    BUDGET_EXCEEDED = "budget_exceeded"


ACTIVE_RUN_STATUSES = (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING_REVIEW)


class NodeStatus(models.TextChoices):
    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    RETRY_WAIT = "retry_wait"
    WAITING_REVIEW = "waiting_review"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


Money = {"max_digits": 16, "decimal_places": 8, "default": 0}


class Run(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workflow = models.ForeignKey(Workflow, on_delete=models.PROTECT, related_name="runs")
    version = models.ForeignKey(WorkflowVersion, on_delete=models.PROTECT, related_name="runs")
    status = models.CharField(max_length=20, choices=RunStatus.choices, default=RunStatus.PENDING)
    input = models.JSONField(default=dict)
    options = models.JSONField(default=dict, blank=True, help_text="Per-run settings, e.g. simulation overrides.")
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)
    tokens_in = models.BigIntegerField(default=0)
    tokens_out = models.BigIntegerField(default=0)
    cost = models.DecimalField(**Money)
    # The budget (the workflow's, with the run's options on top; null: no limit) and what the model
    # calls in flight have reserved against it: spent + reserved never passes the limit.
    budget_tokens = models.BigIntegerField(null=True, blank=True)
    budget_cost = models.DecimalField(max_digits=16, decimal_places=8, null=True, blank=True)
    reserved_tokens = models.BigIntegerField(default=0)
    reserved_cost = models.DecimalField(**Money)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    started_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")
    # A re-run from a node: the run whose outputs upstream of ``rerun_from_node`` it reused.
    rerun_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reruns")
    rerun_from_node = models.CharField(max_length=64, blank=True)
    # The W3C traceparent of the run's span (apps.runs.telemetry): every worker's node spans join
    # its trace. Empty when tracing was off as the run started.
    traceparent = models.CharField(max_length=64, blank=True, default="")
    # A test run of a draft (``run_start_test``): every model on the simulated provider; listed
    # apart and left out of the overview.
    is_test = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "-created_at"], name="run_status_created"),
            models.Index(fields=["workflow", "-created_at"], name="run_workflow_created"),
            # The operator overview (apps/console/overview.py): runs finished within a window, by
            # status and workflow, and their durations, read from the index alone; and the
            # workflow of a node's run, looked up without reading the run's row.
            models.Index(fields=["status", "finished_at", "started_at", "workflow"], name="run_outcomes"),
            models.Index(fields=["id", "workflow"], name="run_workflow_lookup"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["started_by", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="run_idempotency_key_unique",
            )
        ]

    def __str__(self) -> str:
        return f"run {self.id}"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_RUN_STATUSES

    @property
    def trace_id(self) -> str:
        """The OpenTelemetry trace id of the run's spans (32 hex digits), or "" when untraced."""
        parts = self.traceparent.split("-")
        return parts[1] if len(parts) >= 4 else ""

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        from django.utils import timezone

        return ((self.finished_at or timezone.now()) - self.started_at).total_seconds()


class NodeRun(models.Model):
    """The state of one node in one run.

    ``attempt`` counts claims and is the fencing token: a worker may only write while the row is
    still running under the attempt it claimed. ``deferrals`` counts claims that never reached the
    provider (its circuit breaker was open). ``attempt_base`` counts the attempts spent before an
    operator retried the failed run (``run_retry_failed``): the fencing token never goes back, so
    a retry forgives the spent attempts instead of resetting ``attempt``. Attempts spent against
    the retry policy's ``max_attempts`` = attempt - deferrals - attempt_base.
    A node that succeeded with attempt 0 never ran in this run: a re-run reused its output.
    When a node moves on to the next model of its fallback chain after exhausting its attempts on
    one, ``attempt_base`` also takes in the attempts spent on that model: each model gets the
    retry policy's ``max_attempts``.
    """

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="node_runs")
    node_id = models.CharField(max_length=64)
    node_type = models.CharField(max_length=20)
    status = models.CharField(max_length=20, choices=NodeStatus.choices, default=NodeStatus.PENDING)
    attempt = models.PositiveIntegerField(default=0)
    deferrals = models.PositiveIntegerField(default=0)
    attempt_base = models.PositiveIntegerField(default=0, help_text="Attempts spent before the run was retried; they no longer count.")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    input = models.JSONField(null=True, blank=True)
    input_hash = models.CharField(max_length=64, blank=True)
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    error_class = models.CharField(max_length=60, blank=True)
    model = models.CharField(max_length=200, blank=True)
    tokens_in = models.BigIntegerField(default=0)
    tokens_out = models.BigIntegerField(default=0)
    cost = models.DecimalField(**Money)
    # The worst case of this node's call in flight, held against the run's budget until the call
    # settles (or the sweeper recovers the attempt).
    reserved_tokens = models.BigIntegerField(default=0)
    reserved_cost = models.DecimalField(**Money)
    # Models of the node's chain passed over, in order, with why: [{"model": ..., "reason": ...}].
    passed_over = models.JSONField(default=list, blank=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "id"]
        constraints = [models.UniqueConstraint(fields=["run", "node_id"], name="node_run_unique")]
        indexes = [
            # the sweeper's three questions: expired leases, lost messages, retries due
            models.Index(fields=["status", "lease_expires_at"], name="node_run_status_lease"),
            models.Index(fields=["status", "queued_at"], name="node_run_status_queued"),
            models.Index(fields=["status", "next_attempt_at"], name="node_run_status_next"),
            # the operator overview: nodes that succeeded or failed within a window, their
            # durations and success rates per workflow and node, read from the index alone
            models.Index(fields=["status", "finished_at", "node_type", "started_at", "run", "node_id"], name="node_run_outcomes"),
        ]

    def __str__(self) -> str:
        return f"{self.node_id} ({self.status})"

    @property
    def attempts_spent(self) -> int:
        return self.attempt - self.deferrals - self.attempt_base

    @property
    def reused(self) -> bool:
        """Succeeded without ever being claimed: a re-run copied the output of its source run."""
        return self.status == NodeStatus.SUCCEEDED and self.attempt == 0

    @property
    def duration(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class ProviderCall(models.Model):
    """One request to a model provider, stored before the attempt's outcome is decided."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="provider_calls")
    node_run = models.ForeignKey(NodeRun, on_delete=models.CASCADE, related_name="calls")
    attempt = models.PositiveIntegerField()
    provider = models.CharField(max_length=50)
    model = models.CharField(max_length=200)
    request = models.JSONField()
    request_hash = models.CharField(max_length=64, blank=True)
    raw_response = models.TextField(blank=True)
    output = models.JSONField(null=True, blank=True, help_text="The validated output; null when the response was not valid.")
    tokens_in = models.BigIntegerField(default=0)
    tokens_out = models.BigIntegerField(default=0)
    usage_estimated = models.BooleanField(default=False, help_text="The provider reported no usage: tokens are estimated from the text.")
    cost = models.DecimalField(**Money)
    latency_ms = models.FloatField(default=0)
    error = models.TextField(blank=True)
    error_class = models.CharField(max_length=60, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["node_run", "request_hash"], name="provider_call_reuse"),
            # the operator overview's tokens and cost per hour or day, from the index alone
            models.Index(fields=["created_at", "tokens_in", "tokens_out", "cost"], name="provider_call_usage"),
        ]

    def __str__(self) -> str:
        return f"{self.model} call for node run {self.node_run_id}"


class OutboxMessage(models.Model):
    """A message a workflow hands to the outside world (the ``outbox`` tool), written exactly once
    per (run, node) however often the node is retried or recovered: its key is the node's
    idempotency key. Integrations read this table (the transactional-outbox pattern)."""

    idempotency_key = models.CharField(max_length=200, unique=True)
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="outbox")
    node_id = models.CharField(max_length=64)
    topic = models.CharField(max_length=200)
    payload = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.topic} from {self.node_id}"


class AppendOnly(Exception):
    pass


class RunEventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AppendOnly("run events are append-only")


class RunEvent(models.Model):
    """Append-only log of everything that happened to a run."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="events")
    node_id = models.CharField(max_length=64, blank=True)
    kind = models.CharField(max_length=40)
    attempt = models.PositiveIntegerField(null=True, blank=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = RunEventQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["run", "id"], name="run_event_run"),
            models.Index(fields=["kind", "created_at"], name="run_event_kind_created"),  # retries and failures by class
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.node_id}".strip()

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None:
            raise AppendOnly("run events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnly("run events are append-only")
