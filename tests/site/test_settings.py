"""The production variables take effect: ``DJANGO_DEBUG``, ``DJANGO_SECRET_KEY``, ``DJANGO_ALLOWED_HOSTS``.

Settings are read once per process, so each environment is loaded by a fresh Python process
exactly as a web process loads it (``DJANGO_SETTINGS_MODULE=orchestrator_site.settings``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from django.core.signing import Signer

from tests.conftest import ROOT

PRODUCTION_VARIABLES = ("DJANGO_DEBUG", "DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS")
PROBED_HOSTS = ("dagwright.example.com", "api.example.org", "evil.example.net", "localhost")

SETTINGS_ONLY = """
import json
from django.conf import settings
print(json.dumps({"DEBUG": settings.DEBUG, "SECRET_KEY": settings.SECRET_KEY, "ALLOWED_HOSTS": settings.ALLOWED_HOSTS}))
"""

# The configured site at work: a value signed with its key, and which Host headers it accepts.
IN_EFFECT = """
import json, sys
import django
from django.core import signing
from django.core.exceptions import DisallowedHost
from django.test import RequestFactory

django.setup()

def accepted(host):
    try:
        RequestFactory(HTTP_HOST=host).get("/").get_host()
    except DisallowedHost:
        return False
    return True

print(json.dumps({"signed": signing.Signer().sign("run 42"), "hosts": {host: accepted(host) for host in sys.argv[1:]}}))
"""


def load(script: str, **variables: str) -> dict[str, Any]:
    """Run ``script`` in a process whose environment has only these of the production variables."""
    env = {k: v for k, v in os.environ.items() if k not in PRODUCTION_VARIABLES}
    env |= {"DJANGO_SETTINGS_MODULE": "orchestrator_site.settings", **variables}
    done = subprocess.run([sys.executable, "-c", script, *PROBED_HOSTS], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("value", ["1", "true", "True", "yes", "on", " TRUE "])
def test_debug_is_on_for_a_true_value(value):
    assert load(SETTINGS_ONLY, DJANGO_DEBUG=value)["DEBUG"] is True


@pytest.mark.parametrize("value", ["0", "false", "False", "no", "off", "", "nope"])  # anything not true leaves DEBUG off: the safe side
def test_debug_is_off_for_any_other_value(value):
    assert load(SETTINGS_ONLY, DJANGO_DEBUG=value)["DEBUG"] is False


def test_unset_variables_give_the_local_defaults():
    loaded = load(SETTINGS_ONLY)

    assert loaded["DEBUG"] is True  # the embedded default is the local demo
    assert loaded["ALLOWED_HOSTS"] == ["127.0.0.1", "localhost", "testserver"]


def test_the_secret_key_given_is_the_one_that_signs():
    secret = "prod-7f3a9c1e5b2d4f6a8c0e-not-the-default"
    loaded = load(SETTINGS_ONLY, DJANGO_DEBUG="false", DJANGO_SECRET_KEY=secret)
    in_effect = load(IN_EFFECT, DJANGO_DEBUG="false", DJANGO_SECRET_KEY=secret)

    assert loaded["SECRET_KEY"] == secret
    assert in_effect["signed"] == Signer(key=secret).sign("run 42")
    assert in_effect["signed"] != load(IN_EFFECT)["signed"]  # the default key signs differently


def test_allowed_hosts_are_split_on_commas_and_are_the_only_hosts_served():
    production = {"DJANGO_DEBUG": "false", "DJANGO_SECRET_KEY": "prod-secret", "DJANGO_ALLOWED_HOSTS": "dagwright.example.com,.example.org,"}

    assert load(SETTINGS_ONLY, **production)["ALLOWED_HOSTS"] == ["dagwright.example.com", ".example.org"]
    assert load(IN_EFFECT, **production)["hosts"] == {"dagwright.example.com": True, "api.example.org": True, "evil.example.net": False, "localhost": False}
