from __future__ import annotations

from django.conf import settings
from django.db import models

from apps.engine.graph import Plan


class Workflow(models.Model):
    """A named workflow: its immutable versions, and the one that is published.

    Runs started without a version number run ``published_version``; saving a definition adds
    (or reuses) a version without publishing it, and publishing moves the pointer (rolling back
    is publishing an older version). ``published_by`` and ``published_at`` say who moved it last
    and when; every move is in the audit trail. Only ``apps.workflows.services`` moves it, under
    a row lock on the workflow.
    """

    name = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # RESTRICT, not PROTECT: a version is never deleted alone, but it goes with its workflow.
    published_version = models.ForeignKey("WorkflowVersion", null=True, blank=True, on_delete=models.RESTRICT, related_name="+")
    published_at = models.DateTimeField(null=True, blank=True)
    published_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class VersionImmutable(Exception):
    pass


class WorkflowNotPublished(Exception):
    """A run was asked for without a version number, of a workflow that has no published version."""

    def __init__(self, workflow: Workflow):
        self.workflow = workflow
        super().__init__(f"workflow '{workflow.name}' has no published version: publish one, or name the version to run")


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
