"""The workflow editor's pages without JavaScript (the Django test client posts the plain form):
who may open them, checking, saving drafts, test runs, publishing after the diff, the 409 when
someone published meanwhile, the validation fragment the editor fetches as you type, and hostile
definition text staying text."""

from __future__ import annotations

import html
import re

import pytest

from apps.console.editor import SNIPPETS, STARTING_TEMPLATE
from apps.runs.models import Run
from apps.workflows.models import Workflow
from apps.workflows.services import definition_parse_text, workflow_publish, workflow_save
from tests.factories import definition, llm_node, save_workflow

from .helpers import parse_html, signed_in

pytestmark = pytest.mark.django_db

TEXT = """\
name: drafty
input_schema:
  type: object
  required: [topic]
  properties:
    topic: {type: string, maxLength: 100}
nodes:
  - id: outline
    type: llm
    model: sim-fast
    prompt: Outline {{ input.topic }}
  - id: write
    type: llm
    model: sim-fast
    depends_on: [outline]
    prompt: Write from {{ nodes.outline }}
"""
MISSING_DEP = TEXT.replace("depends_on: [outline]", "depends_on: [outline, research]")


@pytest.fixture
def admin_client(admin):
    return signed_in(admin)


def post(client, url, text, action, **extra):
    return client.post(url, {"text": text, "action": action, **extra})


# --- who may open the editor ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/workflows/new/", "/workflows/tiny/edit/", "/workflows/tiny/test-run/?version=1"])
def test_only_admins_open_the_editor(path, admin, operator, reviewer, outsider, client):
    save_workflow()
    assert signed_in(admin).get(path).status_code == 200
    for user in (operator, reviewer, outsider):
        assert signed_in(user).get(path).status_code == 403, user
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


@pytest.mark.parametrize("path", ["/workflows/new/validate/", "/workflows/tiny/edit/validate/", "/workflows/tiny/publish/"])
def test_only_admins_post_to_the_editor_endpoints(path, operator, reviewer):
    save_workflow()
    for user in (operator, reviewer):
        assert signed_in(user).post(path, {"text": TEXT, "version": "1"}).status_code == 403


def test_an_unknown_workflow_has_no_editor(admin_client):
    assert admin_client.get("/workflows/nope/edit/").status_code == 404


# --- the page without JavaScript -----------------------------------------------------------------------


def test_the_new_page_starts_from_the_template_in_a_plain_textarea(admin_client):
    page = parse_html(admin_client.get("/workflows/new/").content)
    textarea = page.one("textarea", name="text")
    assert textarea.text.split() == STARTING_TEMPLATE.split()
    assert textarea.attrs["data-validate-url"] == "/workflows/new/validate/"
    assert page.one("input", name="expected_published").attrs["value"] == "0"
    assert {b.attrs["value"] for b in page.all("button", name="action")} == {"check", "save", "test", "publish"}
    assert page.one(id="no-problems")  # the template is valid
    assert len(page.all("a", cls="gnode")) == 2
    assert {t.attrs["id"] for t in page.all("template")} == {f"snippet-{kind}" for kind in SNIPPETS}
    assert any(s.attrs.get("src", "").endswith("/editor/editor.js") for s in page.all("script"))


def test_every_snippet_is_a_node_the_engine_reads(admin_client):
    base = definition_parse_text(text=STARTING_TEMPLATE)
    for _, body in SNIPPETS.values():
        node = definition_parse_text(text="nodes:\n" + body)["nodes"][0]
        text = STARTING_TEMPLATE + body
        problems = [p for p in admin_client.post("/workflows/new/validate/", {"text": text}).content.decode().split("data-pointer=")[1:]]
        # a snippet's own problems are only its placeholders (routes to nodes the draft lacks)
        assert all(f'"/nodes/{len(base["nodes"])}' in p for p in problems), (node["type"], problems)


def test_check_lists_each_problem_with_its_line_and_pointer(admin_client):
    response = post(admin_client, "/workflows/new/", MISSING_DEP, "check")
    assert response.status_code == 200
    page = parse_html(response.content)
    (problem,) = page.one(id="problem-list").all("li", cls="problem")
    line = MISSING_DEP.splitlines().index("    depends_on: [outline, research]") + 1
    assert problem.attrs["data-line"] == str(line)
    assert problem.one("a", cls="problem-where").text.startswith(f"line {line},")
    assert "research" in problem.one(cls="problem-message").text
    assert problem.one("code", cls="problem-pointer").text.startswith("/nodes/1/depends_on")
    assert page.one("textarea", name="text").text.split() == MISSING_DEP.split()  # the text is kept
    assert not Workflow.objects.filter(name="drafty").exists()


