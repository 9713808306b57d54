from __future__ import annotations

from django.conf import settings
from django.db import models

from apps.engine.graph import Plan


class Workflow(models.Model):
    name = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def latest_version(self) -> WorkflowVersion | None:
        return self.versions.order_by("-number").first()


class VersionImmutable(Exception):
    pass


class WorkflowVersion(models.Model):
    """One immutable definition of a workflow, identified by the hash of its content."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    content_hash = models.CharField(max_length=64)
    definition = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["workflow", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["workflow", "number"], name="workflow_version_number_unique"),
            models.UniqueConstraint(fields=["workflow", "content_hash"], name="workflow_version_hash_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.workflow_id}@v{self.number}"

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None:
            raise VersionImmutable("workflow versions are immutable; save a new version instead")
        super().save(*args, **kwargs)

    @property
    def plan(self) -> Plan:
        from .selectors import version_plan

        return version_plan(version_id=self.pk, content_hash=self.content_hash)
