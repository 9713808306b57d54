"""The review console's pages: the inbox, a review's page and its decisions, the history.

Runs are real: started with ``run_start`` and executed in this process up to their gate
(``start_gated_run``); decisions go through the pages with the Django test client.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from apps.reviews.models import ReviewDecision, ReviewStatus, ReviewTask
from apps.runs.models import NodeRun, NodeStatus, RunStatus
from apps.runs.services import run_start
from tests.console.helpers import signed_in
from tests.factories import definition, llm_node, save_workflow, tool_node
from tests.reviews.helpers import review_node, start_gated_run
from tests.runs.helpers import drain

# The runs execute in this process (``drain``): their messages go where no session worker competes.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("unconsumed_queue")]

HTMX = {"HX-Request": "true"}


@pytest.fixture(autouse=True)
def instant_model(settings) -> None:
    settings.DAGWRIGHT_SIMULATION = {**settings.DAGWRIGHT_SIMULATION, "latency": "fixed:0"}


def detail_url(task: ReviewTask) -> str:
    return reverse("reviews:detail", args=[task.pk])


def decide(client: Client, task: ReviewTask, action: str, *, htmx: bool = True, version: int | None = None, **fields: str):
    data = {"action": action, "version": task.version if version is None else version, **fields}
    return client.post(reverse("reviews:decide", args=[task.pk]), data, headers=HTMX if htmx else {})


def text(html: str) -> str:
    """The page's text, tags removed and spaces collapsed."""
    return " ".join(re.sub(r"<[^>]+>", "", html).split())


def assert_untouched(task: ReviewTask) -> None:
    task.refresh_from_db()
    assert task.status == ReviewStatus.PENDING
    assert task.approvals == 0
    assert not ReviewDecision.objects.filter(task=task).exists()
    assert NodeRun.objects.get(run=task.run, node_id=task.node_id).status == NodeStatus.WAITING_REVIEW


# --- who may read and decide ----------------------------------------------------------------------


@pytest.mark.parametrize("role", ["admin", "reviewer"])
def test_admins_and_assigned_reviewers_see_the_form_and_decide(request, role):
    user = request.getfixturevalue(role)
    _, task = start_gated_run()
    client = signed_in(user)

    page = client.get(detail_url(task))
    assert page.status_code == 200
    assert 'id="review-approve"' in page.content.decode()
    assert "Read-only" not in page.content.decode()

    assert decide(client, task, "approve").status_code == 200
    task.refresh_from_db()
    assert task.status == ReviewStatus.APPROVED
    assert task.decided_by == user


def test_operators_read_everything_but_get_no_form_and_403_on_deciding(operator):
    _, task = start_gated_run()
    client = signed_in(operator)

    html = client.get(detail_url(task)).content.decode()
    assert "Read-only." in html
    assert 'id="review-approve"' not in html
    assert 'name="action"' not in html
    assert "Check the reply." in html
    assert task.subject["reply"] in html

    assert decide(client, task, "approve").status_code == 403
    assert_untouched(task)


def test_a_reviewer_not_assigned_gets_404_on_reading_and_deciding(reviewer):
    _, task = start_gated_run("leads-only", groups=["leads"])
    client = signed_in(reviewer)

    assert client.get(detail_url(task)).status_code == 404
    assert decide(client, task, "approve").status_code == 404
    assert_untouched(task)


def test_an_outsider_gets_404_on_reading_and_deciding(outsider):
    _, task = start_gated_run()
    client = signed_in(outsider)

    assert client.get(detail_url(task)).status_code == 404
    assert decide(client, task, "approve").status_code == 404
    assert_untouched(task)


def test_anonymous_people_are_sent_to_the_login_page():
    _, task = start_gated_run()
    client = Client()

    for response in (client.get(detail_url(task)), decide(client, task, "approve", htmx=False), client.get(reverse("reviews:inbox"))):
        assert response.status_code == 302
        assert response.url.startswith(reverse("login"))
    assert_untouched(task)