def test_a_refused_save_answers_422_with_the_problems_and_saves_nothing(admin_client):
    response = post(admin_client, "/workflows/new/", MISSING_DEP, "save")
    assert response.status_code == 422
    page = parse_html(response.content)
    assert "Not saved" in page.one(id="editor-refused").text
    assert page.one(id="problem-list")
    assert not Workflow.objects.filter(name="drafty").exists()


def test_save_draft_creates_the_workflow_unpublished_and_opens_its_editor(admin, admin_client):
    response = post(admin_client, "/workflows/new/", TEXT, "save")
    assert response.status_code == 302
    assert response["Location"] == "/workflows/drafty/edit/?saved=1"
    workflow = Workflow.objects.get(name="drafty")
    assert workflow.published_version_id is None
    assert workflow.versions.get().created_by == admin
    page = parse_html(admin_client.get(response["Location"]).content)
    assert "Saved as draft v1" in page.one(id="editor-notice").text
    assert "write" in page.one("textarea", name="text").text


def test_the_new_page_does_not_save_over_an_existing_workflow(admin_client):
    save_workflow(definition("drafty"))
    response = post(admin_client, "/workflows/new/", TEXT, "save")
    assert response.status_code == 422
    (problem,) = parse_html(response.content).one(id="problem-list").all("li")
    assert problem.attrs["data-pointer"] == "/name"
    assert problem.attrs["data-line"] == "1"


def test_a_workflows_editor_saves_that_workflow_only(admin_client):
    save_workflow(definition("drafty"))
    response = post(admin_client, "/workflows/drafty/edit/", TEXT.replace("name: drafty", "name: other"), "save", expected_published="1")
    assert response.status_code == 422
    assert not Workflow.objects.filter(name="other").exists()


def test_the_editor_opens_on_the_newest_version_and_the_published_number(admin_client):
    version = save_workflow(definition("drafty"))
    workflow_save(spec=definition("drafty", [llm_node("newer")]), publish=False)
    page = parse_html(admin_client.get("/workflows/drafty/edit/").content)
    assert "id: newer" in page.one("textarea", name="text").text
    assert page.one("input", name="expected_published").attrs["value"] == str(version.number)
    assert "Opened on v2 (a draft)" in page.one(id="editor-facts").text
    assert "id: newer" not in parse_html(admin_client.get("/workflows/drafty/edit/?version=1").content).one("textarea").text


# --- test runs ---------------------------------------------------------------------------------------------


def test_test_run_saves_a_draft_and_starts_a_simulated_test_run_from_the_schema_form(admin, admin_client):
    response = post(admin_client, "/workflows/new/", TEXT.replace("sim-fast", "gpt-4o-mini"), "test")
    assert response.status_code == 302
    assert response["Location"] == "/workflows/drafty/test-run/?version=1"
    page = parse_html(admin_client.get(response["Location"]).content)
    assert page.one("input", name="input-topic")  # the form generated from the draft's input schema
    assert "test run" in page.one(id="test-run-explained").text
    started = admin_client.post(response["Location"], {"mode": "form", "version": "1", "input-topic": "tides"})
    run = Run.objects.get()
    assert started.status_code == 302
    assert started["Location"] == f"/runs/{run.id}/"
    assert run.is_test
    assert run.version.number == 1
    assert run.started_by == admin
    assert run.input == {"topic": "tides"}
    assert run.options.get("simulate_all_models") is True
    assert Workflow.objects.get(name="drafty").published_version_id is None  # a test run publishes nothing


def test_a_test_run_input_is_checked_against_the_drafts_schema(admin_client):
    save_workflow(definition_parse_text(text=TEXT), publish=False)
    response = admin_client.post("/workflows/drafty/test-run/?version=1", {"mode": "json", "version": "1", "input_json": '{"topic": 3}'})
    assert response.status_code == 422
    assert "/topic" in parse_html(response.content).one("ul", cls="field-errors").text
    assert not Run.objects.exists()


# --- publishing: the diff, then the pointer; 409 on a stale expectation ---------------------------------------------


