"""The run page: header, node table that polls every second until the run is over, node details."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from apps.runs.models import NodeRun, NodeStatus, ProviderCall, Run, RunStatus

from .helpers import finish, start

HTMX = {"HX-Request": "true"}
POLL_TRIGGER = 'hx-trigger="every 1s"'


def test_the_page_shows_the_run_its_nodes_and_its_input(chain_version, operator, operator_client):
    run = start(chain_version, operator, topic="spring tides")
    NodeRun.objects.filter(run=run, node_id="measure").update(status=NodeStatus.SUCCEEDED, attempt=1, output={"words": 2}, tokens_in=0)
    Run.objects.filter(pk=run.pk).update(tokens_in=321, tokens_out=45, cost=Decimal("0.0042"))

    html = operator_client.get(reverse("console:run", args=[run.id])).content.decode()

    for text in (str(run.id), "chain", "v1", "running", operator.username, "321 / 45", "$0.0042"):
        assert text in html
    assert html.index("<code>measure</code>") < html.index("<code>answer</code>")  # topological order
    assert "{&quot;words&quot;: 2}" in html  # the output preview
    assert "&quot;topic&quot;: &quot;spring tides&quot;" in html  # the input, pretty JSON


def test_an_active_run_polls_its_node_table(version, operator_client):
    run = start(version)

    page = operator_client.get(reverse("console:run", args=[run.id])).content.decode()
    partial = operator_client.get(reverse("console:run_nodes", args=[run.id]), headers=HTMX)

    assert f'hx-get="{reverse("console:run_nodes", args=[run.id])}" {POLL_TRIGGER}' in page
    assert partial.status_code == 200
    body = partial.content.decode()
    assert POLL_TRIGGER in body
    assert body.lstrip().startswith('<div id="node-table"')
    assert 'id="run-summary" class="run-summary" hx-swap-oob="true"' in body  # the header follows along
    assert "<html" not in body


@pytest.mark.parametrize("status", [RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.BUDGET_EXCEEDED])
def test_a_finished_run_stops_the_polling(version, operator_client, status):
    run = finish(start(version), status)

    page = operator_client.get(reverse("console:run", args=[run.id])).content.decode()
    partial = operator_client.get(reverse("console:run_nodes", args=[run.id]), headers=HTMX)

    assert "hx-trigger" not in page.split("<main", 1)[1]
    assert 'hx-trigger="load" hx-select="#review-counts > *" hx-swap="innerHTML"' in page  # the badge is read once
    assert not re.search(r'hx-trigger="[^"]*every', page)
    assert partial.status_code == 286
    body = partial.content.decode()
    assert not re.search(r'hx-trigger="[^"]*every', body)
    # the badge of a page opened while the run was active stops polling too: it is read once more, then left alone
    assert 'id="review-counts" class="nav-counts" hx-get="/reviews/counts/" hx-trigger="load"' in body
    assert status.replace("_", " ") in body  # the final state is still swapped in


def test_polling_sees_a_node_progress(version, operator_client):
    run = start(version)
    url = reverse("console:run_nodes", args=[run.id])
    assert "queued" in operator_client.get(url, headers=HTMX).content.decode()

    NodeRun.objects.filter(run=run).update(status=NodeStatus.RUNNING, attempt=1, started_at=timezone.now())

    assert "running" in operator_client.get(url, headers=HTMX).content.decode()


def test_a_failed_run_shows_its_error(version, operator_client):
    run = finish(start(version), RunStatus.FAILED, error="provider said no")
    Run.objects.filter(pk=run.pk).update(error="node 'answer' failed: provider said no")

    html = operator_client.get(reverse("console:run", args=[run.id])).content.decode()

    assert "node &#x27;answer&#x27; failed: provider said no" in html
    assert 'role="alert"' in html


def test_a_node_opens_with_its_full_output_input_and_provider_calls(version, operator_client):
    run = finish(start(version), output={"text": "x" * 500})
    node = NodeRun.objects.get(run=run)
    NodeRun.objects.filter(pk=node.pk).update(input={"prompt": "Say something about tides."})
    ProviderCall.objects.create(
        run=run, node_run=node, attempt=1, provider="simulated", model="sim-fast", request={"prompt": "Say"}, raw_response="RAW-BODY", tokens_in=5
    )

    table = operator_client.get(reverse("console:run", args=[run.id])).content.decode()
    detail = operator_client.get(reverse("console:node", args=[run.id, "answer"]), headers=HTMX)

    assert "x" * 500 not in table  # the table shows a preview only
    assert detail.status_code == 200
    body = detail.content.decode()
    assert body.lstrip().startswith('<section id="node-detail"')
    assert "x" * 500 in body
    assert "Say something about tides." in body
    assert "RAW-BODY" in body
    assert "sim-fast" in body


def test_without_htmx_a_node_link_opens_the_run_page_on_that_node(version, operator_client):
    run = start(version)

    response = operator_client.get(reverse("console:node", args=[run.id, "answer"]), follow=True)

    assert response.redirect_chain[0][0] == f"{reverse('console:run', args=[run.id])}?node=answer#node-detail"
    html = response.content.decode()
    assert "Node <code>answer</code>" in html


def test_an_unknown_node_is_404(version, operator_client):
    run = start(version)

    assert operator_client.get(reverse("console:node", args=[run.id, "ghost"]), headers=HTMX).status_code == 404


def test_an_operation_swaps_the_graph_in_with_the_new_states(version, operator_client):
    run = start(version)

    response = operator_client.post(reverse("console:run_cancel", args=[run.id]), headers=HTMX)

    body = response.content.decode()
    assert '<section id="run-graph" class="run-graph" hx-swap-oob="true"' in body
    assert 'class="gnode gnode-cancelled"' in body


def test_the_graph_sits_above_the_node_panel_and_the_node_table(version, operator_client):
    run = start(version)

    html = operator_client.get(reverse("console:run", args=[run.id])).content.decode()

    assert html.index('id="run-summary"') < html.index('id="run-graph"') < html.index('id="node-detail"') < html.index('id="node-table"')
