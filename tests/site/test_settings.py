"""The production variables take effect: ``DJANGO_DEBUG``, ``DJANGO_SECRET_KEY``, ``DJANGO_ALLOWED_HOSTS``,
the HTTPS ones, and the README's production block passes ``check --deploy`` with no warning.

Settings are read once per process, so each environment is loaded by a fresh Python process
exactly as a web process loads it (``DJANGO_SETTINGS_MODULE=orchestrator_site.settings``).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from typing import Any

import pytest
from django.core.signing import Signer

from tests.conftest import ROOT

PRODUCTION_VARIABLES = ("DJANGO_DEBUG", "DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS", "DJANGO_CSRF_TRUSTED_ORIGINS")
PRODUCTION_VARIABLES += tuple(name for name in os.environ if name.startswith("DJANGO_SECURE_"))
# set in this process by the browser tests (tests/browser/conftest.py): never in a deployment, where check --deploy refuses it
PRODUCTION_VARIABLES += ("DJANGO_ALLOW_ASYNC_UNSAFE",)
A_SECRET = "prod-7f3a9c1e5b2d4f6a8c0e-not-the-default"
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


def run(argv: list[str], **variables: str) -> subprocess.CompletedProcess:
    """Run ``argv`` in a process whose environment has only these of the production variables."""
    env = {k: v for k, v in os.environ.items() if k not in PRODUCTION_VARIABLES}
    env |= {"DJANGO_SETTINGS_MODULE": "orchestrator_site.settings", **variables}
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def load(script: str, **variables: str) -> dict[str, Any]:
    done = run([sys.executable, "-c", script, *PROBED_HOSTS], **variables)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def readme_production_variables() -> dict[str, str]:
    """The ``export NAME=value`` lines of the README's "Production variables" block."""
    section = (ROOT / "README.md").read_text().split("### Production variables", 1)[1]
    block = section.split("```sh", 1)[1].split("```", 1)[0]
    return dict(re.findall(r"^export (\w+)=(\S+)$", block, re.MULTILINE))


@pytest.mark.parametrize("value", ["1", "true", "True", "yes", "on", " TRUE "])
def test_debug_is_on_for_a_true_value(value):
    assert load(SETTINGS_ONLY, DJANGO_DEBUG=value)["DEBUG"] is True


@pytest.mark.parametrize("value", ["0", "false", "False", "no", "off", "", "nope"])  # anything not true leaves DEBUG off: the safe side
def test_debug_is_off_for_any_other_value(value):
    assert load(SETTINGS_ONLY, DJANGO_DEBUG=value, DJANGO_SECRET_KEY=A_SECRET)["DEBUG"] is False


def test_unset_variables_give_the_local_defaults():
    loaded = load(SETTINGS_ONLY)

    assert loaded["DEBUG"] is True  # the embedded default is the local demo
    assert loaded["ALLOWED_HOSTS"] == ["127.0.0.1", "localhost", "testserver"]


def test_the_secret_key_given_is_the_one_that_signs():
    secret = A_SECRET
    loaded = load(SETTINGS_ONLY, DJANGO_DEBUG="false", DJANGO_SECRET_KEY=secret)
    in_effect = load(IN_EFFECT, DJANGO_DEBUG="false", DJANGO_SECRET_KEY=secret)

    assert loaded["SECRET_KEY"] == secret
    assert in_effect["signed"] == Signer(key=secret).sign("run 42")
    assert in_effect["signed"] != load(IN_EFFECT)["signed"]  # the default key signs differently


def test_allowed_hosts_are_split_on_commas_and_are_the_only_hosts_served():
    production = {"DJANGO_DEBUG": "false", "DJANGO_SECRET_KEY": "prod-secret", "DJANGO_ALLOWED_HOSTS": "dagwright.example.com,.example.org,"}

    assert load(SETTINGS_ONLY, **production)["ALLOWED_HOSTS"] == ["dagwright.example.com", ".example.org"]
    assert load(IN_EFFECT, **production)["hosts"] == {"dagwright.example.com": True, "api.example.org": True, "evil.example.net": False, "localhost": False}


