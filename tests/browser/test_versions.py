"""Version history in real Chromium: an admin compares v1 and v2 and sees the changed prompt
highlighted word by word, rolls back to v1 through the confirmation, and the run started
afterwards from the console's start form pins v1."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from apps.audit.models import AuditEntry
from apps.runs.models import Run
from apps.workflows.models import Workflow
from apps.workflows.services import workflow_save
from tests.browser.conftest import sign_in
from tests.factories import definition, llm_node, tool_node

pytestmark = pytest.mark.django_db(transaction=True)

PROMPT_V1 = "Summarise the {{ input.topic }} briefly for a customer."
PROMPT_V2 = "Summarise the {{ input.topic }} warmly and briefly for a loyal customer."


def story(prompt: str) -> dict:
    return definition("story", [tool_node("measure"), llm_node("answer", prompt, depends_on=["measure"])])


TRANSPARENT = ("rgba(0, 0, 0, 0)", "transparent")


def test_an_admin_compares_two_versions_rolls_back_and_the_next_run_pins_the_older_one(browser, live_server, admin):
    workflow_save(spec=story(PROMPT_V1), user=admin, publish=True)
    workflow_save(spec=story(PROMPT_V2), user=admin, publish=True)
    context, page = sign_in(browser, live_server, admin)
    try:
        # the versions page: v2 published, v1 not; compare v1 with v2 through the form
        page.goto(f"{live_server.url}/workflows/story/")
        page.click("#versions-link")
        expect(page).to_have_url(f"{live_server.url}/workflows/story/versions/")
        expect(page.locator("#version-2 .tag-published")).to_have_text("published")
        expect(page.locator("#version-1 .tag-published")).to_have_count(0)
        page.select_option("#compare-a", "1")
        page.select_option("#compare-b", "2")
        page.get_by_role("button", name="Compare").click()
        expect(page).to_have_url(f"{live_server.url}/workflows/story/versions/1/diff/2/")

        # the changed prompt, word by word: what v2 added is marked and highlighted, nothing was taken away
        prompt = page.locator("#diff-changed li.field-change[data-field='prompt'] .word-diff")
        expect(prompt.locator("ins")).to_have_text(["warmly and", "loyal"])
        expect(prompt.locator("del")).to_have_count(0)
        assert prompt.locator("ins").first.evaluate("el => getComputedStyle(el).backgroundColor") not in TRANSPARENT
        expect(page.locator("#unified-diff .diff-added").filter(has_text="warmly")).to_have_count(1)

        # roll back to v1: the confirmation shows the change from the published v2 first
        page.goto(f"{live_server.url}/workflows/story/versions/1/")
        page.click("#rollback-link")
        expect(page.locator("h1")).to_have_text("Roll back to v1")
        expect(page.locator("li.field-change[data-field='prompt'] del")).to_have_text(["warmly and", "loyal"])
        page.get_by_role("button", name="Roll back to v1").click()
        expect(page).to_have_url(re.compile(r"/workflows/story/versions/\?published=1$"))
        expect(page.locator("#published-notice")).to_contain_text("v1 is now published")
        expect(page.locator("#version-1 .tag-published")).to_have_text("published")
        workflow = Workflow.objects.select_related("published_version").get(name="story")
        assert workflow.published_version.number == 1
        entry = AuditEntry.objects.filter(workflow_name="story").order_by("-seq").first()
        assert (entry.event, entry.actor, entry.after["version"]) == ("rolled_back", admin.username, 1)

        # a run started from the console's form afterwards runs v1
        page.goto(f"{live_server.url}/workflows/story/run/")
        page.fill("[name='input-topic']", "tides")
        page.get_by_role("button", name="Start run", exact=True).click()
        expect(page).to_have_url(re.compile(r"/runs/[0-9a-f-]{36}/$"))
        run = Run.objects.select_related("version").get(pk=page.url.rstrip("/").rsplit("/", 1)[1])
        assert run.version.number == 1
        assert run.version.definition["nodes"][1]["prompt"] == PROMPT_V1
    finally:
        context.close()


HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"><b id="injected">bold</b>'


def test_hostile_text_in_a_definition_stays_inert_on_the_version_pages(browser, live_server, admin):
    workflow_save(spec=story(PROMPT_V1), user=admin, publish=True)
    hostile = story(f"{PROMPT_V1} {HOSTILE}")
    hostile["description"] = HOSTILE
    workflow_save(spec=hostile, user=admin)
    context, page = sign_in(browser, live_server, admin)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    try:
        for path in ("versions/2/", "versions/1/diff/2/", "versions/2/rollback/", "versions/"):
            page.goto(f"{live_server.url}/workflows/story/{path}")
            page.wait_for_load_state("load")  # every image has loaded or failed, so an onerror would have run
            assert page.evaluate("window.__pwned") is None, path
            expect(page.locator("#injected")).to_have_count(0)
            expect(page.locator("main img")).to_have_count(0)
        page.goto(f"{live_server.url}/workflows/story/versions/1/diff/2/")
        expect(page.locator("li.field-change[data-field='prompt'] ins")).to_contain_text(["<script>window.__pwned = 1</script>"])
        assert dialogs == []
    finally:
        context.close()
