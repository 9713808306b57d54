from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.api.services import api_token_issue


class Command(BaseCommand):
    help = "Issue an API token for a user and print it. It is shown this once: only its hash is kept."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="What the token is for, e.g. 'nightly import'.")

    def handle(self, *args: Any, username: str, name: str, **options: Any) -> None:
        try:
            token, secret = api_token_issue(username=username, name=name[:100])
        except get_user_model().DoesNotExist:
            raise CommandError(f"no user named '{username}'") from None
        self.stderr.write(f"API token {token.prefix}… for {username}; store it now, it is not shown again:")
        self.stdout.write(secret)
