"""On PostgreSQL the database itself refuses to change or remove an audit entry.

(SQLite has no such guard here: the application refuses, and the hash chain shows any change.)
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION reviews_auditentry_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'the audit trail is append-only: % refused on entry %', TG_OP, OLD.seq
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER reviews_auditentry_append_only
    BEFORE UPDATE OR DELETE ON reviews_auditentry
    FOR EACH ROW EXECUTE FUNCTION reviews_auditentry_append_only();
"""
DROP = """
DROP TRIGGER IF EXISTS reviews_auditentry_append_only ON reviews_auditentry;
DROP FUNCTION IF EXISTS reviews_auditentry_append_only();
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)  # no parameters: the % in RAISE is PL/pgSQL's, not a placeholder


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("reviews", "0001_review_gates")]
    operations = [migrations.RunPython(forwards, backwards)]