def test_publish_shows_the_diff_first_then_publishes(admin, admin_client):
    save_workflow(definition_parse_text(text=TEXT))
    changed = TEXT.replace("Write from", "Write a haiku from")
    response = post(admin_client, "/workflows/drafty/edit/", changed, "publish", expected_published="1")
    assert response.status_code == 200
    page = parse_html(response.content)
    workflow = Workflow.objects.get(name="drafty")
    assert workflow.published_version.number == 1  # nothing is published before the confirmation
    change = page.one(cls="diff-node-changed", data_node="write")
    assert [i.text for i in change.all("ins")] == ["a haiku"]
    assert "+ prompt: Write a haiku from" in page.one(id="unified-diff").text
    form = page.one("form", cls="publish-form")
    fields = {i.attrs["name"]: i.attrs.get("value") for i in form.all("input")}
    assert fields["version"] == "2"
    assert fields["expected_published"] == "1"
    done = admin_client.post(form.attrs["action"], fields)
    assert done.status_code == 302
    assert done["Location"] == "/workflows/drafty/edit/?published=2"
    workflow.refresh_from_db()
    assert workflow.published_version.number == 2
    assert workflow.published_by == admin


def test_a_first_publish_shows_every_node_as_added(admin_client):
    response = post(admin_client, "/workflows/new/", TEXT, "publish")
    page = parse_html(response.content)
    assert page.one(cls="diff-node-added", data_node="outline")
    assert page.one(cls="diff-node-added", data_node="write")
    fields = {i.attrs["name"]: i.attrs.get("value") for i in page.one("form", cls="publish-form").all("input")}
    assert fields["expected_published"] == "0"
    assert admin_client.post("/workflows/drafty/publish/", fields).status_code == 302
    assert Workflow.objects.get(name="drafty").published_version.number == 1


def test_publishing_after_someone_else_published_answers_409_with_who_and_the_diff(admin, admin_client, django_user_model):
    save_workflow(definition_parse_text(text=TEXT))
    mine = post(admin_client, "/workflows/drafty/edit/", TEXT.replace("Outline", "Sketch"), "publish", expected_published="1")
    fields = {i.attrs["name"]: i.attrs.get("value") for i in parse_html(mine.content).one("form", cls="publish-form").all("input")}
    # meanwhile a colleague publishes their own v3
    colleague = django_user_model.objects.create_superuser("grace", "grace@example.com", "pw")
    theirs, _ = workflow_save(spec=definition_parse_text(text=TEXT.replace("Write from", "Draft from")), user=colleague)
    workflow_publish(workflow=theirs.workflow, version_number=theirs.number, user=colleague)

    response = admin_client.post("/workflows/drafty/publish/", fields)
    assert response.status_code == 409
    page = parse_html(response.content)
    alert = page.one(id="editor-conflict")
    assert "Version 3" in alert.text
    assert "grace" in alert.text
    assert Workflow.objects.get(name="drafty").published_version.number == 3  # not overwritten
    diff = page.one(cls="conflict-diff")  # from their v3 to my draft v2: both changes in view
    assert [i.text for i in diff.one(cls="diff-node-changed", data_node="outline").all("ins")] == ["Sketch"]
    assert [d.text for d in diff.one(cls="diff-node-changed", data_node="write").all("del")] == ["Draft"]
    again = {i.attrs["name"]: i.attrs.get("value") for i in alert.one("form").all("input")}
    assert again == {"csrfmiddlewaretoken": again["csrfmiddlewaretoken"], "version": "2", "expected_published": "3"}
    assert admin_client.post("/workflows/drafty/publish/", again).status_code == 302
    assert Workflow.objects.get(name="drafty").published_version.number == 2


def test_saving_after_someone_else_published_answers_409_and_keeps_the_text(admin_client, django_user_model):
    save_workflow(definition_parse_text(text=TEXT))
    colleague = django_user_model.objects.create_superuser("grace", "grace@example.com", "pw")
    workflow_save(spec=definition_parse_text(text=TEXT.replace("Write from", "Draft from")), user=colleague, publish=True)
    mine = TEXT.replace("Outline", "Sketch")
    response = post(admin_client, "/workflows/drafty/edit/", mine, "save", expected_published="1")
    assert response.status_code == 409
    page = parse_html(response.content)
    assert "grace" in page.one(id="editor-conflict").text
    assert page.one("textarea", name="text").text.split() == mine.split()
    assert page.one("input", name="expected_published").attrs["value"] == "2"  # saving again builds on v2
    assert Workflow.objects.get(name="drafty").versions.count() == 2  # nothing of mine was saved
    assert post(admin_client, "/workflows/drafty/edit/", mine, "save", expected_published="2").status_code == 302


