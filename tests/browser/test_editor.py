"""The workflow editor in real Chromium, with a real worker: an admin writes a workflow from the
template, sees a problem marked at its line as they type, fixes it and watches the preview gain a
box, test-runs the draft and watches it finish live, publishes after the diff, edits a prompt and
publishes v2. Without JavaScript the same page still checks and saves."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from apps.console.editor import STARTING_TEMPLATE
from apps.runs.models import Run
from apps.workflows.models import Workflow
from tests.browser.conftest import sign_in
from tests.factories import PASSWORD, definition, llm_node, save_workflow

pytestmark = pytest.mark.django_db(transaction=True)

LINES = STARTING_TEMPLATE.splitlines()
NAME_LINE = LINES.index("name: my-workflow") + 1
DEPENDS_LINE = LINES.index("    depends_on: [summarize]") + 1
NEW_NODE = """
  - id: translate
    type: llm
    model: sim-fast
    prompt: Translate {{ input.text }} into French.
"""


def cursor_line(page) -> int:
    return page.evaluate("(() => { const s = dagwrightEditor.view.state; return s.doc.lineAt(s.selection.main.head).number; })()")


def go_to(page, line: int, column: int) -> None:
    page.evaluate(f"dagwrightEditor.goTo({line}, {column})")


def type_before(page, text: str, typed: str) -> None:
    """Types ``typed`` just before ``text`` in the editor (where a click there would put the cursor),
    then waits for the live check to find no problem with it."""
    page.evaluate(
        "(text) => { const v = dagwrightEditor.view; const at = v.state.doc.toString().indexOf(text); v.dispatch({selection: {anchor: at}}); v.focus(); }",
        text,
    )
    page.keyboard.type(typed)
    expect(page.locator("#validation-status")).to_have_text("No problems: ready to save.")


def test_an_admin_writes_checks_test_runs_and_publishes_a_workflow(browser, live_server, celery_worker, admin):
    context, page = sign_in(browser, live_server, admin, timeout_ms=30_000)
    try:
        page.goto(f"{live_server.url}/workflows/new/")
        expect(page.locator("#definition-editor .cm-content")).to_be_visible()
        expect(page.locator("#definition-text")).to_be_hidden()  # the textarea is the form field behind the editor
        expect(page.locator("#no-problems")).to_be_visible()
        expect(page.locator("#preview-graph-svg a.gnode")).to_have_count(2)

        # name it: typed over the template's name
        go_to(page, NAME_LINE, len("name: ") + 1)
        page.keyboard.press("Shift+End")
        page.keyboard.type("browser-flow")

        # a dependency on a node that does not exist: marked at its line, listed, the box flagged
        go_to(page, DEPENDS_LINE, len("    depends_on: [summarize") + 1)
        page.keyboard.type(", translate")
        problem = page.locator("#problem-list li.problem")
        expect(problem).to_have_count(1)
        expect(problem).to_contain_text("translate")
        expect(problem).to_have_attribute("data-line", str(DEPENDS_LINE))
        expect(problem.locator("a.problem-where")).to_have_text(re.compile(rf"^line {DEPENDS_LINE}, column \d+$"))
        expect(page.locator(".cm-lintRange-error")).to_have_text("translate")
        expect(page.locator(".cm-gutter-lint .cm-lint-marker-error")).to_have_count(1)
        expect(page.locator("#pnode-title")).to_have_class(re.compile(r"\bgnode-problem\b"))
        expect(page.locator("#validation-status")).to_have_text("1 problem.")
        # a click on the problem puts the cursor on its line
        go_to(page, 1, 1)
        problem.locator("a.problem-where").click()
        assert cursor_line(page) == DEPENDS_LINE

        # fixed by writing the missing node: no problem left, and the preview gains its box
        page.evaluate("(() => { const v = dagwrightEditor.view; v.dispatch({selection: {anchor: v.state.doc.length}}); v.focus(); })()")
        page.keyboard.insert_text(NEW_NODE.lstrip("\n"))
        expect(page.locator("#no-problems")).to_be_visible()
        expect(page.locator(".cm-lintRange-error")).to_have_count(0)
        expect(page.locator("#preview-graph-svg a.gnode")).to_have_count(3)
        expect(page.locator("#preview-graph-svg path.gedge")).to_have_count(2)
        # a click on a box puts the cursor on its node
        page.locator("#pnode-translate").click()
        assert cursor_line(page) == len(STARTING_TEMPLATE.splitlines()) + 1

        # test run: the draft is saved, the input form comes from its schema, the run is followed live
        page.locator("button[name=action][value=test]").click()
        page.wait_for_url(re.compile(r"/workflows/browser-flow/test-run/\?version=1$"))
        page.fill("#id_input-text", "Tides rise and fall twice a day.")
        page.get_by_role("button", name="Start the test run").click()
        page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}/$"))
        for node_id in ("summarize", "title", "translate"):
            expect(page.locator(f"#gnode-{node_id}")).to_have_attribute("data-status", "succeeded")
        run = Run.objects.get(workflow__name="browser-flow")
        assert run.is_test
        assert run.version.number == 1
        assert Workflow.objects.get(name="browser-flow").published_version_id is None

        # publish v1 after seeing what it contains
        page.goto(f"{live_server.url}/workflows/browser-flow/edit/")
        expect(page.locator("#definition-editor .cm-content")).to_be_visible()
        page.get_by_role("button", name="Publish…").click()
        expect(page.locator(".diff-node-added[data-node=translate]")).to_be_visible()
        page.locator("#confirm-publish").click()
        page.wait_for_url(re.compile(r"/workflows/browser-flow/edit/\?published=1$"))
        expect(page.locator("#editor-notice")).to_contain_text("Published v1")

        # edit a prompt, save it with Ctrl+S, then publish it as v2 after the word diff
        type_before(page, "Suggest a title", "Kindly ")
        page.keyboard.press("Control+s")
        page.wait_for_url(re.compile(r"/workflows/browser-flow/edit/\?saved=2$"))
        page.get_by_role("button", name="Publish…").click()
        expect(page.locator(".diff-node-changed[data-node=title] ins")).to_have_text("Kindly ")
        expect(page.locator("#unified-diff")).to_contain_text("Kindly Suggest a title")
        page.locator("#confirm-publish").click()
        page.wait_for_url(re.compile(r"/workflows/browser-flow/edit/\?published=2$"))
        workflow = Workflow.objects.get(name="browser-flow")
        assert workflow.published_version.number == 2
        assert workflow.published_by == admin

        # unsaved changes: leaving the page asks first
        type_before(page, "Kindly", "Please, ")
        with page.expect_event("dialog") as leaving:
            page.close(run_before_unload=True)
        assert leaving.value.type == "beforeunload"
        leaving.value.accept()
    finally:
        context.close()


def test_without_javascript_the_page_checks_and_saves(browser, live_server, admin):
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.goto(f"{live_server.url}/login/")
        page.fill("input[name=username]", admin.username)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.goto(f"{live_server.url}/workflows/new/")
        textarea = page.locator("#definition-text")
        expect(textarea).to_be_visible()
        text = STARTING_TEMPLATE.replace("my-workflow", "plain-form").replace("[summarize]", "[summarize, translate]")
        textarea.fill(text)
        page.get_by_role("button", name="Check").click()
        problem = page.locator("#problem-list li.problem")
        expect(problem).to_have_count(1)
        expect(problem.locator("a.problem-where")).to_contain_text(f"line {DEPENDS_LINE},")
        expect(page.locator("#pnode-title")).to_have_class(re.compile(r"\bgnode-problem\b"))
        assert not Workflow.objects.filter(name="plain-form").exists()

        page.locator("#definition-text").fill(text.replace(", translate", ""))
        page.get_by_role("button", name="Save draft").click()
        page.wait_for_url(re.compile(r"/workflows/plain-form/edit/\?saved=1$"))
        expect(page.locator("#editor-notice")).to_contain_text("Saved as draft v1")
        assert Workflow.objects.get(name="plain-form").versions.count() == 1
    finally:
        context.close()


# What an author (or a model that wrote a definition) might put in a prompt, each aimed at another way of running code.
HOSTILE = " ".join(
    [
        "<script>window.__pwned = (window.__pwned || 0) + 1</script>",
        "<img src=x onerror=\"window.__pwned = 'img'\">",
        '<svg onload="window.__pwned = 1"><circle r="5"/></svg>',
        '<div hx-get="/admin/" hx-trigger="load">htmx</div>',
    ]
)


def test_hostile_definition_text_stays_inert_in_the_editor_the_preview_and_the_diff(browser, live_server, admin):
    save_workflow(definition("hostile-text", [llm_node("draft", f"Topic first. {HOSTILE} {{{{ input.topic }}}}", description=HOSTILE)], description=HOSTILE))
    context, page = sign_in(browser, live_server, admin)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    try:
        page.goto(f"{live_server.url}/workflows/hostile-text/edit/")
        expect(page.locator("#definition-editor .cm-content")).to_contain_text("<script>window.__pwned")
        expect(page.locator("#pnode-draft")).to_be_visible()
        type_before(page, "Topic first.", "Careful. ")
        page.get_by_role("button", name="Publish…").click()
        expect(page.locator(".diff-node-changed[data-node=draft] ins")).to_have_text("Careful. ")
        expect(page.locator(".diff-node-changed[data-node=draft] .word-diff")).to_contain_text("<svg onload=")
        expect(page.locator("#unified-diff")).to_contain_text("<img src=x")
        assert page.evaluate("window.__pwned") is None
        assert page.locator("main img, main div[hx-get], main circle").count() == 0
        assert dialogs == []
    finally:
        context.close()


def test_the_editor_completes_field_names_node_types_and_node_ids(browser, live_server, admin):
    context, page = sign_in(browser, live_server, admin)
    try:
        page.goto(f"{live_server.url}/workflows/new/")
        expect(page.locator("#definition-editor .cm-content")).to_be_visible()
        page.evaluate("(() => { const v = dagwrightEditor.view; v.dispatch({selection: {anchor: v.state.doc.length}}); v.focus(); })()")
        page.keyboard.insert_text("  - id: extra\n    ")
        # chosen with a click: Enter right after the list opens is left to the editor (a new line)
        page.keyboard.type("trig")
        page.locator(".cm-tooltip-autocomplete li", has_text="trigger_rule").click()
        # a field that takes names offers them at once
        page.locator(".cm-tooltip-autocomplete li", has_text="all_done").click()
        page.keyboard.insert_text("\n    depends_on: [")
        page.keyboard.type("summ")
        page.locator(".cm-tooltip-autocomplete li", has_text="summarize").click()
        text = page.evaluate("dagwrightEditor.view.state.doc.toString()")
        assert text.endswith("  - id: extra\n    trigger_rule: all_done\n    depends_on: [summarize")
        expect(page.locator("#unsaved-mark")).to_be_visible()
    finally:
        context.close()


def test_publishing_over_a_colleagues_publish_shows_who_and_the_change_first(browser, live_server, admin, django_user_model):
    from apps.workflows.services import definition_parse_text, workflow_save

    text = STARTING_TEMPLATE.replace("my-workflow", "shared-flow")
    save_workflow(definition_parse_text(text=text))
    context, page = sign_in(browser, live_server, admin)
    try:
        page.goto(f"{live_server.url}/workflows/shared-flow/edit/")
        expect(page.locator("#definition-editor .cm-content")).to_be_visible()
        type_before(page, "Suggest a title", "Kindly ")
        page.get_by_role("button", name="Publish…").click()
        expect(page.locator("#confirm-publish")).to_have_text("Publish v2")

        # meanwhile a colleague publishes their own change
        grace = django_user_model.objects.create_superuser("grace", "grace@example.com", "pw")
        workflow_save(spec=definition_parse_text(text=text.replace("three sentences", "two sentences")), user=grace, publish=True)

        page.locator("#confirm-publish").click()
        conflict = page.locator("#editor-conflict")
        expect(conflict).to_contain_text("Version 3 of shared-flow was published by grace")
        expect(page.locator(".conflict-diff .diff-node-changed[data-node=title] ins")).to_have_text("Kindly ")
        expect(page.locator(".conflict-diff .diff-node-changed[data-node=summarize] del")).to_have_text("two")
        expect(page.locator("#definition-editor .cm-content")).to_contain_text("Kindly Suggest a title")
        assert Workflow.objects.get(name="shared-flow").published_version.number == 3

        conflict.get_by_role("button", name="Publish v2 over v3").click()
        page.wait_for_url(re.compile(r"/workflows/shared-flow/edit/\?published=2$"))
        assert Workflow.objects.get(name="shared-flow").published_version.number == 2
    finally:
        context.close()