def test_a_decision_without_the_csrf_token_is_refused(reviewer):
    _, task = start_gated_run()
    client = Client(enforce_csrf_checks=True)
    client.force_login(reviewer)
    client.get(detail_url(task))  # sets the csrftoken cookie, as a browser would have it

    assert decide(client, task, "approve").status_code == 403
    assert client.post(reverse("reviews:decide-selected"), {"review": [task.pk], "action": "approve"}).status_code == 403
    assert_untouched(task)

    token = client.cookies["csrftoken"].value  # what base.html puts in hx-headers
    response = client.post(reverse("reviews:decide", args=[task.pk]), {"action": "approve", "version": task.version}, headers={**HTMX, "X-CSRFToken": token})
    assert response.status_code == 200


# --- deciding ------------------------------------------------------------------------------------


def test_approving_over_htmx_moves_the_run_on_and_says_who_decided(reviewer):
    run, task = start_gated_run()

    response = decide(signed_in(reviewer), task, "approve", comment="fine")

    html = response.content.decode()
    assert response.status_code == 200
    assert '<section id="decision-panel"' in html
    assert "<html" not in html
    assert "Recorded." in text(html)
    assert f"approved by {reviewer.username}" in text(html)
    assert reverse("console:run", args=[run.id]) in html
    assert 'id="review-decisions" aria-labelledby="decisions-heading" hx-swap-oob="true"' in html  # the history on the page follows
    assert drain(run).status == RunStatus.SUCCEEDED
    assert task.decisions.get().comment == "fine"


def test_a_plain_form_post_decides_and_answers_303_back_to_the_review(reviewer):
    run, task = start_gated_run()

    response = decide(signed_in(reviewer), task, "approve", htmx=False)

    assert response.status_code == 303
    assert response.url == detail_url(task)
    assert drain(run).status == RunStatus.SUCCEEDED


def test_the_client_address_recorded_is_the_peers_not_x_forwarded_for(reviewer):
    _, task = start_gated_run()
    client = signed_in(reviewer)

    client.post(
        reverse("reviews:decide", args=[task.pk]),
        {"action": "approve", "version": task.version},
        headers={**HTMX, "X-Forwarded-For": "203.0.113.9"},
        REMOTE_ADDR="198.51.100.7",
    )

    assert task.decisions.get().client_address == "198.51.100.7"
    assert task.audit.filter(event="decided").get().client_address == "198.51.100.7"


def test_an_edit_from_the_page_is_what_downstream_nodes_receive(reviewer):
    run, task = start_gated_run()
    edited = {"reply": "We refund you in full today", "priority": 2}

    response = decide(signed_in(reviewer), task, "edit", output=json.dumps(edited, indent=2).replace("\n", "\r\n"), comment="warmer")

    assert response.status_code == 200
    assert "+  &quot;reply&quot;: &quot;We refund you in full today&quot;" in response.content.decode()  # the diff, shown escaped
    assert drain(run).status == RunStatus.SUCCEEDED
    assert NodeRun.objects.get(run=run, node_id="send").input["args"]["text"] == "We refund you in full today"
    assert task.decisions.get().edited == edited


def test_an_edit_that_is_not_json_is_refused_inline_with_422_and_nothing_written(reviewer):
    _, task = start_gated_run()

    response = decide(signed_in(reviewer), task, "edit", output='{"reply": "x",')

    html = response.content.decode()
    assert response.status_code == 422
    assert '<ul class="field-errors" id="edit-output-errors" role="alert"><li><code>/output</code> not valid JSON' in html
    assert "{&quot;reply&quot;: &quot;x&quot;,</textarea>" in html  # what they typed is kept to fix
    assert_untouched(task)


def test_an_edit_that_breaks_the_schema_is_refused_inline_with_its_pointers(reviewer):
    _, task = start_gated_run()

    response = decide(signed_in(reviewer), task, "edit", output=json.dumps({"reply": "", "priority": 9}))

    errors = re.search(r'id="edit-output-errors".*?</ul>', response.content.decode(), re.S).group(0)
    assert response.status_code == 422
    assert "<code>/output/reply</code>" in errors
    assert "<code>/output/priority</code>" in errors
    assert_untouched(task)


