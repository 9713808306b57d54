"""Version history in the console: the versions list with runs and success rates, a version read
only (graph and YAML), the diff of two versions, rollback after a confirmation (409 on a stale
one, audited), test runs marked in the runs list and on the run page; hostile text stays text."""

from __future__ import annotations

import pytest
from django.urls import reverse

from apps.audit.models import AuditEntry
from apps.runs.models import RunStatus
from apps.runs.services import run_start, run_start_test
from apps.workflows.models import Workflow
from apps.workflows.services import workflow_publish, workflow_save
from tests.factories import definition, llm_node, tool_node

from .helpers import finish, parse_html, signed_in, table_cell

PROMPT_V1 = "Summarise the {{ input.topic }} briefly for a customer."
PROMPT_V2 = "Summarise the {{ input.topic }} warmly and briefly for a loyal customer."


def spec_v1(name: str = "story", prompt: str = PROMPT_V1, **extra) -> dict:
    return definition(name, [tool_node("measure"), llm_node("answer", prompt, depends_on=["measure"])], **extra)


def spec_v2(name: str = "story") -> dict:
    """v1 with the prompt changed, a dependency and a node added, and the description changed."""
    nodes = [tool_node("measure"), tool_node("count"), llm_node("answer", PROMPT_V2, depends_on=["measure", "count"])]
    return definition(name, nodes, description="story workflow, second cut")


@pytest.fixture
def story(admin) -> Workflow:
    """``story`` v1 then v2, both saved by the admin; v2 is published."""
    workflow_save(spec=spec_v1(), user=admin, publish=True)
    workflow_save(spec=spec_v2(), user=admin, publish=True)
    return Workflow.objects.get(name="story")


def pages(name: str = "story") -> dict[str, str]:
    return {
        "versions": reverse("console:versions", args=[name]),
        "version": reverse("console:version", args=[name, 1]),
        "diff": reverse("console:version_diff", args=[name, 1, 2]),
        "compare": reverse("console:version_compare", args=[name]) + "?a=1&b=2",
    }


# --- who may see what ---------------------------------------------------------------------------


@pytest.mark.parametrize("page", ["versions", "version", "diff", "compare"])
def test_operators_and_admins_read_the_history(story, operator, admin, page):
    for user in (operator, admin):
        response = signed_in(user).get(pages()[page])
        assert response.status_code == (302 if page == "compare" else 200), user


@pytest.mark.parametrize("page", ["versions", "version", "diff", "compare"])
def test_reviewers_and_outsiders_are_refused_and_anonymous_people_sign_in(story, reviewer, outsider, client, page):
    assert signed_in(reviewer).get(pages()[page]).status_code == 403
    assert signed_in(outsider).get(pages()[page]).status_code == 403
    response = client.get(pages()[page])
    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


def test_only_admins_roll_back(story, operator, reviewer, admin):
    url = reverse("console:version_rollback", args=["story", 1])
    for user in (operator, reviewer):
        assert signed_in(user).get(url).status_code == 403
        assert signed_in(user).post(url, {"expected_published": 2}).status_code == 403
    assert signed_in(admin).get(url).status_code == 200
    story.refresh_from_db()
    assert story.published_version.number == 2


def test_unknown_versions_and_workflows_are_404(story, operator):
    client = signed_in(operator)
    assert client.get(reverse("console:version", args=["story", 9])).status_code == 404
    assert client.get(reverse("console:version_diff", args=["story", 1, 9])).status_code == 404
    assert client.get(reverse("console:versions", args=["nothing"])).status_code == 404


