from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from apps.engine.errors import DefinitionError
from apps.workflows.services import definition_parse_text, workflow_save

DEMOS = Path(__file__).resolve().parents[2] / "demos"


class Command(BaseCommand):
    help = "Load (or update) the demo workflows shipped in apps/workflows/demos/."

    def handle(self, *args, **options) -> None:
        for path in sorted(DEMOS.glob("*.yaml")):
            try:
                version, created = workflow_save(spec=definition_parse_text(text=path.read_text()))
            except DefinitionError as exc:
                raise CommandError(f"{path.name}: {exc}") from exc
            state = "created" if created else "unchanged"
            self.stdout.write(f"{version.workflow.name} v{version.number} {state}")