def test_a_text_output_is_edited_as_text(reviewer):
    version = save_workflow(definition("prose", [llm_node("draft", "Write about {{ input.topic }}."), review_node()]))
    run = drain(run_start(workflow=version.workflow, input={"topic": "tides"}))
    task = ReviewTask.objects.get(run=run)
    client = signed_in(reviewer)
    assert isinstance(task.subject, str)

    html = client.get(detail_url(task)).content.decode()
    assert f'aria-describedby="edit-output-help">\n{escape(task.subject)}</textarea>' in html  # the text itself, not a JSON string

    assert decide(client, task, "edit", output="Line one\r\nline two").status_code == 200
    assert task.decisions.get().edited == "Line one\nline two"
    assert drain(run).status == RunStatus.SUCCEEDED


def test_a_rejection_without_a_reason_is_refused_inline(reviewer):
    _, task = start_gated_run()

    response = decide(signed_in(reviewer), task, "reject", comment="   ")

    html = response.content.decode()
    assert response.status_code == 422
    assert '<ul class="field-errors" id="reject-reason-errors"><li>A rejection needs a reason.</li></ul>' in html
    assert_untouched(task)


def test_a_rejection_with_a_reason_fails_the_gate(reviewer):
    run, task = start_gated_run()

    response = decide(signed_in(reviewer), task, "reject", comment="wrong customer")

    assert response.status_code == 200
    assert f"rejected by {reviewer.username}" in text(response.content.decode())
    run = drain(run)
    assert run.status == RunStatus.FAILED
    gate = NodeRun.objects.get(run=run, node_id="gate")
    assert gate.status == NodeStatus.FAILED
    assert "wrong customer" in gate.error


def test_a_stale_page_after_the_review_was_decided_gets_409_with_who_and_when(reviewer, admin):
    _, task = start_gated_run()
    loaded = task.version
    decide(signed_in(reviewer), task, "approve")
    task.refresh_from_db()

    response = decide(signed_in(admin), task, "reject", version=loaded, comment="no", htmx=False)

    assert response.status_code == 409
    when = task.decided_at.strftime("%Y-%m-%d %H:%M:%S")
    assert f"Not recorded. This review was already approved by {reviewer.username} at {when} UTC." in text(response.content.decode())
    task.refresh_from_db()
    assert task.status == ReviewStatus.APPROVED
    assert list(task.decisions.values_list("reviewer__username", "decision")) == [(reviewer.username, "approve")]


def test_a_stale_page_while_the_review_waits_for_more_approvals_gets_409_and_changes_nothing(reviewer, admin):
    _, task = start_gated_run("two", approvals_required=2)
    loaded = task.version
    decide(signed_in(reviewer), task, "approve")
    first = task.decisions.get()

    response = decide(signed_in(admin), task, "edit", version=loaded, output=json.dumps({"reply": "changed", "priority": 3}))

    html = response.content.decode()
    assert response.status_code == 409
    when = first.created_at.strftime("%Y-%m-%d %H:%M:%S")
    assert f"This review changed since you loaded it: {reviewer.username} decided at {when} UTC." in text(html)
    task.refresh_from_db()
    assert task.status == ReviewStatus.PENDING
    assert task.approvals == 1
    assert task.current_output == first.original
    assert task.decisions.count() == 1
    assert f'name="version" value="{task.version}"' in html  # the panel now carries the current version


# --- the review page ------------------------------------------------------------------------------


REPLY_SCHEMA = {"type": "object", "properties": {"reply": {"type": "string"}}, "required": ["reply"]}