def test_the_workflow_page_links_to_versions_for_operators_and_to_the_editor_for_admins(story, operator, reviewer, admin):
    url = reverse("console:workflow", args=["story"])
    as_admin = parse_html(signed_in(admin).get(url).content)
    assert as_admin.one("a", id="versions-link").attrs["href"] == reverse("console:versions", args=["story"])
    assert as_admin.one("a", id="edit-link").attrs["href"] == "/workflows/story/edit/"
    as_operator = parse_html(signed_in(operator).get(url).content)
    assert as_operator.one("a", id="versions-link")
    assert not as_operator.all("a", id="edit-link")
    as_reviewer = parse_html(signed_in(reviewer).get(url).content)
    assert not as_reviewer.all("a", id="versions-link")
    assert not as_reviewer.all("a", id="edit-link")


# --- the versions list --------------------------------------------------------------------------


def test_the_list_shows_every_version_with_its_author_publication_runs_and_success_rate(story, admin, operator):
    v1 = story.versions.get(number=1)
    for status in (RunStatus.SUCCEEDED, RunStatus.SUCCEEDED, RunStatus.FAILED):
        finish(run_start(workflow=story, input={"topic": "tides"}, version_number=1, started_by=operator), status=status)
    run_start(workflow=story, input={"topic": "tides"}, version_number=1)  # still active: not in the rate
    run_start_test(workflow=story, version_number=1, input={"topic": "tides"}, started_by=admin)

    page = parse_html(signed_in(operator).get(pages()["versions"]).content)
    table = page.one("table", id="versions")
    rows = {row.attrs["data-version"]: row for row in table.one("tbody").all("tr")}
    assert list(rows) == ["2", "1"]  # newest first
    first, second = rows["1"], rows["2"]

    assert table_cell(table, first, "Content hash").one("code").attrs["title"] == v1.content_hash
    assert table_cell(table, first, "Content hash").text == v1.content_hash[:12]
    assert table_cell(table, first, "Author").text == "ada-admin"
    assert table_cell(table, first, "Runs").text == "4"
    assert table_cell(table, first, "Runs").one("a").attrs["href"] == "/runs/?workflow=story&version=1&test=exclude"
    assert table_cell(table, first, "Success rate").text.startswith("67%")
    assert "(2 of 3)" in table_cell(table, first, "Success rate").text
    assert table_cell(table, first, "Test runs").one("a").attrs["href"] == "/runs/?workflow=story&version=1&test=only"
    assert table_cell(table, first, "Test runs").text == "1"
    assert "last published by ada-admin" in table_cell(table, first, "Published").text

    published = table_cell(table, second, "Published")
    assert published.one("span", cls="tag-published").text == "published"
    assert "by ada-admin" in published.text
    assert table_cell(table, second, "Runs").text == "0"
    assert table_cell(table, second, "Success rate").text == "—"
    assert table_cell(table, second, "Actions").one("a").attrs["href"] == pages()["diff"]

    workflow_save(spec=spec_v1(prompt="A draft about {{ input.topic }}."), user=admin)
    page = parse_html(signed_in(operator).get(pages()["versions"]).content)
    table = page.one("table", id="versions")
    assert table_cell(table, page.one("tr", id="version-3"), "Published").one("span", cls="tag-draft").text == "draft"


def test_the_compare_form_goes_to_the_diff_of_the_two_picked(story, operator):
    page = parse_html(signed_in(operator).get(pages()["versions"]).content)
    form = page.one("form", cls="compare-form")
    assert form.attrs["action"] == reverse("console:version_compare", args=["story"])
    assert form.one("select", name="a").one("option", selected="").attrs["value"] == "1"
    assert form.one("select", name="b").one("option", selected="").attrs["value"] == "2"

    workflow_save(spec=spec_v1(prompt="A draft about {{ input.topic }}."), user=operator)  # v3, a draft: published v2 against it
    form = parse_html(signed_in(operator).get(pages()["versions"]).content).one("form", cls="compare-form")
    assert form.one("select", name="a").one("option", selected="").attrs["value"] == "2"
    assert form.one("select", name="b").one("option", selected="").attrs["value"] == "3"

    response = signed_in(operator).get(reverse("console:version_compare", args=["story"]) + "?a=2&b=1")
    assert response.status_code == 302
    assert response.url == reverse("console:version_diff", args=["story", 2, 1])


