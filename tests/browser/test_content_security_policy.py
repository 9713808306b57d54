"""Every page under the Content-Security-Policy in real Chromium: nothing on any page is refused
(no ``securitypolicyviolation`` event, no console error), and the page works as before."""

from __future__ import annotations

import pytest

from apps.runs.services import run_start
from apps.workflows.services import workflow_save
from tests.browser.conftest import sign_in
from tests.factories import definition, llm_node, save_workflow, tool_node
from tests.reviews.helpers import start_gated_run
from tests.runs.helpers import drain

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("unconsumed_queue")]

# Recorded in the page itself, from before any of its scripts runs, for every document it loads.
LISTEN_FOR_VIOLATIONS = """(() => {
  window.__csp = [];
  document.addEventListener("securitypolicyviolation", (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`));
})();"""


def watch(page) -> list[str]:
    """Console errors of ``page`` from now on (CSP refusals are logged there too)."""
    errors: list[str] = []
    page.on("console", lambda message: errors.append(f"{page.url}: {message.text}") if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(f"{page.url}: {error}"))
    page.add_init_script(LISTEN_FOR_VIOLATIONS)
    return errors


def visit(page, url: str, errors: list[str]) -> None:
    response = page.goto(url)
    assert response.status == 200, f"{url}: {response.status}"
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page.wait_for_load_state("networkidle")  # htmx's load-triggered partials have come back and been swapped in
    assert page.evaluate("window.__csp") == [], f"{url}: {page.evaluate('window.__csp')}"
    assert errors == []


def story(prompt: str) -> dict:
    return definition("story", [tool_node("measure"), llm_node("answer", prompt, depends_on=["measure"])])


def test_no_page_breaks_the_content_security_policy(browser, live_server, admin, reviewer):
    version = save_workflow(story("Summarise {{ input.topic }}."))
    workflow_save(spec=story("Summarise {{ input.topic }} warmly."), user=admin)  # v2, a draft: the diff and rollback pages have two versions
    finished = drain(run_start(workflow=version.workflow, input={"topic": "tides"}))
    gated, task = start_gated_run()

    context, page = sign_in(browser, live_server, admin)
    errors = watch(page)
    try:
        for path in [
            "/runs/",
            f"/runs/{finished.pk}/",
            f"/runs/{gated.pk}/",
            f"/runs/{finished.pk}/nodes/answer/",
            "/overview/",
            "/workflows/",
            "/workflows/story/",
            "/workflows/story/versions/",
            "/workflows/story/versions/1/",
            "/workflows/story/versions/1/diff/2/",
            "/workflows/story/versions/1/rollback/",
            "/workflows/story/edit/",
            "/workflows/story/run/",
            "/admin/",
        ]:
            visit(page, f"{live_server.url}{path}", errors)

        visit(page, f"{live_server.url}/workflows/new/", errors)
        page.locator(".cm-content").click()  # the CodeMirror editor is up, and checks what is typed
        page.keyboard.press("Control+End")
        page.keyboard.type("\n# a comment")
        page.wait_for_function("() => document.getElementById('validation-status').textContent.trim() !== 'Checking…'")
        page.wait_for_load_state("networkidle")
        assert page.evaluate("window.__csp") == []
        assert errors == []
    finally:
        context.close()

    context, page = sign_in(browser, live_server, reviewer)
    errors = watch(page)
    try:
        for path in ["/reviews/", f"/reviews/{task.pk}/", "/reviews/history/"]:
            visit(page, f"{live_server.url}{path}", errors)
    finally:
        context.close()

    context = browser.new_context()
    page = context.new_page()
    errors = watch(page)
    try:
        for path in ["/login/", "/admin/login/"]:
            visit(page, f"{live_server.url}{path}", errors)
    finally:
        context.close()
