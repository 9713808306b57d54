"""The run page: header, node table that polls every second until the run is over, node details."""

from __future__ import annotations

import json
import re
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from apps.runs.models import NodeRun, NodeStatus, ProviderCall, Run, RunStatus

from .helpers import Element, facts, finish, parse_html, start, table_cell

HTMX = {"HX-Request": "true"}
POLL_TRIGGER = 'hx-trigger="every 1s"'


def node_status(page: Element, node_id: str) -> Element:
    """The status badge in ``node_id``'s row of the node table."""
    table = page.one(id="node-table").one("table")
    return table_cell(table, table.one(id=f"node-row-{node_id}"), "Status").one("span", cls="status")


def run_status(page: Element) -> Element:
    """The status badge of the run's summary."""
    return facts(page.one(id="run-summary"))["Status"].one("span", cls="status")


def headed(page: Element, heading: str, tag: str = "section") -> Element:
    """The ``tag`` element whose own heading (an ``h2`` or ``h3`` child) says ``heading``."""
    [found] = [element for element in page.all(tag) if [h.text for h in element.elements() if h.tag in ("h2", "h3")] == [heading]]
    return found


def test_the_page_shows_the_run_its_nodes_and_its_input(chain_version, operator, operator_client):
    run = start(chain_version, operator, topic="spring tides")
    NodeRun.objects.filter(run=run, node_id="measure").update(status=NodeStatus.SUCCEEDED, attempt=1, output={"words": 2}, tokens_in=0)
    Run.objects.filter(pk=run.pk).update(tokens_in=321, tokens_out=45, cost=Decimal("0.0042"))

    page = parse_html(operator_client.get(reverse("console:run", args=[run.id])).content)

    assert page.one("h1").one("span", cls="mono").attrs["title"] == str(run.id)
    summary = facts(page.one(id="run-summary"))
    assert (run_status(page).label, run_status(page).classes) == ("running", {"status", "status-running"})
    assert summary["Workflow"].text == "chain"
    assert summary["Version"].text == f"v1 {chain_version.content_hash[:12]}"
    assert summary["Started by"].text == operator.username
    assert summary["Tokens in / out"].text == "321 / 45"
    assert summary["Cost"].text == "$0.004200"
    table = page.one(id="node-table").one("table")
    assert [row.attrs["id"] for row in table.one("tbody").all("tr")] == ["node-row-measure", "node-row-answer"]  # topological order
    assert (node_status(page, "measure").label, node_status(page, "answer").label) == ("succeeded", "pending")
    assert table_cell(table, table.one(id="node-row-measure"), "Output").text == '{"words": 2}'  # the output preview
    assert json.loads(headed(page, "Input").one("pre").text) == {"topic": "spring tides"}  # the input, pretty JSON


def test_an_active_run_polls_its_node_table(version, operator_client):
    run = start(version)
    url = reverse("console:run_nodes", args=[run.id])

    page = parse_html(operator_client.get(reverse("console:run", args=[run.id])).content)
    partial = operator_client.get(url, headers=HTMX)

    polling = page.one(id="node-table")
    assert (polling.attrs["hx-get"], polling.attrs["hx-trigger"]) == (url, "every 1s")
    assert partial.status_code == 200
    body = partial.content.decode()
    assert body.lstrip().startswith('<div id="node-table"')
    swapped = parse_html(body)
    assert swapped.elements()[0].attrs["id"] == "node-table"
    assert (swapped.one(id="node-table").attrs["hx-get"], swapped.one(id="node-table").attrs["hx-trigger"]) == (url, "every 1s")
    assert swapped.one(id="run-summary").attrs["hx-swap-oob"] == "true"  # the header follows along
    assert not swapped.all("html")


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
    assert run_status(parse_html(body)).label == status.replace("_", " ")  # the final state is still swapped in