# --- a version, read-only -----------------------------------------------------------------------


def test_a_version_page_shows_its_graph_and_definition_read_only(story, operator):
    page = parse_html(signed_in(operator).get(pages()["version"]).content)

    svg = page.one("svg", id="version-graph-svg")
    assert {g.attrs["id"] for g in svg.all("g", cls="gnode")} == {"vnode-measure", "vnode-answer"}
    assert svg.one("g", id="vnode-answer").one("text", cls="gnode-detail").text == "sim-fast"
    assert [(p.attrs["data-source"], p.attrs["data-target"]) for p in svg.all("path", cls="gedge")] == [("measure", "answer")]
    definition_text = page.one("pre", id="definition-yaml").text
    assert "Summarise the {{ input.topic }} briefly" in definition_text
    assert not page.one("main").all("textarea")
    assert not page.one("main").all("form", method="post")

    assert page.one("a", id="compare-published").attrs["href"] == reverse("console:version_diff", args=["story", 2, 1])
    assert not page.all("a", id="compare-previous")  # v1 has none
    assert not page.all("a", id="rollback-link")  # operators do not publish
    assert page.one("dd", id="version-publication").text.startswith("by ada-admin, ")


def test_admins_are_offered_the_rollback_of_a_version_that_is_not_published(story, admin):
    client = signed_in(admin)
    older = parse_html(client.get(pages()["version"]).content)
    assert older.one("a", id="rollback-link").attrs["href"] == reverse("console:version_rollback", args=["story", 1])
    assert older.one("a", id="rollback-link").text == "Roll back to this version"

    current = parse_html(client.get(reverse("console:version", args=["story", 2])).content)
    assert not current.all("a", id="rollback-link")
    assert current.one("a", id="compare-previous").attrs["href"] == pages()["diff"]
    assert current.one("span", cls="tag-published")


# --- the diff ------------------------------------------------------------------------------------


def test_the_diff_shows_nodes_fields_word_changes_and_the_unified_diff(story, operator):
    page = parse_html(signed_in(operator).get(pages()["diff"]).content)
    diff = page.one("div", id="definition-diff")

    assert [node.attrs["data-node"] for node in diff.one(id="diff-added").all(cls="diff-node")] == ["count"]
    assert not diff.all(id="diff-removed")
    changed = diff.one(id="diff-changed").one(cls="diff-node-changed")
    assert changed.attrs["data-node"] == "answer"
    fields = {change.attrs["data-field"]: change for change in changed.all("li", cls="field-change")}
    assert set(fields) == {"prompt", "depends_on"}

    prompt = fields["prompt"].one("div", cls="word-diff")
    assert [ins.text for ins in prompt.all("ins")] == ["warmly and", "loyal"]
    assert prompt.all("del") == []
    assert fields["prompt"].attrs["data-pointer"] == "/nodes/2/prompt"
    assert "".join("".join(child._strings(hidden=True)) for child in prompt.elements() if child.tag != "del") == PROMPT_V2

    dependencies = fields["depends_on"]
    before, after = dependencies.all("dd")
    assert before.text == "measure"
    assert after.text == "measure, count"
    assert [tag.text for tag in dependencies.all("span", cls="tag-added")] == ["+ count"]

    top = {change.attrs["data-field"]: change for change in diff.one(id="diff-top").all("li", cls="field-change")}
    description = top["description"].one("div", cls="word-diff")
    assert "for" in [d.text for d in description.all("del")]
    assert "second" in [i.text for i in description.all("ins")]

    unified = diff.one("pre", id="unified-diff")
    added = [line.text for line in unified.all("span", cls="diff-added")]
    removed = [line.text for line in unified.all("span", cls="diff-removed")]
    assert any("warmly" in line for line in added)
    assert not any("warmly" in line for line in removed)
    assert [line.text for line in unified.all("span", cls="diff-file")] == ["--- story v1", "+++ story v2"]
    assert unified.all("span", cls="diff-hunk")