# --- the validation the editor fetches as you type -------------------------------------------------------------


def test_validate_answers_the_problems_with_lines_and_marks_the_graph_node(admin_client):
    response = admin_client.post("/workflows/new/validate/", {"text": MISSING_DEP})
    assert response.status_code == 200
    feedback = parse_html(response.content).one(id="editor-feedback")
    assert feedback.attrs["data-summary"] == "1 problem."
    (problem,) = feedback.all("li", cls="problem")
    assert problem.attrs["data-line"] == str(MISSING_DEP.splitlines().index("    depends_on: [outline, research]") + 1)
    assert int(problem.attrs["data-column"]) > 1
    boxes = {a.attrs["data-node"]: a for a in feedback.all("a", cls="gnode")}
    assert set(boxes) == {"outline", "write"}
    assert "gnode-problem" in boxes["write"].classes
    assert "gnode-problem" not in boxes["outline"].classes
    assert "research" in boxes["write"].one("title").text
    # each box knows where its node is written
    lines = MISSING_DEP.splitlines()
    assert boxes["outline"].attrs["data-goto-line"] == str(lines.index("  - id: outline") + 1)
    assert boxes["write"].attrs["data-goto-line"] == str(lines.index("  - id: write") + 1)
    assert len(feedback.one("g", cls="graph-edges").all("path")) == 1


def test_validate_draws_a_cycle_and_reads_syntax_errors(admin_client):
    cycle = TEXT.replace("    prompt: Outline", "    depends_on: [write]\n    prompt: Outline")
    feedback = parse_html(admin_client.post("/workflows/new/validate/", {"text": cycle}).content).one(id="editor-feedback")
    assert "cycle" in feedback.one(id="problem-list").text
    assert len(feedback.all("a", cls="gnode")) == 2  # drawn all the same, one arrow of the cycle left out
    broken = parse_html(admin_client.post("/workflows/new/validate/", {"text": "name: x\nnodes: [\n"}).content)
    (problem,) = broken.all("li", cls="problem")
    assert "not valid YAML" in problem.text
    assert problem.attrs["data-line"]
    assert broken.one(id="no-preview")


def test_validate_says_when_a_model_is_served_by_no_provider(admin_client):
    text = TEXT.replace("model: sim-fast\n    depends_on", "model: gpt-99\n    depends_on")
    (problem,) = parse_html(admin_client.post("/workflows/new/validate/", {"text": text}).content).all("li", cls="problem")
    assert problem.attrs["data-pointer"] == "/nodes/1/model"
    assert "gpt-99" in problem.text
    assert problem.attrs["data-line"] == str(text.splitlines().index("    model: gpt-99") + 1)


# --- hostile text stays text ---------------------------------------------------------------------------------------------

HOSTILE = "<script>alert('x')</script><img src=x onerror=alert(1)>"


def test_hostile_text_stays_inert_in_the_editor_the_preview_and_the_diff(admin_client):
    text = TEXT.replace("Write from", f"{HOSTILE} Write from").replace("name: drafty", f'name: drafty\ndescription: "{HOSTILE}"')
    hostile_id = text.replace("type: llm", 'type: "<b>x</b>"', 1)  # quoted by the problem and drawn in the preview
    for response in (
        post(admin_client, "/workflows/new/", hostile_id, "check"),
        admin_client.post("/workflows/new/validate/", {"text": hostile_id}),
    ):
        body = response.content.decode()
        assert "<script>alert" not in body
        assert "<img src=x" not in body
        assert "<b>x</b>" not in body
        assert "&lt;b&gt;x&lt;/b&gt;" in body  # as text
    assert "&lt;script&gt;alert" in post(admin_client, "/workflows/new/", text, "check").content.decode()  # in the textarea, as text
    save_workflow(definition_parse_text(text=TEXT))
    review = post(admin_client, "/workflows/drafty/edit/", text, "publish", expected_published="1")
    body = review.content.decode()
    assert review.status_code == 200
    assert "<script>alert" not in body
    assert "<img src=x" not in body
    page = parse_html(body)
    assert HOSTILE in page.one(cls="diff-node-changed", data_node="write").one("ins").text
    assert page.all("script") == [s for s in page.all("script") if s.attrs.get("src")]