def test_the_review_page_shows_what_is_approved_why_and_where_the_gate_sits(reviewer):
    definition_ = definition(
        "context",
        [
            llm_node("draft", "Reply to {{ input.topic }}.", output_schema=REPLY_SCHEMA),
            review_node(instructions="Check the tone.\nThen the facts."),
            tool_node("send", args={"text": "{{ nodes.draft.reply }}"}, depends_on=["gate"]),
            tool_node("side", args={"text": "{{ input.topic }}"}),
        ],
    )
    run = drain(run_start(workflow=save_workflow(definition_).workflow, input={"topic": "a late parcel"}))
    task = ReviewTask.objects.get(run=run)
    call = task.run.provider_calls.get()

    html = signed_in(reviewer).get(detail_url(task)).content.decode()

    assert f'<code title="{task.subject_hash}">{task.subject_hash[:12]}</code>' in html
    assert json.dumps(task.subject, indent=2).replace('"', "&quot;") in html
    assert "Check the tone.<br>Then the facts." in html
    assert "&quot;topic&quot;: &quot;a late parcel&quot;" in html
    assert f"{call.tokens_in} / {call.tokens_out}" in html
    assert "<code>sim-fast</code>" in html
    raw = json.dumps(json.loads(call.raw_response), indent=2, ensure_ascii=False).replace('"', "&quot;")
    assert raw in html  # the raw response, pretty-printed
    graph = text(re.search(r'<section id="review-graph".*?</section>', html, re.S).group(0))
    assert "Layer 1 draft llm ✓succeeded output under review side tool ✓succeeded other branch" in graph
    assert "Layer 2 gate review ‖waiting review ▶ this review gate" in graph
    assert "Layer 3 send tool ○pending waits for this gate" in graph
    assert '<li class="graph-node graph-gate" aria-current="step">' in html


def test_the_review_page_lists_decisions_with_edits_and_diffs_and_the_audit_trail(reviewer, admin):
    _, task = start_gated_run("two", approvals_required=2)
    decide(signed_in(reviewer), task, "edit", output=json.dumps({"reply": "Refund today", "priority": 2}), comment="clearer")

    html = signed_in(admin).get(detail_url(task)).content.decode()

    decisions = re.search(r'<section id="review-decisions".*?</section>', html, re.S).group(0)
    assert f"#1 edited, then approved by {reviewer.username}" in text(decisions)
    assert "clearer" in decisions
    assert "+  &quot;reply&quot;: &quot;Refund today&quot;" in decisions
    assert "-  &quot;reply&quot;: &quot;" in decisions  # the original line, removed
    audit = text(re.search(r'<section id="review-audit".*?</section>', html, re.S).group(0))
    for event in ("created", "assigned", "edited", "decided"):
        assert event in audit
    assert f"decided {reviewer.username}" in audit
    assert "127.0.0.1" in audit


# --- inbox, counts and history --------------------------------------------------------------------


@pytest.fixture
def queue(reviewer, admin):
    """Reviews around ``reviewer``: one assigned by name, one through the reviewers group, one of
    those overdue, one they cannot see, and one already decided."""
    _, by_group = start_gated_run("by-group")
    _, mine = start_gated_run("by-name", assignees=[reviewer.username], groups=[])
    _, overdue = start_gated_run("late")
    ReviewTask.objects.filter(pk=overdue.pk).update(due_at=timezone.now() - timedelta(hours=1))
    _, hidden = start_gated_run("hidden", groups=["leads"])
    _, decided = start_gated_run("done")
    decide(signed_in(admin), decided, "approve")
    return {"by_group": by_group, "mine": mine, "overdue": overdue, "hidden": hidden, "decided": decided}


def listed(html: str) -> set[int]:
    return {int(pk) for pk in re.findall(r'<tr id="review-row-(\d+)"', html)}


def tab_count(html: str, name: str) -> int:
    return int(re.search(rf'id="tab-{name}"[^>]*>[^<]*<span class="tab-count">(\d+)</span>', html).group(1))


def test_the_inbox_filters_and_counts_the_reviews_a_reviewer_may_see(reviewer, queue):
    client = signed_in(reviewer)
    ids = {name: task.pk for name, task in queue.items()}

    pages = {name: client.get(reverse("reviews:inbox"), {"filter": name}).content.decode() for name in ("pending", "mine", "groups", "overdue")}

    assert listed(pages["pending"]) == {ids["by_group"], ids["mine"], ids["overdue"]}
    assert listed(pages["mine"]) == {ids["mine"]}
    assert listed(pages["groups"]) == {ids["by_group"], ids["overdue"]}
    assert listed(pages["overdue"]) == {ids["overdue"]}
    counts = {name: tab_count(pages["pending"], name) for name in ("pending", "mine", "groups", "overdue")}
    assert counts == {"pending": 3, "mine": 1, "groups": 2, "overdue": 1}
    assert f'<tr id="review-row-{ids["overdue"]}" class="overdue">' in pages["pending"]
    assert "⚠</span> overdue" in pages["overdue"]