def test_the_diff_page_offers_admins_to_publish_its_newer_side(story, operator, admin):
    back = reverse("console:version_diff", args=["story", 2, 1])
    assert parse_html(signed_in(admin).get(back).content).one("a", id="rollback-link").text == "Roll back to v1"
    assert not parse_html(signed_in(admin).get(pages()["diff"]).content).all("a", id="rollback-link")  # v2 is published
    assert not parse_html(signed_in(operator).get(back).content).all("a", id="rollback-link")


def test_the_reverse_diff_removes_what_the_forward_one_added(story, operator):
    page = parse_html(signed_in(operator).get(reverse("console:version_diff", args=["story", 2, 1])).content)
    assert [node.attrs["data-node"] for node in page.one(id="diff-removed").all(cls="diff-node")] == ["count"]
    prompt = page.one("li", cls="field-change", data_field="prompt")
    assert [d.text for d in prompt.all("del")] == ["warmly and", "loyal"]


def test_a_version_compared_with_itself_is_no_change(story, operator):
    page = parse_html(signed_in(operator).get(reverse("console:version_diff", args=["story", 2, 2])).content)
    assert page.one("p", id="diff-identical")
    assert not page.all("pre", id="unified-diff")


def test_input_schema_and_model_changes_show_before_and_after(admin, operator):
    workflow_save(spec=spec_v1("schemas"), user=admin, publish=True)
    changed = spec_v1("schemas")
    changed["nodes"][1]["model"] = "sim-smart"
    changed["input_schema"]["properties"]["tone"] = {"type": "string"}
    workflow_save(spec=changed, user=admin)

    page = parse_html(signed_in(operator).get(reverse("console:version_diff", args=["schemas", 1, 2])).content)
    model = page.one("li", cls="field-change", data_field="model")
    assert model.one("pre", cls="value-before").text == "sim-fast"
    assert model.one("pre", cls="value-after").text == "sim-smart"
    schema = page.one(id="diff-top").one("li", cls="field-change", data_field="input_schema")
    assert '"tone"' not in schema.one("pre", cls="value-before").text
    assert '"tone"' in schema.one("pre", cls="value-after").text


# --- rollback --------------------------------------------------------------------------------------


def test_the_rollback_confirmation_shows_the_change_from_the_published_version(story, admin):
    page = parse_html(signed_in(admin).get(reverse("console:version_rollback", args=["story", 1])).content)

    assert page.one("h1").text == "Roll back to v1"
    prompt = page.one("li", cls="field-change", data_field="prompt")
    assert [d.text for d in prompt.all("del")] == ["warmly and", "loyal"]
    form = page.one("form", id="rollback-form")
    assert form.attrs["method"] == "post"
    assert form.one("input", name="expected_published").attrs["value"] == "2"


def test_rolling_back_publishes_the_older_version_and_audits_it(story, admin, operator):
    response = signed_in(admin).post(reverse("console:version_rollback", args=["story", 1]), {"expected_published": "2"})

    assert response.status_code == 302
    assert response.url == reverse("console:versions", args=["story"]) + "?published=1"
    story.refresh_from_db()
    assert (story.published_version.number, story.published_by) == (1, admin)
    entry = AuditEntry.objects.filter(workflow_name="story").order_by("-seq").first()
    assert (entry.event, entry.actor, entry.before, entry.after["version"]) == ("rolled_back", "ada-admin", {"version": 2}, 1)
    run = run_start(workflow=story, input={"topic": "tides"}, started_by=operator)
    assert run.version.number == 1

    page = parse_html(signed_in(admin).get(response.url).content)
    assert "v1 is now published" in page.one(id="published-notice").text
    assert page.one("tr", id="version-1").one("span", cls="tag-published")


