"""Headers on every answer: the Content-Security-Policy (django-csp), Permissions-Policy,
``Cache-Control: private, no-store`` on what a signed-in caller reads, and no Server banner."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.test import Client

from apps.api.services import api_token_issue
from tests.conftest import ROOT
from tests.factories import save_workflow

pytestmark = pytest.mark.django_db

SIGNED_IN_PAGES = ["/runs/", "/workflows/", "/overview/", "/workflows/new/", "/reviews/", "/admin/", "/api/v1/runs"]


def directives(response) -> dict[str, list[str]]:
    return {name: values for name, *values in (part.split() for part in response["Content-Security-Policy"].split(";") if part.strip())}


@pytest.fixture
def admin_client(admin) -> Client:
    client = Client()
    client.force_login(admin)
    return client


@pytest.mark.parametrize("path", SIGNED_IN_PAGES)
def test_a_signed_in_page_has_the_policy_and_is_never_stored(admin_client, path):
    save_workflow()
    response = admin_client.get(path)

    assert response.status_code == 200
    policy = directives(response)
    assert policy["script-src"] == ["'self'"]  # no 'unsafe-inline', no 'unsafe-eval', no host
    assert "'unsafe-inline'" not in policy["style-src"]
    assert (policy["object-src"], policy["base-uri"], policy["frame-ancestors"]) == (["'none'"], ["'none'"], ["'none'"])
    assert {"private", "no-store"} <= {part.strip() for part in response["Cache-Control"].split(",")}
    assert "camera=()" in response["Permissions-Policy"]
    assert "Server" not in response


@pytest.mark.parametrize("path", ["/login/", "/admin/login/", "/api/v1/runs"])
def test_a_signed_out_answer_has_the_policy_too(client, path):
    response = client.get(path)

    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert "Permissions-Policy" in response
    assert "Server" not in response


def test_an_answer_to_a_bearer_token_is_never_stored(operator):
    token = api_token_issue(username=operator.username)[1]
    response = Client().get("/api/v1/runs", HTTP_AUTHORIZATION=f"Bearer {token}")

    assert response.status_code == 200
    assert {"private", "no-store"} <= {part.strip() for part in response["Cache-Control"].split(",")}


def test_only_the_editor_page_carries_a_style_nonce_and_its_script_hands_it_on(admin_client):
    page = admin_client.get("/workflows/new/")
    nonce = re.search(r"'nonce-([^']+)'", page["Content-Security-Policy"]).group(1)

    assert f'nonce="{nonce}"' in page.content.decode()  # on the editor's <script>, for CodeMirror's <style> elements
    assert "nonce-" not in directives(page)["script-src"][0]
    assert "nonce-" not in admin_client.get("/runs/")["Content-Security-Policy"]


def test_no_template_has_inline_script_event_handlers_or_style_attributes():
    offending = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>|\son[a-z]+\s*=|\shx-on[:-]|\sstyle\s*=|<style", re.IGNORECASE)
    found = {
        str(path.relative_to(ROOT)): offending.findall(path.read_text())
        for path in Path(ROOT, "templates").rglob("*.html")
        if offending.search(path.read_text())
    }

    assert found == {}