def test_polling_sees_a_node_progress(version, operator_client):
    run = start(version)
    url = reverse("console:run_nodes", args=[run.id])
    assert node_status(parse_html(operator_client.get(url, headers=HTMX).content), "answer").label == "queued"

    NodeRun.objects.filter(run=run).update(status=NodeStatus.RUNNING, attempt=1, started_at=timezone.now())

    badge = node_status(parse_html(operator_client.get(url, headers=HTMX).content), "answer")
    assert (badge.label, badge.classes) == ("running", {"status", "status-running"})


def test_a_failed_run_shows_its_error(version, operator_client):
    run = finish(start(version), RunStatus.FAILED, error="provider said no")
    Run.objects.filter(pk=run.pk).update(error="node 'answer' failed: provider said no")

    page = parse_html(operator_client.get(reverse("console:run", args=[run.id])).content)

    alert = page.one(id="run-summary").one(role="alert")
    assert alert.one("pre").text == "node 'answer' failed: provider said no"
    table = page.one(id="node-table").one("table")
    assert table_cell(table, table.one(id="node-row-answer"), "Error").text == "provider said no"


def test_a_node_opens_with_its_full_output_input_and_provider_calls(version, operator_client):
    run = finish(start(version), output={"text": "x" * 500})
    node = NodeRun.objects.get(run=run)
    NodeRun.objects.filter(pk=node.pk).update(input={"prompt": "Say something about tides."})
    call = ProviderCall.objects.create(
        run=run, node_run=node, attempt=1, provider="simulated", model="sim-fast", request={"prompt": "Say"}, raw_response="RAW-BODY", tokens_in=5
    )

    html = operator_client.get(reverse("console:run", args=[run.id])).content.decode()
    detail = operator_client.get(reverse("console:node", args=[run.id, "answer"]), headers=HTMX)

    assert "x" * 500 not in html  # the table shows a preview only
    table = parse_html(html).one(id="node-table").one("table")
    assert table_cell(table, table.one(id="node-row-answer"), "Output").text.startswith('{"text": "xxx')
    assert detail.status_code == 200
    body = detail.content.decode()
    assert body.lstrip().startswith('<section id="node-detail"')
    panel = parse_html(body).one(id="node-detail")
    assert json.loads(headed(panel, "Output", "div").one("pre").text) == {"text": "x" * 500}  # the full output
    assert json.loads(headed(panel, "Input", "div").one("pre").text) == {"prompt": "Say something about tides."}
    assert panel.one("pre", id="rendered-prompt").text == "Say something about tides."
    made = panel.one("article", id=f"call-{call.pk}")
    assert made.one("pre", cls="raw-response").text == "RAW-BODY"
    assert made.one("h4").one("code").text == "sim-fast"


def test_without_htmx_a_node_link_opens_the_run_page_on_that_node(version, operator_client):
    run = start(version)

    response = operator_client.get(reverse("console:node", args=[run.id, "answer"]), follow=True)

    assert response.redirect_chain[0][0] == f"{reverse('console:run', args=[run.id])}?node=answer#node-detail"
    panel = parse_html(response.content).one(id="node-detail")
    assert "hidden" not in panel.attrs
    assert panel.one("h2").one("code").text == "answer"


def test_an_unknown_node_is_404(version, operator_client):
    run = start(version)

    assert operator_client.get(reverse("console:node", args=[run.id, "ghost"]), headers=HTMX).status_code == 404


def test_an_operation_swaps_the_graph_in_with_the_new_states(version, operator_client):
    run = start(version)

    response = operator_client.post(reverse("console:run_cancel", args=[run.id]), headers=HTMX)

    graph = parse_html(response.content).one("section", id="run-graph")
    assert (graph.attrs["class"], graph.attrs["hx-swap-oob"]) == ("run-graph", "true")
    answer = graph.one(id="gnode-answer")
    assert (answer.attrs["data-status"], answer.classes) == ("cancelled", {"gnode", "gnode-cancelled"})


def test_the_graph_sits_above_the_node_panel_and_the_node_table(version, operator_client):
    run = start(version)

    html = operator_client.get(reverse("console:run", args=[run.id])).content.decode()

    assert html.index('id="run-summary"') < html.index('id="run-graph"') < html.index('id="node-detail"') < html.index('id="node-table"')
