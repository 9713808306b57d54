"""An operator cancels, retries and re-runs from a node in real Chromium (htmx, CSRF, confirm)."""

from __future__ import annotations

import pytest

from apps.runs.models import Run, RunStatus
from apps.runs.services import run_start
from tests.factories import definition, fan_out_definition, llm_node, save_workflow, tool_node
from tests.runs.helpers import drain

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("unconsumed_queue")]
FAST = {"simulation": {"latency": "fixed:0"}}


def start(spec, operator) -> Run:
    return run_start(workflow=save_workflow(spec).workflow, input={"topic": "tides"}, started_by=operator, options=FAST)


def test_an_operator_cancels_an_active_run(signed_in_page, live_server, operator):
    run = start(definition(), operator)  # its node stays queued: no worker consumes this test's queue
    page = signed_in_page
    page.goto(f"{live_server.url}/runs/{run.pk}/")
    page.on("dialog", lambda dialog: dialog.accept())  # the hx-confirm question
    page.get_by_role("button", name="Cancel run").click()
    page.get_by_text(f"cancelled by {operator.username}").first.wait_for()
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED


def test_an_operator_retries_a_failed_run(signed_in_page, live_server, operator):
    broken = definition(nodes=[tool_node("merge", "json_merge", {"objects": "{{ input.topic }}"}), llm_node("after", depends_on=["merge"])])
    run = drain(start(broken, operator))
    assert run.status == RunStatus.FAILED
    page = signed_in_page
    page.goto(f"{live_server.url}/runs/{run.pk}/")
    page.get_by_role("button", name="Retry failed nodes").click()
    page.get_by_role("button", name="Cancel run").wait_for()  # the run is active again
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING
    assert run.node_runs.get(node_id="merge").status == "queued"


def test_an_operator_previews_and_starts_a_rerun_from_a_node(signed_in_page, live_server, operator):
    run = drain(start(fan_out_definition(), operator))
    page = signed_in_page
    page.goto(f"{live_server.url}/runs/{run.pk}/")
    page.select_option("#rerun-node", "branch_1")
    page.get_by_role("button", name="Preview").click()
    page.get_by_role("button", name="Start the re-run").click()
    page.wait_for_url(lambda url: "/runs/" in url and str(run.pk) not in url)
    new = Run.objects.get(rerun_of=run)
    assert new.rerun_from_node == "branch_1"
    assert page.url.rstrip("/").endswith(str(new.pk))