def test_allowed_hosts_and_trusted_origins_entries_are_trimmed():
    loaded = load(
        "import json; from django.conf import settings; print(json.dumps([settings.ALLOWED_HOSTS, settings.CSRF_TRUSTED_ORIGINS]))",
        DJANGO_ALLOWED_HOSTS=" dagwright.example.com , .example.org ,, ",
        DJANGO_CSRF_TRUSTED_ORIGINS="https://dagwright.example.com , https://api.example.org ",
    )

    assert loaded == [["dagwright.example.com", ".example.org"], ["https://dagwright.example.com", "https://api.example.org"]]


@pytest.mark.parametrize("key", [None, "dagwright-local-development-only-not-secret", "change-me-in-production", "  ", "readme"])
def test_with_debug_off_the_site_refuses_to_start_on_a_public_secret_key(key):
    if key == "readme":
        key = readme_production_variables()["DJANGO_SECRET_KEY"]  # the placeholder people copy
    variables = {"DJANGO_DEBUG": "false"} | ({} if key is None else {"DJANGO_SECRET_KEY": key})

    done = run([sys.executable, "manage.py", "check"], **variables)

    assert done.returncode != 0
    assert "ImproperlyConfigured: DJANGO_SECRET_KEY is unset or a public placeholder while DJANGO_DEBUG is off: set DJANGO_SECRET_KEY" in done.stderr


def test_with_debug_on_the_development_key_is_accepted():
    assert load(SETTINGS_ONLY)["SECRET_KEY"] == "dagwright-local-development-only-not-secret"


def test_the_readme_production_variables_pass_check_deploy_with_no_warning():
    variables = readme_production_variables() | {"DJANGO_SECRET_KEY": secrets.token_urlsafe(50)}
    assert {"DJANGO_SECURE_PROXY_SSL_HEADER", "DJANGO_SECURE_SSL_REDIRECT", "DJANGO_SECURE_HSTS_SECONDS", "DJANGO_SECURE_COOKIES"} <= set(variables)

    done = run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], **variables)

    assert done.returncode == 0, done.stderr
    assert "System check identified no issues" in done.stdout, done.stdout + done.stderr


def test_without_them_check_deploy_names_what_is_missing():
    done = run([sys.executable, "manage.py", "check", "--deploy"], DJANGO_DEBUG="false", DJANGO_SECRET_KEY=secrets.token_urlsafe(50))

    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):  # HSTS, SSL redirect, both cookies
        assert warning in done.stderr + done.stdout


def test_the_proxy_header_and_https_settings_come_from_the_environment():
    script = (
        "import json; from django.conf import settings as s; print(json.dumps([s.SECURE_PROXY_SSL_HEADER, s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, "
        "s.SECURE_HSTS_INCLUDE_SUBDOMAINS, s.SECURE_HSTS_PRELOAD, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE]))"
    )
    production = readme_production_variables() | {"DJANGO_SECRET_KEY": A_SECRET}

    assert load(script, **production) == [["HTTP_X_FORWARDED_PROTO", "https"], True, 31536000, True, True, True, True]
    assert load(script) == [None, False, 0, False, False, False, False]  # the local demo is plain HTTP
    assert load(script, DJANGO_SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO")[0] == ["HTTP_X_FORWARDED_PROTO", "https"]  # Django's own spelling too


def test_the_login_limit_and_cool_off_come_from_the_environment():
    script = (
        "import json; from django.conf import settings as s; "
        "print(json.dumps([s.AXES_FAILURE_LIMIT, s.AXES_COOLOFF_TIME.total_seconds(), s.DAGWRIGHT_TRUSTED_PROXIES]))"
    )

    assert load(script) == [5, 900.0, 0]
    assert load(script, DAGWRIGHT_LOGIN_FAILURE_LIMIT="3", DAGWRIGHT_LOGIN_COOLOFF_SECONDS="120", DAGWRIGHT_TRUSTED_PROXIES="1") == [3, 120.0, 1]
