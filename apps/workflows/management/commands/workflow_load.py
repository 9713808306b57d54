from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from apps.engine.errors import DefinitionError
from apps.workflows.services import PublishConflict, workflow_load_file


class Command(BaseCommand):
    help = "Load workflow definitions from YAML or JSON files: each becomes a new version (or reuses an identical one)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("paths", nargs="+", type=Path, help="YAML or JSON definition files")
        parser.add_argument("--publish", action="store_true", help="publish each loaded version (runs started without a version number use it)")
        parser.add_argument("--user", help="the username recorded as the author (and publisher) in the versions and the audit trail")

    def handle(self, *args, **options) -> None:
        user = self._user(options["user"])
        for path in options["paths"]:
            try:
                version, created = workflow_load_file(path=path, user=user, publish=options["publish"])
            except OSError as exc:
                raise CommandError(f"{path}: {exc.strerror or exc}") from exc
            except (DefinitionError, PublishConflict) as exc:
                raise CommandError(f"{path}: {exc}") from exc
            state = "created" if created else "unchanged"
            published = ", published" if version.workflow.published_version_id == version.pk else ""
            self.stdout.write(f"{version.workflow.name} v{version.number} {state}{published}")

    def _user(self, username: str | None):
        if not username:
            return None
        try:
            return get_user_model().objects.get(username=username)
        except get_user_model().DoesNotExist:
            raise CommandError(f"no user named {username!r}") from None