def test_the_workflow_list_offers_a_new_workflow_to_admins_only(admin, operator):
    assert parse_html(signed_in(admin).get("/workflows/").content).one("a", id="new-workflow").attrs["href"] == "/workflows/new/"
    assert not parse_html(signed_in(operator).get("/workflows/").content).all("a", id="new-workflow")


def test_a_new_workflow_may_not_be_named_after_the_new_page(admin_client):
    response = post(admin_client, "/workflows/new/", TEXT.replace("name: drafty", "name: new"), "save")
    assert response.status_code == 422
    assert "/workflows/new/" in parse_html(response.content).one(id="problem-list").text
    assert not Workflow.objects.filter(name="new").exists()


def test_a_test_run_calls_the_real_providers_only_when_asked(admin_client):
    save_workflow(definition_parse_text(text=TEXT), publish=False)
    page = parse_html(admin_client.get("/workflows/drafty/test-run/?version=1").content)
    assert "checked" not in page.one("input", id="form-real-providers").attrs
    admin_client.post("/workflows/drafty/test-run/", {"mode": "form", "version": "1", "input-topic": "tides", "real_providers": "on"})
    run = Run.objects.get()
    assert run.is_test
    assert "simulate_all_models" not in run.options


def test_the_page_carries_what_the_editor_completes(admin_client):
    import json

    page = parse_html(admin_client.get("/workflows/new/").content)
    vocabulary = json.loads(page.one("script", id="editor-vocabulary").text)
    assert {"depends_on", "prompt", "trigger_rule", "ttl_seconds", "low_confidence_route"} <= set(vocabulary["keys"])
    assert vocabulary["values"]["type"] == ["llm", "tool", "router", "review"]
    assert "text_stats" in vocabulary["values"]["tool"]
    assert "sim-fast" in vocabulary["values"]["model"]
    assert "depends_on" in vocabulary["node_fields"]


def test_a_saved_version_reopens_without_its_defaults_and_saves_back_to_itself(admin_client):
    from apps.engine import definition as engine_definition

    version, _ = workflow_save(spec=definition_parse_text(text=STARTING_TEMPLATE.replace("my-workflow", "compact")))
    body = admin_client.get("/workflows/compact/edit/").content.decode()
    text = html.unescape(re.search(r'<textarea [^>]*name="text"[^>]*>\n?(.*?)</textarea>', body, re.DOTALL).group(1))
    assert "null" not in text
    # in the spec's order on every database (PostgreSQL's jsonb reorders the stored keys), nodes last
    assert text.startswith("schema_version: 1\nname: compact\ndescription: ")
    assert text.index("input_schema:") < text.index("\nnodes:\n")
    assert "trigger_rule" not in text  # left at its default
    assert "- id: summarize type: llm model: sim-fast" in " ".join(text.split())  # id and type first
    assert engine_definition.dump(engine_definition.load(definition_parse_text(text=text)).spec) == version.definition
    response = post(admin_client, "/workflows/compact/edit/", text, "save", expected_published="0")
    assert response["Location"] == "/workflows/compact/edit/?saved=1"  # the same version, not a new one
    assert Workflow.objects.get(name="compact").versions.count() == 1
    assert "depends_on: [summarize]" in text  # laid out as the template is,
    assert len(definition_parse_text(text=text + SNIPPETS["tool"][1])["nodes"]) == 3  # so a snippet appends to its nodes


def test_publishing_the_published_text_again_offers_nothing_to_confirm(admin_client):
    save_workflow(definition_parse_text(text=TEXT))
    page = parse_html(post(admin_client, "/workflows/drafty/edit/", TEXT, "publish", expected_published="1").content)
    assert "published version already" in page.one(id="publish-summary").text
    assert not page.all("form", cls="publish-form")
    assert page.one(id="diff-identical")


def test_the_committed_bundle_is_built_from_the_editor_source():
    """CI runs no npm: static/editor/editor.js is committed. Each element the source looks up by id
    is named in the bundle too (bin/build-editor writes it again after a change to frontend/)."""
    from django.conf import settings

    source = (settings.BASE_DIR / "frontend" / "editor.js").read_text()
    bundle = (settings.BASE_DIR / "static" / "editor" / "editor.js").read_text()
    ids = re.findall(r'getElementById\("([\w-]+)"\)', source)
    assert {"editor-feedback", "editor-vocabulary", "validation-status"} <= set(ids)
    assert [i for i in ids if f'"{i}"' not in bundle] == []