def test_a_stale_confirmation_is_refused_with_409_and_the_new_diff(story, admin):
    other = workflow_save(spec=spec_v1(prompt="A third prompt about {{ input.topic }}."), user=admin)[0]
    workflow_publish(workflow=story, version_number=other.number, user=admin)  # someone publishes v3 meanwhile
    entries = AuditEntry.objects.count()

    response = signed_in(admin).post(reverse("console:version_rollback", args=["story", 1]), {"expected_published": "2"})

    assert response.status_code == 409
    story.refresh_from_db()
    assert story.published_version.number == 3  # not overwritten
    assert AuditEntry.objects.count() == entries
    page = parse_html(response.content)
    alert = page.one(id="publish-conflict")
    assert "v3 was published by ada-admin" in alert.text
    assert "not v2" in alert.text
    assert page.one("input", name="expected_published").attrs["value"] == "3"  # confirming again publishes over v3, knowingly
    prompt = page.one("li", cls="field-change", data_field="prompt")
    assert "third prompt about" in " ".join(d.text for d in prompt.all("del"))


def test_a_rollback_without_the_version_it_saw_is_refused(story, admin):
    response = signed_in(admin).post(reverse("console:version_rollback", args=["story", 1]), {})
    assert response.status_code == 400
    story.refresh_from_db()
    assert story.published_version.number == 2


def test_the_published_version_has_nothing_to_confirm(story, admin):
    page = parse_html(signed_in(admin).get(reverse("console:version_rollback", args=["story", 2])).content)
    assert page.one(id="already-published")
    assert not page.all("form", id="rollback-form")


# --- test runs in the runs list and on the run page ---------------------------------------------------


def test_the_runs_list_badges_test_runs_and_filters_them_and_by_version(story, admin, operator):
    real = run_start(workflow=story, input={"topic": "tides"}, version_number=1, started_by=operator)
    newer = run_start(workflow=story, input={"topic": "tides"}, started_by=operator)
    test = run_start_test(workflow=story, version_number=1, input={"topic": "tides"}, started_by=admin)
    client = signed_in(operator)

    def listed(query: str = "") -> dict[str, bool]:
        page = parse_html(client.get(reverse("console:runs") + query).content)
        rows = page.one("tbody", id="run-rows").all("tr")
        return {row.one("a", cls="mono").attrs["title"]: bool(row.all("span", cls="tag-test")) for row in rows}

    assert listed() == {str(test.id): True, str(newer.id): False, str(real.id): False}  # all, test runs badged
    assert listed("?test=exclude") == {str(newer.id): False, str(real.id): False}
    assert listed("?test=only") == {str(test.id): True}
    assert listed("?workflow=story&version=1") == {str(test.id): True, str(real.id): False}
    assert listed("?workflow=story&version=1&test=exclude") == {str(real.id): False}
    assert listed("?test=bogus&version=x") == listed()  # what cannot be a filter filters nothing

    page = parse_html(client.get(reverse("console:runs") + "?version=1&test=only").content)
    assert page.one("input", name="version").attrs["value"] == "1"
    assert page.one("select", name="test").one("option", selected="").attrs["value"] == "only"


def test_the_run_page_badges_a_test_run(story, admin, operator):
    test = run_start_test(workflow=story, version_number=1, input={"topic": "tides"}, started_by=admin)
    real = run_start(workflow=story, input={"topic": "tides"}, started_by=operator)
    client = signed_in(operator)

    page = parse_html(client.get(reverse("console:run", args=[test.id])).content)
    assert page.one("h1").one("span", id="test-run-badge").text == "test run"
    assert "simulated provider" in page.one(id="test-run-note").text
    assert "not published" in page.one(id="test-run-note").text
    page = parse_html(client.get(reverse("console:run", args=[real.id])).content)
    assert not page.all(id="test-run-badge")


