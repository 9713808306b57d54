"""``create_demo_users`` makes logins with published passwords: it runs only with DEBUG on (the local demo)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from apps.workflows.management.commands.create_demo_users import DEMO_USERS
from apps.workflows.roles import ADMINS, OPERATORS, REVIEWERS
from tests.conftest import ROOT

DEMO_NAMES = {"admin", "operator", "reviewer"}
User = get_user_model()


@pytest.mark.django_db
def test_with_debug_off_it_refuses_and_creates_no_user(settings):
    settings.DEBUG = False

    with pytest.raises(CommandError, match=r"demo users are for the local demo only \(DEBUG is off\)"):
        call_command("create_demo_users")

    assert not User.objects.filter(username__in=DEMO_NAMES).exists()


@pytest.mark.django_db(transaction=True)
def test_a_production_environment_gets_an_error_exit_and_no_user(test_database_url):
    # what `make run` or an operator's shell does, with the production variable set
    env = {**os.environ, "DATABASE_URL": test_database_url, "DJANGO_DEBUG": "false", "DJANGO_SECRET_KEY": "demo-users-test-" + "k" * 40}
    done = subprocess.run([sys.executable, "manage.py", "create_demo_users"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    assert done.returncode != 0
    assert "CommandError: demo users are for the local demo only (DEBUG is off)" in done.stderr
    assert "dagwright-admin" not in done.stdout
    assert not User.objects.filter(username__in=DEMO_NAMES).exists()


@pytest.mark.django_db
def test_with_debug_on_it_creates_the_three_role_logins_and_prints_them(settings, capsys):
    settings.DEBUG = True

    call_command("create_demo_users")

    printed = capsys.readouterr().out
    users = {u.username: u for u in User.objects.filter(username__in=DEMO_NAMES)}
    assert set(users) == DEMO_NAMES
    for username, password, group in DEMO_USERS:
        assert users[username].check_password(password)
        assert list(users[username].groups.values_list("name", flat=True)) == [group]
        assert f"{username:<9} / {password}" in printed
    assert {name: users[name].groups.get().name for name in DEMO_NAMES} == {"admin": ADMINS, "operator": OPERATORS, "reviewer": REVIEWERS}
    assert [(users[name].is_superuser, users[name].is_staff) for name in ("admin", "operator", "reviewer")] == [(True, True), (False, False), (False, False)]


@pytest.mark.django_db
def test_running_it_again_keeps_one_login_per_role(settings):
    settings.DEBUG = True

    call_command("create_demo_users")
    call_command("create_demo_users")

    assert User.objects.filter(username__in=DEMO_NAMES).count() == 3