def test_operators_see_every_pending_review_in_the_inbox_without_checkboxes(operator, queue):
    html = signed_in(operator).get(reverse("reviews:inbox")).content.decode()

    assert listed(html) == {queue[name].pk for name in ("by_group", "mine", "overdue", "hidden")}
    assert 'type="checkbox"' not in html
    assert "Approve selected" not in html


def test_the_inbox_rows_are_polled_and_drop_decided_reviews(reviewer, queue):
    client = signed_in(reviewer)
    html = client.get(reverse("reviews:inbox")).content.decode()
    assert '<tbody id="inbox-rows" hx-get="/reviews/?filter=pending&amp;page=1" hx-trigger="every 3s" hx-target="this"' in html  # not the bulk form's target

    decide(client, queue["mine"], "approve")
    polled = client.get(reverse("reviews:inbox"), {"filter": "pending", "page": "1"}, headers={**HTMX, "HX-Target": "inbox-rows"})

    fragment = polled.content.decode()
    assert polled.status_code == 200
    assert "<html" not in fragment
    assert listed(fragment) == {queue["by_group"].pk, queue["overdue"].pk}
    assert '<nav id="inbox-tabs" class="tabs" aria-label="Which reviews" hx-swap-oob="true">' in fragment
    assert tab_count(fragment, "mine") == 0


def test_the_inbox_shows_25_reviews_a_page(reviewer):
    _, first = start_gated_run()
    for attempt in range(2, 28):  # more tasks on the same gate, as later attempts would open
        task = ReviewTask.objects.create(run=first.run, node_run=first.node_run, node_id="gate", attempt=attempt, subject_node_id="draft", subject_hash="h")
        task.assigned_users.add(reviewer)
    client = signed_in(reviewer)

    one, two = (client.get(reverse("reviews:inbox"), {"page": n}).content.decode() for n in (1, 2))

    assert len(listed(one)) == 25
    assert len(listed(two)) == 2
    assert "Page 1 of 2" in one
    assert "(27 reviews)" in one


def test_the_navigation_badge_counts_my_pending_and_overdue_reviews(reviewer, queue):
    client = signed_in(reviewer)

    badge = client.get(reverse("reviews:counts"), headers=HTMX)

    assert badge.status_code == 200
    assert text(badge.content.decode()) == "3 pending for you ⚠ 1 overdue"
    page = client.get(reverse("reviews:inbox")).content.decode()
    assert 'hx-get="/reviews/counts/" hx-trigger="load, every 5s"' in page  # base.html polls it


def test_the_navigation_badge_is_empty_for_users_with_nothing_assigned_and_stops_for_the_signed_out(operator, queue):
    assert text(signed_in(operator).get(reverse("reviews:counts"), headers=HTMX).content.decode()) == ""
    assert Client().get(reverse("reviews:counts"), headers=HTMX).status_code == 286
    assert Client().get(reverse("reviews:counts")).status_code == 302


def test_the_history_lists_decided_reviews_the_latest_first(reviewer, admin, queue):
    client = signed_in(reviewer)
    decide(client, queue["mine"], "edit", output=json.dumps({"reply": "Edited reply", "priority": 2}))
    decide(client, queue["by_group"], "reject", comment="off topic")
    decide(signed_in(admin), queue["hidden"], "approve")

    html = client.get(reverse("reviews:history")).content.decode()

    rows = [text(row) for row in re.findall(r"<tr>\s*<th scope=\"row\">.*?</tr>", html, re.S)]
    assert [int(re.match(r"Review #(\d+)", row).group(1)) for row in rows] == [queue["by_group"].pk, queue["mine"].pk, queue["decided"].pk]
    assert "rejected rita-reviewer" in rows[0]
    assert "edited" not in rows[0]
    assert "approved rita-reviewer" in rows[1]
    assert "✎ edited" in rows[1]
    assert "Edited reply" in rows[1]
    assert f"approved {admin.username}" in rows[2]


# --- deciding several at once ---------------------------------------------------------------------