def test_the_overview_still_renders_with_test_runs(story, admin, operator):
    finish(run_start_test(workflow=story, version_number=1, input={"topic": "tides"}, started_by=admin))
    assert signed_in(operator).get(reverse("console:overview")).status_code == 200


# --- hostile text -------------------------------------------------------------------------------------

SCRIPT = "<script>alert(1)</script>"
IMG = '<img src=x onerror="alert(1)">'
HOSTILE = f"{SCRIPT} {IMG} </pre></ins><b>bold</b>"


@pytest.fixture
def hostile(admin) -> Workflow:
    """v1 harmless; v2 with hostile text in a prompt, a system prompt, the description and an input's description."""
    workflow_save(spec=spec_v1("hostile"), user=admin, publish=True)
    spec = spec_v1("hostile", prompt=f"Summarise {{{{ input.topic }}}} {HOSTILE}", description=HOSTILE)
    spec["nodes"][1]["system"] = HOSTILE
    spec["input_schema"]["properties"]["topic"]["description"] = HOSTILE
    workflow_save(spec=spec, user=admin)
    return Workflow.objects.get(name="hostile")


def hostile_pages() -> list[str]:
    return [
        reverse("console:version", args=["hostile", 2]),
        reverse("console:version_diff", args=["hostile", 1, 2]),
        reverse("console:version_diff", args=["hostile", 2, 1]),
        reverse("console:version_rollback", args=["hostile", 2]),
        reverse("console:versions", args=["hostile"]),
        reverse("console:workflow", args=["hostile"]),
    ]


@pytest.mark.parametrize("index", range(6))
def test_hostile_text_in_a_definition_stays_text_on_every_page(hostile, admin, index):
    url = hostile_pages()[index]
    response = signed_in(admin).get(url)
    assert response.status_code == 200
    page = parse_html(response.content)

    assert not [s for s in page.all("script") if not s.attrs.get("src")]  # htmx's own script only
    assert not page.all("img")
    assert not page.all("b")
    assert not [e for e in page.all() if any(name.startswith("on") for name in e.attrs)]
    if "versions/" in url and not url.endswith("versions/"):
        assert SCRIPT in page.text  # shown as what it is
        html = response.content.decode()
        assert SCRIPT not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_a_version_page_links_to_its_runs_and_starts_a_run_of_it(story, operator, reviewer):
    page = parse_html(signed_in(operator).get(pages()["version"]).content)
    assert page.one("a", id="version-runs").attrs["href"] == "/runs/?workflow=story&version=1"
    assert page.one("a", id="start-version").attrs["href"] == reverse("console:run_start", args=["story"]) + "?version=1"
    detail = parse_html(signed_in(operator).get(reverse("console:workflow", args=["story"])).content)
    assert reverse("console:version", args=["story", 1]) in [a.attrs.get("href") for a in detail.all("a")]


def test_publishing_the_first_version_shows_what_will_run_instead_of_a_diff(admin):
    workflow_save(spec=spec_v1("first"), user=admin)  # a draft, nothing published
    client = signed_in(admin)

    page = parse_html(client.get(reverse("console:version_rollback", args=["first", 1])).content)
    assert page.one("h1").text == "Publish v1"
    assert "Summarise the" in page.one("pre", id="definition-yaml").text
    assert not page.all(id="definition-diff")
    assert page.one("input", name="expected_published").attrs["value"] == "0"

    assert client.post(reverse("console:version_rollback", args=["first", 1]), {"expected_published": "0"}).status_code == 302
    workflow = Workflow.objects.get(name="first")
    assert workflow.published_version.number == 1
    assert AuditEntry.objects.filter(workflow_name="first").order_by("-seq").first().event == "published"


@pytest.mark.parametrize("page", ["versions", "version", "diff"])
def test_the_version_pages_are_under_workflows_in_the_navigation(story, operator, page):
    nav = parse_html(signed_in(operator).get(pages()[page]).content).one("nav", cls="mainnav")
    assert nav.one("a", aria_current="page").text == "Workflows"
