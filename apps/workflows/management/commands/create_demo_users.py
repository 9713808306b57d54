from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError

from apps.workflows.roles import ADMINS, OPERATORS, REVIEWERS, ROLE_GROUPS

DEMO_USERS = [
    ("admin", "dagwright-admin", ADMINS),
    ("operator", "dagwright-operator", OPERATORS),
    ("reviewer", "dagwright-reviewer", REVIEWERS),
]


class Command(BaseCommand):
    help = "Create the demo logins (admin, operator, reviewer). Local demo only: refused unless DEBUG."

    def handle(self, *args, **options) -> None:
        if not settings.DEBUG:
            raise CommandError("demo users are for the local demo only (DEBUG is off)")
        for name in ROLE_GROUPS:
            Group.objects.get_or_create(name=name)
        User = get_user_model()
        for username, password, group in DEMO_USERS:
            user, _ = User.objects.get_or_create(username=username)
            user.set_password(password)
            user.is_staff = user.is_superuser = group == ADMINS
            user.save()
            user.groups.set([Group.objects.get(name=group)])
            self.stdout.write(f"  {username:<9} / {password}")