def test_bulk_approve_of_two_reviews_from_the_inbox(reviewer):
    run_a, a = start_gated_run("bulk-a")
    run_b, b = start_gated_run("bulk-b")

    response = signed_in(reviewer).post(reverse("reviews:decide-selected"), {"review": [a.pk, b.pk], "action": "approve", "filter": "pending"}, headers=HTMX)

    html = response.content.decode()
    assert response.status_code == 200
    assert text(html).count("✓ decided") == 2
    assert listed(html) == set()  # the rows, swapped out of band, no longer list them
    assert drain(run_a).status == RunStatus.SUCCEEDED
    assert drain(run_b).status == RunStatus.SUCCEEDED


def test_bulk_reject_needs_one_reason_and_reports_each_review(reviewer, admin):
    _, a = start_gated_run("bulk-a")
    _, b = start_gated_run("bulk-b")
    decide(signed_in(admin), b, "approve")
    client = signed_in(reviewer)

    refused = client.post(reverse("reviews:decide-selected"), {"review": [a.pk, b.pk], "action": "reject", "comment": " "}, headers=HTMX)
    assert refused.status_code == 422
    assert "A rejection needs a reason." in refused.content.decode()
    assert_untouched(a)

    response = client.post(reverse("reviews:decide-selected"), {"review": [a.pk, b.pk], "action": "reject", "comment": "duplicate"}, headers=HTMX)

    results = text(re.search(r'<ul class="bulk-results">.*?</ul>', response.content.decode(), re.S).group(0))
    assert f"Review #{a.pk} (gate in bulk-a): ✓ decided" in results
    assert f"Review #{b.pk} (gate in bulk-b): ✗ not decided: this review was already approved" in results
    a.refresh_from_db()
    assert a.status == ReviewStatus.REJECTED
    assert a.decisions.get().comment == "duplicate"


# --- untrusted text -------------------------------------------------------------------------------

PAYLOADS = {
    "<script>alert(1)</script>": "&lt;script&gt;alert(1)&lt;/script&gt;",
    "<img src=x onerror=alert(1)>": "&lt;img src=x onerror=alert(1)&gt;",
    '<a href="javascript:alert(1)">x</a>': "&lt;a href=&quot;javascript:alert(1)&quot;&gt;x&lt;/a&gt;",
    '<div hx-get="/admin/">': "&lt;div hx-get=&quot;/admin/&quot;&gt;",
    "![x](javascript:alert(1))": "![x](javascript:alert(1))",
}
HOSTILE = " ".join(PAYLOADS)


def assert_inert(html: str) -> None:
    for raw, escaped in PAYLOADS.items():
        if raw != escaped:
            assert raw not in html
        assert escaped in html
    for attribute in ('href="javascript:', "href='javascript:", 'src="javascript:', 'hx-get="/admin/"'):
        assert attribute not in html


def test_model_output_with_html_and_script_stays_inert_on_every_review_page(reviewer):
    """The output under review is the run's input passed through a tool: exactly the hostile text."""
    nodes = [tool_node("draft", tool="render", args={"template": "{{ input.topic }}"}), review_node(instructions=HOSTILE + "\nline two")]
    run = drain(run_start(workflow=save_workflow(definition("hostile", nodes)).workflow, input={"topic": HOSTILE}))
    task = ReviewTask.objects.get(run=run)
    assert task.subject == HOSTILE
    client = signed_in(reviewer)

    assert_inert(client.get(detail_url(task)).content.decode())
    assert_inert(client.get(reverse("reviews:inbox")).content.decode())
    assert_inert(client.get(reverse("reviews:inbox"), headers={**HTMX, "HX-Target": "inbox-rows"}).content.decode())

    panel = decide(client, task, "edit", output=HOSTILE + " <b>edited</b>", comment=HOSTILE)
    assert panel.status_code == 200
    assert_inert(panel.content.decode())
    page = client.get(detail_url(task)).content.decode()
    assert_inert(page)
    assert "&lt;b&gt;edited&lt;/b&gt;" in page
    assert "<b>edited</b>" not in page
    assert_inert(client.get(reverse("reviews:history")).content.decode())
