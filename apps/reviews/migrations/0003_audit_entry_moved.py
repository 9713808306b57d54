"""AuditEntry now lives in apps.audit (see audit/0001): removed from this app's state only."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("reviews", "0002_audit_append_only_trigger"),
        ("audit", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[migrations.DeleteModel(name="AuditEntry")], database_operations=[]),
    ]
