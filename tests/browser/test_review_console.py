"""The review console in real Chromium: a reviewer works the queue, and hostile model output
stays inert on every page that shows it."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from apps.reviews.models import ReviewStatus, ReviewTask
from apps.runs.models import Run, RunStatus
from apps.runs.services import run_start
from tests.browser.conftest import log_requests, sign_in
from tests.factories import definition, save_workflow, tool_node
from tests.reviews.helpers import gated_definition, review_node, start_gated_run
from tests.runs.helpers import drain

pytestmark = pytest.mark.django_db(transaction=True)

# What a model might write, each aimed at a different way of running code in a page.
HOSTILE = " ".join(
    [
        "<script>window.__pwned = (window.__pwned || 0) + 1</script>",
        "<img src=x onerror=alert(1)>",
        '<a id="js-link" href="javascript:alert(2)">click</a>',
        '<div hx-get="/admin/" hx-trigger="load">htmx</div>',
        "![x](javascript:alert(3))",
        '<svg onload=alert(4)><circle r="5"/></svg>',
    ]
)


def wait_for_review(run: Run, timeout: float = 30) -> ReviewTask:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = ReviewTask.objects.filter(run=run).first()
        if task is not None:
            return task
        time.sleep(0.1)
    raise AssertionError(f"the run never reached its gate: {list(run.node_runs.values_list('node_id', 'status'))}")


def test_a_reviewer_approves_from_the_inbox_and_watches_the_run_continue(browser, live_server, celery_worker, reviewer):
    version = save_workflow(gated_definition("browser-gate"))
    run = run_start(workflow=version.workflow, input={"topic": "a late parcel"})
    task = wait_for_review(run)
    context, page = sign_in(browser, live_server, reviewer, timeout_ms=20_000)
    try:
        page.goto(f"{live_server.url}/reviews/")
        page.wait_for_selector("#review-counts .nav-badge")
        page.click(f"#review-row-{task.pk} a[href='/reviews/{task.pk}/']")
        page.wait_for_url(f"{live_server.url}/reviews/{task.pk}/")
        assert "a late parcel" in page.inner_text("main")

        page.locator("#review-approve").click()
        page.wait_for_selector("#decision-outcome")
        assert reviewer.username in page.inner_text("#decision-outcome")

        page.click(f"#decision-panel a[href='/runs/{run.pk}/']")
        page.wait_for_url(f"{live_server.url}/runs/{run.pk}/")
        navigations = []
        page.on("framenavigated", lambda frame: navigations.append(frame.url))
        # the run goes on in the worker; the page follows it live, without a reload
        page.wait_for_function("() => document.querySelector('main').innerText.includes('succeeded')", timeout=30_000)
        run.refresh_from_db()
        assert run.status == RunStatus.SUCCEEDED
        assert navigations == []
        task.refresh_from_db()
        assert task.status == ReviewStatus.APPROVED
        assert task.decided_by == reviewer
        resumed = run.node_runs.get(node_id="send").started_at - task.decided_at
        print(f"the node after the gate started {resumed.total_seconds() * 1000:.0f} ms after the approval")
    finally:
        context.close()


@pytest.mark.usefixtures("unconsumed_queue")
def test_hostile_model_output_stays_inert_on_every_page_that_shows_it(browser, live_server, reviewer, admin):
    nodes = [tool_node("draft", tool="render", args={"template": "{{ input.topic }}"}), review_node(instructions=HOSTILE)]
    run = drain(run_start(workflow=save_workflow(definition("hostile-pages", nodes)).workflow, input={"topic": HOSTILE}))
    task = ReviewTask.objects.get(run=run)
    assert task.subject == HOSTILE
    context, page = sign_in(browser, live_server, reviewer, timeout_ms=20_000)
    dialogs, requests = [], []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.on("request", lambda request: requests.append(request.url))
    log_requests(page)
    try:
        for path in ["/reviews/", f"/reviews/{task.pk}/"]:
            page.goto(f"{live_server.url}{path}")
            handlers_had_their_chance(page)
            assert_inert(page, path)

        page.fill("#edit-output", HOSTILE + " (edited)")
        page.locator("form.decision-edit button").click()
        page.wait_for_selector("#decision-outcome")
        assert_inert(page, "the decision panel")
        for path in ["/reviews/history/", f"/reviews/{task.pk}/", f"/runs/{run.pk}/", f"/runs/{run.pk}/nodes/draft/", f"/runs/{run.pk}/nodes/gate/"]:
            page.goto(f"{live_server.url}{path}")
            handlers_had_their_chance(page)
            assert_inert(page, path)
            assert "<script>" in page.inner_text("main"), f"{path}: the output is not shown as text"
    finally:
        context.close()
    assert dialogs == []
    assert not [url for url in requests if url.rstrip("/").endswith("/admin")], "an hx-get from model output was sent"


def handlers_had_their_chance(page) -> None:
    """Wait until whatever got through would have run: ``goto`` returns after the load event (an
    image's onerror, an svg's onload and inline scripts come before it), and once the navigation's
    own badge, fetched on htmx's ``load`` trigger, has come back, htmx has processed the whole page
    in the pass that would have fired a hostile ``load`` trigger too (its request then shows in
    ``requests``, read after the context is closed)."""
    page.wait_for_function("() => window.__xhr.done.some(([url]) => url.endsWith('/reviews/counts/'))")


def assert_inert(page, where: str) -> None:
    assert page.evaluate("window.__pwned === undefined"), f"{where}: a script from model output ran"
    found = page.evaluate(
        """() => ({
            images: [...document.querySelectorAll('main img')].length,
            svg: [...document.querySelectorAll('main svg[onload]')].length,
            jsLinks: [...document.querySelectorAll('a')]
                .filter(a => (a.getAttribute('href') || a.getAttribute('xlink:href') || '').trim().toLowerCase().startsWith('javascript:'))
                .length,
            htmx: document.querySelectorAll('[hx-get="/admin/"]').length,
            injected: document.querySelectorAll('#js-link').length,
        })"""
    )
    assert found == {"images": 0, "svg": 0, "jsLinks": 0, "htmx": 0, "injected": 0}, f"{where}: {found}"


@pytest.mark.usefixtures("unconsumed_queue")
def test_a_reviewer_decides_with_the_keyboard_alone(browser, live_server, reviewer):
    _, first = start_gated_run("keys-reject")
    _, second = start_gated_run("keys-approve")
    context, page = sign_in(browser, live_server, reviewer, timeout_ms=20_000)
    try:
        page.goto(f"{live_server.url}/reviews/{first.pk}/")
        page.locator("h1").click()  # focus on the page, not on a field
        page.keyboard.press("r")
        expect(page.locator("#reject-reason")).to_be_focused()
        page.keyboard.type("Wrong customer")
        page.keyboard.press("Tab")  # to the Reject button
        page.keyboard.press("Enter")
        page.wait_for_selector("#decision-outcome")

        page.goto(f"{live_server.url}/reviews/{second.pk}/")
        # autofocus: Enter approves (the browser applies autofocus in a later rendering step: wait for it)
        expect(page.locator("#review-approve")).to_be_focused()
        page.keyboard.press("Enter")
        page.wait_for_selector("#decision-outcome")
    finally:
        context.close()
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, first.decisions.get().comment) == (ReviewStatus.REJECTED, "Wrong customer")
    assert second.status == ReviewStatus.APPROVED
