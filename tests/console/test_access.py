"""Who sees what: every page renders for an operator; the outsider gets 403; anonymous people sign in first."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from apps.runs.models import Run
from tests.factories import PASSWORD

from .helpers import finish, signed_in, start


@pytest.fixture
def pages(version, operator) -> dict[str, str]:
    run = finish(start(version, operator))
    return {
        "runs": reverse("console:runs"),
        "workflows": reverse("console:workflows"),
        "workflow": reverse("console:workflow", args=[version.workflow.name]),
        "run_start": reverse("console:run_start", args=[version.workflow.name]),
        "run": reverse("console:run", args=[run.id]),
        "run_nodes": reverse("console:run_nodes", args=[run.id]),
        "node": reverse("console:node", args=[run.id, "answer"]),
    }


PAGE_NAMES = ["runs", "workflows", "workflow", "run_start", "run", "run_nodes", "node"]


@pytest.mark.parametrize("name", PAGE_NAMES)
def test_every_page_renders_for_an_operator(pages, operator_client, name):
    response = operator_client.get(pages[name], headers={"HX-Request": "true"} if name == "node" else {})

    assert response.status_code in (200, 286)
    assert b"Traceback" not in response.content


@pytest.mark.parametrize("name", ["runs", "workflows", "workflow", "run"])
def test_full_pages_carry_the_navigation_and_the_csrf_header(pages, operator_client, operator, name):
    html = operator_client.get(pages[name]).content.decode()

    assert 'hx-headers=\'{"X-CSRFToken": "' in html
    assert html.count("X-CSRFToken") == 1
    assert f'href="{reverse("console:runs")}"' in html
    assert f'href="{reverse("console:workflows")}"' in html
    assert operator.username in html
    assert f'action="{reverse("logout")}"' in html
    assert "/static/django_htmx/htmx-2.min.js" in html
    assert "/static/css/dagwright.css" in html


def test_the_admin_link_is_for_staff_only(pages, admin, operator_client):
    assert reverse("admin:index") not in operator_client.get(pages["runs"]).content.decode()
    assert reverse("admin:index") in signed_in(admin).get(pages["runs"]).content.decode()


@pytest.mark.parametrize("name", PAGE_NAMES)
def test_the_outsider_is_forbidden_everywhere(pages, outsider, name):
    assert signed_in(outsider).get(pages[name]).status_code == 403


@pytest.mark.parametrize("name", PAGE_NAMES)
def test_anonymous_people_are_sent_to_sign_in(pages, name):
    response = Client().get(pages[name])

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login") + "?next=")


def test_the_home_page_is_the_runs_list(operator_client):
    response = operator_client.get("/")

    assert response.status_code == 302
    assert response["Location"] == reverse("console:runs")


def test_signing_in_lands_on_the_runs_list(operator):
    client = Client()
    login_page = client.get(reverse("login"))
    assert login_page.status_code == 200
    assert b'name="password"' in login_page.content

    response = client.post(reverse("login"), {"username": operator.username, "password": PASSWORD}, follow=True)

    assert response.redirect_chain[-1][0] == reverse("console:runs")
    assert response.status_code == 200


def test_a_reviewer_reads_runs_but_cannot_start_them(pages, reviewer):
    client = signed_in(reviewer)

    assert client.get(pages["run"]).status_code == 200
    assert client.get(pages["run_start"]).status_code == 403
    assert client.post(pages["run_start"], {"mode": "json", "input_json": '{"topic": "x"}'}).status_code == 403
    assert pages["run_start"] not in client.get(pages["workflows"]).content.decode()
    assert Run.objects.count() == 1


def test_the_start_link_is_offered_to_operators(pages, operator_client):
    assert pages["run_start"] in operator_client.get(pages["workflows"]).content.decode()
    assert pages["run_start"] in operator_client.get(pages["workflow"]).content.decode()


def test_unknown_things_are_404(operator_client, version):
    assert operator_client.get(reverse("console:workflow", args=["nope"])).status_code == 404
    assert operator_client.get(reverse("console:run", args=["00000000-0000-0000-0000-000000000000"])).status_code == 404
