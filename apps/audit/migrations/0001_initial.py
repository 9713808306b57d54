"""The audit trail moves from apps.reviews to its own app without moving a row.

Only Django's state changes: the model is created here on the existing table
``reviews_auditentry`` (``db_table``) and deleted from the reviews app's state by
``reviews/0003``; the table, its rows and its PostgreSQL append-only trigger stay as they are.
The content type is renamed so permissions given on audit entries carry over.
"""

import django.db.models.deletion
from django.db import migrations, models


def content_type_forwards(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    if not ContentType.objects.filter(app_label="audit", model="auditentry").exists():
        ContentType.objects.filter(app_label="reviews", model="auditentry").update(app_label="audit")


def content_type_backwards(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    if not ContentType.objects.filter(app_label="reviews", model="auditentry").exists():
        ContentType.objects.filter(app_label="audit", model="auditentry").update(app_label="reviews")


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("reviews", "0002_audit_append_only_trigger"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="AuditEntry",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("seq", models.PositiveBigIntegerField(unique=True)),
                        ("run_id", models.UUIDField(blank=True, null=True)),
                        ("event", models.CharField(max_length=16)),
                        ("actor", models.CharField(max_length=150)),
                        ("actor_id", models.IntegerField(blank=True, null=True)),
                        ("at", models.DateTimeField()),
                        ("client_address", models.CharField(blank=True, max_length=64)),
                        ("decision", models.CharField(blank=True, max_length=8)),
                        ("comment", models.TextField(blank=True)),
                        ("before_json", models.TextField(blank=True)),
                        ("after_json", models.TextField(blank=True)),
                        ("prev_hash", models.CharField(max_length=64)),
                        ("hash", models.CharField(max_length=64, unique=True)),
                        (
                            "review",
                            models.ForeignKey(
                                blank=True, db_constraint=False, null=True, on_delete=django.db.models.deletion.DO_NOTHING,
                                related_name="audit", to="reviews.reviewtask",
                            ),
                        ),
                    ],
                    options={"verbose_name_plural": "audit entries", "ordering": ["seq"], "db_table": "reviews_auditentry"},
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(content_type_forwards, content_type_backwards),
    ]
