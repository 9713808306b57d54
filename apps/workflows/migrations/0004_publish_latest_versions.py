"""Workflows saved before versions had to be published: their latest version becomes published
(what ran when no version was named), published by its author at the time it was saved."""

from django.db import migrations
from django.db.models import OuterRef, Subquery


def publish_latest(apps, schema_editor):
    Workflow = apps.get_model("workflows", "Workflow")
    WorkflowVersion = apps.get_model("workflows", "WorkflowVersion")
    latest = WorkflowVersion.objects.filter(workflow=OuterRef("pk")).order_by("-number")
    Workflow.objects.filter(published_version__isnull=True).update(
        published_version=Subquery(latest.values("pk")[:1]),
        published_at=Subquery(latest.values("created_at")[:1]),
        published_by=Subquery(latest.values("created_by")[:1]),
    )


class Migration(migrations.Migration):
    dependencies = [("workflows", "0003_published_version")]
    operations = [migrations.RunPython(publish_latest, migrations.RunPython.noop)]
