from django.core.management.base import BaseCommand, CommandError

from apps.audit.audit import audit_verify


class Command(BaseCommand):
    help = "Recompute the audit trail's hash chain (review decisions and workflow changes); exit 1 naming the first broken entry."

    def handle(self, *args, **options) -> None:
        report = audit_verify()
        if not report.ok:
            raise CommandError(f"audit chain broken at entry #{report.broken_seq}: {report.reason} ({report.entries} entries checked)")
        self.stdout.write(f"{report.entries} entries, chain intact")
