"""Model output, run input and error text are untrusted: they reach the page escaped, everywhere."""

from __future__ import annotations

import pytest
from django.urls import reverse

from apps.runs.models import NodeRun, ProviderCall, Run

from .helpers import finish, start

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
HX = 'hx-get="/x"'
JS = "javascript:alert(1)"
PAYLOAD = f"{SCRIPT} {IMG} {HX} {JS}"


@pytest.fixture
def hostile_run(version) -> Run:
    run = finish(start(version, topic=PAYLOAD), output=PAYLOAD, error=PAYLOAD)
    node = NodeRun.objects.get(run=run)
    NodeRun.objects.filter(pk=node.pk).update(input={"prompt": PAYLOAD})
    Run.objects.filter(pk=run.pk).update(error=PAYLOAD)
    ProviderCall.objects.create(run=run, node_run=node, attempt=1, provider="simulated", model="sim-fast", request={"prompt": PAYLOAD}, raw_response=PAYLOAD)
    return run


def assert_escaped(html: str) -> None:
    assert SCRIPT not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert IMG not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert HX not in html
    assert "hx-get=&quot;/x&quot;" in html
    assert f'href="{JS}' not in html
    assert f'src="{JS}' not in html
    assert JS in html  # shown as text, never as a link


def test_the_run_page_escapes_output_input_and_errors(hostile_run, operator_client):
    html = operator_client.get(reverse("console:run", args=[hostile_run.id])).content.decode()

    assert_escaped(html)
    assert "<script>" not in html.replace('<script src="', "")  # only our own script tags


def test_the_polled_node_table_escapes_output(hostile_run, operator_client):
    html = operator_client.get(reverse("console:run_nodes", args=[hostile_run.id]), headers={"HX-Request": "true"}).content.decode()

    assert_escaped(html)


def test_the_node_detail_escapes_everything_it_shows(hostile_run, operator_client):
    html = operator_client.get(reverse("console:node", args=[hostile_run.id, "answer"]), headers={"HX-Request": "true"}).content.decode()

    assert_escaped(html)
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 4  # output, input, error, raw response


def test_a_form_typed_back_is_escaped(version, operator_client):
    url = reverse("console:run_start", args=[version.workflow.name])

    html = operator_client.post(url, {"mode": "json", "input_json": f'{{"topic": 1, "x": "{SCRIPT}"}}'}).content.decode()

    assert SCRIPT not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
