"""Circuit breaker state (database store) and the log of every breaker transition (both stores)."""

from __future__ import annotations

from django.db import models


class BreakerStateName(models.TextChoices):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreakerState(models.Model):
    """The shared state of one breaker when ``REDIS_URL`` is not set (Redis holds it otherwise).

    Written only by ``apps.providers.breaker`` under ``select_for_update``; a missing row is a
    closed breaker that has never failed.
    """

    provider = models.CharField(max_length=50)
    model = models.CharField(max_length=200)
    state = models.CharField(max_length=20, choices=BreakerStateName.choices, default=BreakerStateName.CLOSED)
    failures = models.PositiveIntegerField(default=0, help_text="Consecutive failures, reset by any success.")
    opened_at = models.DateTimeField(null=True, blank=True)
    probe_started_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["provider", "model"]
        constraints = [models.UniqueConstraint(fields=["provider", "model"], name="breaker_state_unique")]

    def __str__(self) -> str:
        return f"{self.provider}/{self.model}: {self.state}"


class BreakerTransition(models.Model):
    """One change of a breaker's state (closed→open, open→half_open, half_open→closed or open)."""

    provider = models.CharField(max_length=50)
    model = models.CharField(max_length=200)
    from_state = models.CharField(max_length=20, choices=BreakerStateName.choices)
    to_state = models.CharField(max_length=20, choices=BreakerStateName.choices)
    reason = models.CharField(max_length=500)
    at = models.DateTimeField()

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["provider", "model", "-at"], name="breaker_transition_recent")]

    def __str__(self) -> str:
        return f"{self.provider}/{self.model}: {self.from_state} → {self.to_state}"


class ModelPrice(models.Model):
    """A model in the registry with its price per million tokens (admins edit it in the admin).

    ``apps.providers.pricing.call_cost`` reads the active rows; a model without one falls back to
    the built-in ``pricing.PRICES`` and, failing that, costs nothing.
    """

    provider = models.CharField(max_length=50, help_text="Which provider serves it, e.g. simulated or openai.")
    model = models.CharField(max_length=200, unique=True)
    input_per_million = models.DecimalField(max_digits=12, decimal_places=6, help_text="USD per million input tokens.")
    output_per_million = models.DecimalField(max_digits=12, decimal_places=6, help_text="USD per million output tokens.")
    currency = models.CharField(max_length=3, default="USD", editable=False)
    active = models.BooleanField(default=True, help_text="Inactive rows are ignored: the built-in default (if any) applies.")
    notes = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["provider", "model"]

    def __str__(self) -> str:
        return f"{self.model}: {self.input_per_million}/{self.output_per_million} {self.currency} per 1M"
