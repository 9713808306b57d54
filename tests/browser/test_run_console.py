"""The live run console in real Chromium: the graph is drawn with a box per node, a click (or
Enter) on a box opens its node panel, states change live while a real worker runs the run, and
a finished run's page sends no more requests."""

from __future__ import annotations

import time

import pytest

from apps.runs.models import Run, RunStatus
from apps.runs.services import run_start
from tests.factories import definition, llm_node, save_workflow, tool_node
from tests.runs.helpers import drain, wait_for_run

pytestmark = pytest.mark.django_db(transaction=True)

# classify -> triage (rules) -> billing -> draft -> reply, and tech (skipped: the rule picks billing).
# The two llm nodes take 1.5 s each in the simulated provider, so the page watches them change.
ROUTED = definition(
    "live-console",
    [
        tool_node("classify"),
        {"id": "triage", "type": "router", "depends_on": ["classify"], "routes": ["billing", "tech"],
         "rules": [{"when": "'invoice' in input.topic | lower", "route": "billing"}], "default": "tech"},
        llm_node("billing", "Answer {{ input.topic }}", depends_on=["triage"]),
        llm_node("draft", "Draft from {{ nodes.billing }}", depends_on=["billing"]),
        tool_node("tech", depends_on=["triage"]),
        tool_node("reply", args={"text": "done"}, depends_on=["draft", "tech"], trigger_rule="none_failed_min_one_success"),
    ],
)  # fmt: skip
NODES = ["classify", "triage", "billing", "draft", "tech", "reply"]
QUIET_SECONDS = 6  # longer than the review badge's 5 s polling period


def start(latency_ms: int, operator) -> Run:
    options = {"simulation": {"latency": f"fixed:{latency_ms}"}}
    return run_start(workflow=save_workflow(ROUTED).workflow, input={"topic": "Invoice 12 was charged twice"}, started_by=operator, options=options)


def status_of(page, node_id: str) -> str:
    return page.get_attribute(f"#gnode-{node_id}", "data-status")


def test_the_graph_updates_live_and_its_nodes_open_the_panel(signed_in_page, live_server, celery_worker, operator):
    run = start(1500, operator)
    page = signed_in_page
    page.goto(f"{live_server.url}/runs/{run.pk}/")
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))

    # the graph: one visible box per node, each with its own place
    page.wait_for_selector("#run-graph-svg")
    boxes = page.locator("svg.graph a.gnode")
    assert boxes.count() == len(NODES)
    places = {(round(b["x"]), round(b["y"])) for b in (boxes.nth(i).bounding_box() for i in range(len(NODES)))}
    assert len(places) == len(NODES)
    first_seen = status_of(page, "draft")
    assert first_seen != "succeeded"  # it has yet to run: its change must come live

    # a click on a box opens its panel in the page
    page.locator("#gnode-classify").click()
    page.wait_for_selector("#node-detail h2:has-text('Node classify')")
    assert "text_stats" in page.inner_text("#node-detail")

    # the states change without a reload
    page.wait_for_selector("#gnode-billing[data-status='running']", timeout=20_000)
    page.wait_for_selector("#gnode-draft[data-status='succeeded']", timeout=30_000)
    assert wait_for_run(run.pk).status == RunStatus.SUCCEEDED
    page.wait_for_selector("#gnode-reply[data-status='succeeded']")
    page.wait_for_function("document.querySelector('#run-progress').innerText.includes('6 of 6 nodes done')")
    assert status_of(page, "tech") == "skipped"
    assert navigations == []

    # a skipped box is dashed and faded, whatever the colours look like
    dash = page.eval_on_selector("#gnode-tech .gnode-box", "el => getComputedStyle(el).strokeDasharray")
    assert dash not in ("", "none")
    assert float(page.eval_on_selector("#gnode-tech", "el => getComputedStyle(el).opacity")) < 1

    # from the keyboard: a box is focusable and Enter opens it
    page.focus("#gnode-draft")
    page.keyboard.press("Enter")
    page.wait_for_selector("#node-detail h2:has-text('Node draft')")
    assert "Raw response" in page.inner_text("#node-detail")
    assert navigations == []

    # the run is over: once the last answers are in, the page sends nothing more
    page.wait_for_timeout(1500)
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.wait_for_timeout(QUIET_SECONDS * 1000)
    assert requests == []


@pytest.mark.usefixtures("unconsumed_queue")
def test_a_finished_runs_page_sends_no_request_after_loading(signed_in_page, live_server, operator):
    run = drain(start(0, operator))
    assert run.status == RunStatus.SUCCEEDED
    page = signed_in_page
    requests: list[tuple[float, str]] = []
    page.on("request", lambda request: requests.append((time.monotonic(), request.url)))

    page.goto(f"{live_server.url}/runs/{run.pk}/")
    page.wait_for_selector("#run-graph-svg")
    loaded = time.monotonic()
    page.wait_for_timeout(QUIET_SECONDS * 1000)

    assert page.locator("svg.graph a.gnode").count() == len(NODES)
    late = [url for at, url in requests if at > loaded + 1]
    assert late == []
    assert sum(url.endswith("/reviews/counts/") for _, url in requests) == 1  # the badge, read once
