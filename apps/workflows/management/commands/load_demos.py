from pathlib import Path

from django.core.management import call_command
from django.core.management.base import BaseCommand

DEMOS = Path(__file__).resolve().parents[2] / "demos"


class Command(BaseCommand):
    help = "Load (or update) and publish the demo workflows shipped in apps/workflows/demos/."

    def handle(self, *args, **options) -> None:
        call_command("workflow_load", *sorted(DEMOS.glob("*.yaml")), publish=True, stdout=self.stdout)
