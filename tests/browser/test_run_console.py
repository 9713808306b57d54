"""The live run console in real Chromium: the graph is drawn with a box per node, a click (or
Enter) on a box opens its node panel, states change live while a real worker runs the run, and
a finished run's page sends no more requests."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from apps.runs.models import Run, RunStatus
from apps.runs.services import run_start
from tests.browser.conftest import log_requests, requests_sent
from tests.factories import definition, llm_node, save_workflow, tool_node
from tests.runs.helpers import drain, wait_for_run

pytestmark = pytest.mark.django_db(transaction=True)


def routed(name: str, billing_model: str) -> dict:
    """classify -> triage (rules) -> billing -> draft -> reply, and tech (skipped: the rule picks billing)."""
    return definition(
        name,
        [
            tool_node("classify"),
            {"id": "triage", "type": "router", "depends_on": ["classify"], "routes": ["billing", "tech"],
             "rules": [{"when": "'invoice' in input.topic | lower", "route": "billing"}], "default": "tech"},
            llm_node("billing", "Answer {{ input.topic }}", model=billing_model, depends_on=["triage"]),
            llm_node("draft", "Draft from {{ nodes.billing }}", depends_on=["billing"]),
            tool_node("tech", depends_on=["triage"]),
            tool_node("reply", args={"text": "done"}, depends_on=["draft", "tech"], trigger_rule="none_failed_min_one_success"),
        ],
    )  # fmt: skip


NODES = ["classify", "triage", "billing", "draft", "tech", "reply"]
TOPIC = "Invoice 12 was charged twice"
QUIET_SECONDS = 6  # longer than the review badge's 5 s polling period, in the page's own time

# The run is over and the page has had its last answers: a poll was told to stop (HTTP 286), the
# badge read that this answer asks for came back after it, and nothing is in flight.
LAST_ANSWERS_IN = """() => {
  const {sent, done} = window.__xhr;
  const stop = done.findIndex(([, status]) => status === 286);
  return stop >= 0 && done.slice(stop + 1).some(([url]) => url.endsWith("/reviews/counts/")) && done.length === sent.length;
}"""
# A finished run's page has loaded: its one badge read came back and nothing is in flight.
LOADED = """() => {
  const {sent, done} = window.__xhr;
  return done.some(([url]) => url.endsWith("/reviews/counts/")) && done.length === sent.length;
}"""


def start(operator, spec: dict) -> Run:
    options = {"simulation": {"latency": "fixed:0"}}
    # held-* models are served by the held model's worker (its DAGWRIGHT_PROVIDERS), not this process's configuration
    version = save_workflow(spec, check_models=False)
    return run_start(workflow=version.workflow, input={"topic": TOPIC}, started_by=operator, options=options)


def watch_requests(page) -> None:
    """Log the page's requests in the page, and give the test the page's clock: time still flows
    as usual, and ``page.clock.run_for`` fires every timer due in a stretch of it at once."""
    log_requests(page)
    page.clock.install()


def status_of(page, node_id: str) -> str:
    return page.get_attribute(f"#gnode-{node_id}", "data-status")


def test_the_graph_updates_live_and_its_nodes_open_the_panel(signed_in_page, live_server, held_model, operator):
    # billing asks a held model (tests.providers.held): it stays running until the test has seen it
    # so on the page and releases its call; draft can only run after that
    run = start(operator, routed("live-console", billing_model="held-billing"))
    page = signed_in_page
    watch_requests(page)
    page.goto(f"{live_server.url}/runs/{run.pk}/")
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))

    # the graph: one visible box per node, each with its own place
    page.wait_for_selector("#run-graph-svg")
    boxes = page.locator("svg.graph a.gnode")
    assert boxes.count() == len(NODES)
    places = {(round(b["x"]), round(b["y"])) for b in (boxes.nth(i).bounding_box() for i in range(len(NODES)))}
    assert len(places) == len(NODES)
    assert status_of(page, "draft") != "succeeded"  # it cannot run before billing's call is released

    # a click on a box opens its panel in the page (classify has run by the time billing calls its model)
    call = held_model.wait_for_call(TOPIC)
    page.locator("#gnode-classify").click()
    page.wait_for_selector("#node-detail h2:has-text('Node classify')")
    assert "text_stats" in page.inner_text("#node-detail")

    # the states change without a reload: billing is running (its call is held) until released
    expect(page.locator("#gnode-billing")).to_have_attribute("data-status", "running", timeout=20_000)
    assert status_of(page, "draft") != "succeeded"
    call.release()
    expect(page.locator("#gnode-draft")).to_have_attribute("data-status", "succeeded", timeout=30_000)
    assert wait_for_run(run.pk).status == RunStatus.SUCCEEDED
    expect(page.locator("#gnode-reply")).to_have_attribute("data-status", "succeeded")
    expect(page.locator("#run-progress")).to_contain_text("6 of 6 nodes done")
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

    # the run is over: once the last answers are in, the page sends nothing more, however long it stays
    page.wait_for_function(LAST_ANSWERS_IN)
    sent = requests_sent(page)
    page.clock.run_for(QUIET_SECONDS * 1000)  # every polling timer the page still had would fire in this
    assert requests_sent(page) == sent


@pytest.mark.usefixtures("unconsumed_queue")
def test_a_finished_runs_page_sends_no_request_after_loading(signed_in_page, live_server, operator):
    run = drain(start(operator, routed("finished-console", billing_model="sim-fast")))
    assert run.status == RunStatus.SUCCEEDED
    page = signed_in_page
    watch_requests(page)

    page.goto(f"{live_server.url}/runs/{run.pk}/")
    page.wait_for_selector("#run-graph-svg")
    page.wait_for_function(LOADED)
    sent = requests_sent(page)
    page.clock.run_for(QUIET_SECONDS * 1000)  # every polling timer the page had would fire in this

    assert page.locator("svg.graph a.gnode").count() == len(NODES)
    assert requests_sent(page) == sent
    assert sum(url.endswith("/reviews/counts/") for url in sent) == 1  # the badge, read once
