"""Reviews over the JSON API: who may list, read and decide them; decisions moving runs on; the
409 and 422 problems that leave nothing written; filters; deciding several reviews at once.

Assignment: a gate assigned to the ``reviewers`` group (the default) is rita-reviewer's; one
assigned to ``leads`` is not, and she must not even learn that it exists.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from apps.api.services import api_token_issue
from apps.audit.models import AuditEntry
from apps.reviews.models import ReviewDecision, ReviewStatus, ReviewTask
from apps.runs.models import NodeRun, NodeStatus, RunEvent, RunStatus
from apps.runs.services import run_start
from apps.workflows.roles import REVIEWERS
from tests.api.conftest import PROBLEM_TYPE, ApiClient, pointers, problem, signed_in
from tests.factories import UserFactory, save_workflow
from tests.reviews.helpers import gated_definition, start_gated_run
from tests.runs.helpers import drain

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("unconsumed_queue", "instant_model")]

REVIEWS = "/api/v1/reviews"
BULK = "/api/v1/reviews/decisions"
GOOD_EDIT = {"reply": "We refund you in full today", "priority": 2}


@pytest.fixture
def instant_model(settings) -> None:
    settings.DAGWRIGHT_SIMULATION = {**settings.DAGWRIGHT_SIMULATION, "latency": "fixed:0"}


def one(task: ReviewTask) -> str:
    return f"{REVIEWS}/{task.pk}"


def decide(task: ReviewTask) -> str:
    return f"{REVIEWS}/{task.pk}/decision"


def bearer(user: Any) -> ApiClient:
    """A client that authenticates with a fresh API token of ``user`` (nobody: no credentials)."""
    if user is None:
        return ApiClient()
    return ApiClient(HTTP_AUTHORIZATION=f"Bearer {api_token_issue(username=user.username)[1]}")


def conflict(response) -> dict[str, Any]:
    """A 409 problem: the standard members plus who decided, when, and the review's state."""
    assert response.status_code == 409, response.content
    assert response["Content-Type"] == PROBLEM_TYPE
    body = response.json()
    assert set(body) == {"type", "title", "status", "detail", "errors", "decided_by", "decided_at", "review_status", "version"}
    assert body["type"].endswith(":review-conflict")
    assert body["status"] == 409
    return body


def written(task: ReviewTask) -> tuple:
    """Everything a decision writes: decisions, audit entries, run events, the task's state."""
    task = ReviewTask.objects.get(pk=task.pk)
    return ReviewDecision.objects.count(), AuditEntry.objects.count(), RunEvent.objects.count(), task.status, task.version, task.approvals


def ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [item["id"] for item in response.json()["items"]]


@pytest.fixture
def lead(db):
    """A reviewer who is also in the ``leads`` group."""
    user = UserFactory(username="lena-lead", role=REVIEWERS)
    user.groups.add(Group.objects.get_or_create(name="leads")[0])
    return user


# --- the permission matrix ------------------------------------------------------------------------

# who, the gate's groups, then: listed?, reading it, deciding it
MATRIX = {
    "an admin lists, reads and decides any review": ("admin", ["reviewers"], True, 200, 200),
    "an operator lists and reads every review but may not decide it": ("operator", ["reviewers"], True, 200, 403),
    "an assigned reviewer lists, reads and decides it": ("reviewer", ["reviewers"], True, 200, 200),
    "a reviewer not assigned does not learn it exists": ("reviewer", ["leads"], False, 404, 404),
    "an outsider does not learn it exists": ("outsider", ["reviewers"], False, 404, 404),
    "nobody signed in is asked to authenticate": ("anonymous", ["reviewers"], None, 401, 401),
}


@pytest.mark.parametrize(("role", "groups", "listed", "reading", "deciding"), MATRIX.values(), ids=MATRIX.keys())
def test_the_permission_matrix(request, role, groups, listed, reading, deciding):
    run, task = start_gated_run(groups=groups)
    client = bearer(None if role == "anonymous" else request.getfixturevalue(role))
    before = written(task)

    listing = client.get(REVIEWS)
    if listed is None:
        problem(listing, 401)
    else:
        assert (task.pk in ids(listing)) is listed
    assert client.get(one(task)).status_code == reading
    response = client.post(decide(task), {"decision": "approve"}, content_type="application/json")

    assert response.status_code == deciding, response.content
    if deciding == 200:
        assert response.json()["status"] == "approved"
    else:
        assert response["Content-Type"] == PROBLEM_TYPE
        assert written(task) == before


def test_an_operator_is_told_why_they_may_not_decide(operator):
    run, task = start_gated_run()
    body = problem(bearer(operator).post(decide(task), {"decision": "approve"}, content_type="application/json"), 403)
    assert body["detail"] == f"user 'otto-operator' may read review {task.pk} but not decide it: it is not assigned to them"


def test_a_review_not_visible_and_one_that_does_not_exist_answer_the_same(reviewer):
    run, task = start_gated_run(groups=["leads"])
    hidden = problem(bearer(reviewer).get(one(task)), 404)
    missing = problem(bearer(reviewer).get(f"{REVIEWS}/{task.pk + 1000}"), 404)
    assert hidden["detail"].replace(str(task.pk), "N") == missing["detail"].replace(str(task.pk + 1000), "N") == "review N not found"


def test_a_member_of_the_assigned_group_decides(lead):
    run, task = start_gated_run(groups=["leads"])
    assert bearer(lead).post(decide(task), {"decision": "approve"}, content_type="application/json").status_code == 200


def test_a_session_decision_needs_the_csrf_token(reviewer):
    run, task = start_gated_run()
    client = signed_in(reviewer, enforce_csrf_checks=True)
    client.cookies["csrftoken"] = "k" * 32
    before = written(task)

    assert "CSRF" in problem(client.post_json(decide(task), {"decision": "approve"}), 403)["detail"]
    assert written(task) == before
    assert client.post_json(decide(task), {"decision": "approve"}, HTTP_X_CSRFTOKEN="k" * 32).status_code == 200


# --- reading --------------------------------------------------------------------------------------


def test_a_review_shows_what_is_approved_its_context_assignment_and_deadline(reviewer):
    run, task = start_gated_run(due_in="30m")
    draft = NodeRun.objects.get(run=run, node_id="draft")

    body = bearer(reviewer).get(one(task)).json()

    assert body["id"] == task.pk
    assert body["run"] == str(run.id)
    assert body["workflow"] == "gated"
    assert (body["node_id"], body["subject_node_id"], body["status"], body["version"]) == ("gate", "draft", "pending", 1)
    assert body["subject"] == body["current_output"] == draft.output
    assert body["subject_hash"] == task.subject_hash
    assert body["output_schema"]["required"] == ["reply", "priority"]
    assert body["context"]["input"] == {"topic": "a refund"}
    assert body["context"]["upstream"] == {"draft": draft.output}
    assert body["instructions"] == "Check the reply."
    assert body["assignment"] == {"users": [], "groups": ["reviewers"]}
    assert abs(datetime.fromisoformat(body["due_at"]) - task.due_at) < timedelta(milliseconds=1)  # JSON keeps milliseconds
    assert body["overdue"] is False
    assert (body["approvals"], body["approvals_required"], body["decisions"]) == (0, 1, [])
    assert body["links"]["run"] == f"/api/v1/runs/{run.id}"
    assert body["links"]["self"] == one(task)
    assert body["links"]["page"] == f"/reviews/{task.pk}/"


def test_a_decided_review_shows_each_decision_with_the_original_the_edit_and_the_diff(reviewer):
    run, task = start_gated_run()
    bearer(reviewer).post(decide(task), {"decision": "edit", "output": GOOD_EDIT, "comment": "warmer"}, content_type="application/json")

    body = bearer(reviewer).get(one(task)).json()

    assert (body["status"], body["decided_by"], body["current_output"]) == ("approved", "rita-reviewer", GOOD_EDIT)
    [decision] = body["decisions"]
    assert decision["original"] == task.subject
    assert decision["edited"] == GOOD_EDIT
    assert '+  "reply": "We refund you in full today"' in decision["diff"]
    assert (decision["decision"], decision["reviewer"], decision["comment"], decision["ordinal"]) == ("edit", "rita-reviewer", "warmer", 1)


# --- deciding ------------------------------------------------------------------------------------


def test_an_approval_moves_the_run_on(reviewer):
    run, task = start_gated_run()

    response = bearer(reviewer).post(decide(task), {"decision": "approve", "version": 1}, content_type="application/json", REMOTE_ADDR="10.0.0.7")

    assert response.status_code == 200, response.content
    assert (response.json()["status"], response.json()["version"], response.json()["approvals"]) == ("approved", 2, 1)
    assert drain(run).status == RunStatus.SUCCEEDED
    assert NodeRun.objects.get(run=run, node_id="send").status == NodeStatus.SUCCEEDED
    assert ReviewDecision.objects.get(task=task).client_address == "10.0.0.7"
    assert AuditEntry.objects.get(review=task, event="decided").client_address == "10.0.0.7"


def test_an_edit_is_what_the_next_node_receives(reviewer):
    run, task = start_gated_run()

    response = bearer(reviewer).post(decide(task), {"decision": "edit", "output": GOOD_EDIT}, content_type="application/json")

    assert response.json()["current_output"] == GOOD_EDIT
    assert drain(run).status == RunStatus.SUCCEEDED
    assert NodeRun.objects.get(run=run, node_id="send").input["args"]["text"] == GOOD_EDIT["reply"]


def test_a_rejection_with_a_reason_fails_the_gate(reviewer):
    run, task = start_gated_run()

    response = bearer(reviewer).post(decide(task), {"decision": "reject", "comment": "wrong customer"}, content_type="application/json")

    assert response.json()["status"] == "rejected"
    assert drain(run).status == RunStatus.FAILED
    gate = NodeRun.objects.get(run=run, node_id="gate")
    assert gate.status == NodeStatus.FAILED
    assert "wrong customer" in gate.error


def test_a_second_decision_is_a_409_naming_who_decided_and_when(reviewer, admin):
    run, task = start_gated_run()
    bearer(reviewer).post(decide(task), {"decision": "approve"}, content_type="application/json")
    first = ReviewDecision.objects.get(task=task)
    before = written(task)

    body = conflict(bearer(admin).post(decide(task), {"decision": "reject", "comment": "no"}, content_type="application/json"))

    assert body["decided_by"] == "rita-reviewer"
    assert datetime.fromisoformat(body["decided_at"]) == first.created_at
    assert body["detail"] == f"this review was already approved (decided by rita-reviewer at {first.created_at.isoformat()})"
    assert (body["review_status"], body["version"]) == ("approved", 2)
    assert written(task) == before


def test_a_decision_from_a_stale_page_is_a_409_and_changes_nothing(reviewer, admin):
    run, task = start_gated_run("two", approvals_required=2)
    bearer(reviewer).post(decide(task), {"decision": "edit", "output": GOOD_EDIT, "version": 1}, content_type="application/json")
    before = written(task)

    body = conflict(bearer(admin).post(decide(task), {"decision": "approve", "version": 1}, content_type="application/json"))

    assert "changed since your page was loaded (version 1, now 2)" in body["detail"]
    assert (body["decided_by"], body["review_status"], body["version"]) == ("rita-reviewer", "pending", 2)
    assert written(task) == before
    assert ReviewTask.objects.get(pk=task.pk).current_output == GOOD_EDIT


def test_the_same_reviewer_cannot_give_two_of_the_required_approvals(reviewer):
    run, task = start_gated_run("two", approvals_required=2)
    bearer(reviewer).post(decide(task), {"decision": "approve"}, content_type="application/json")
    before = written(task)

    body = conflict(bearer(reviewer).post(decide(task), {"decision": "approve"}, content_type="application/json"))

    assert "you already approved this review" in body["detail"]
    assert written(task) == before


def test_a_decision_on_a_cancelled_review_is_a_409(reviewer, operator):
    run, task = start_gated_run()
    bearer(operator).post(f"/api/v1/runs/{run.id}/cancel")

    body = conflict(bearer(reviewer).post(decide(task), {"decision": "approve"}, content_type="application/json"))

    assert body["detail"].startswith("this review was already cancelled (closed at ")
    assert (body["decided_by"], body["review_status"]) == (None, "cancelled")


def test_an_edit_that_breaks_the_schema_is_a_422_pointing_into_the_output(reviewer):
    run, task = start_gated_run()
    before = written(task)

    body = problem(bearer(reviewer).post(decide(task), {"decision": "edit", "output": {"reply": "", "priority": 9}}, content_type="application/json"), 422)

    assert body["type"].endswith(":invalid-decision")
    assert sorted(pointers(body)) == ["/output/priority", "/output/reply"]
    assert written(task) == before


def test_a_rejection_without_a_reason_is_a_422_pointing_at_the_comment(reviewer):
    run, task = start_gated_run()
    before = written(task)

    body = problem(bearer(reviewer).post(decide(task), {"decision": "reject", "comment": "  "}, content_type="application/json"), 422)

    assert pointers(body) == ["/comment"]
    assert body["errors"][0]["detail"] == "a rejection needs a reason"
    assert written(task) == before


@pytest.mark.parametrize(
    ("payload", "pointer"),
    [({"decision": "maybe"}, "/decision"), ({"decision": "approve", "verdict": 1}, "/verdict"), ({"decision": "approve", "version": 0}, "/version")],
    ids=["an unknown decision", "an unknown member", "a version below 1"],
)
def test_a_malformed_decision_is_a_422_pointing_at_the_mistake(reviewer, payload, pointer):
    run, task = start_gated_run()
    before = written(task)

    body = problem(bearer(reviewer).post(decide(task), payload, content_type="application/json"), 422)

    assert pointers(body) == [pointer]
    assert written(task) == before


# --- listing and filtering -----------------------------------------------------------------------


@pytest.fixture
def queue(reviewer, admin) -> dict[str, ReviewTask]:
    """Reviews of every kind: pending for the reviewers group, decided, overdue, assigned to rita by
    name (and to leads), and one for leads only."""
    version = save_workflow(gated_definition("queue", due_in="30m"))
    named = save_workflow(gated_definition("named", assignees=[reviewer.username], groups=["leads"]))
    leads = save_workflow(gated_definition("leads-only", groups=["leads"]))

    def task_of(v) -> ReviewTask:
        return ReviewTask.objects.get(run=drain(run_start(workflow=v.workflow, input={"topic": "a refund"})))

    tasks = {"pending": task_of(version), "decided": task_of(version), "overdue": task_of(version), "named": task_of(named), "leads": task_of(leads)}
    bearer(admin).post(decide(tasks["decided"]), {"decision": "approve"}, content_type="application/json")
    ReviewTask.objects.filter(pk=tasks["overdue"].pk).update(due_at=timezone.now() - timedelta(minutes=1))
    return tasks


FILTERS = {
    "everything she may see, newest first": ("", ["named", "overdue", "decided", "pending"]),
    "pending only": ("?status=pending", ["named", "overdue", "pending"]),
    "approved only": ("?status=approved", ["decided"]),
    "assigned to her by name": ("?assigned=me", ["named"]),
    "assigned to one of her groups": ("?assigned=groups", ["overdue", "decided", "pending"]),
    "overdue": ("?overdue=true", ["overdue"]),
    "not overdue": ("?overdue=false", ["named", "decided", "pending"]),
    "of one workflow": ("?workflow=named", ["named"]),
}


@pytest.mark.parametrize(("query", "expected"), FILTERS.values(), ids=FILTERS.keys())
def test_a_reviewer_lists(reviewer, queue, query, expected):
    assert ids(bearer(reviewer).get(REVIEWS + query)) == [queue[name].pk for name in expected]


def test_a_listed_review_says_whether_it_is_overdue(reviewer, queue):
    items = {item["id"]: item for item in bearer(reviewer).get(REVIEWS).json()["items"]}
    assert items[queue["overdue"].pk]["overdue"] is True
    assert items[queue["pending"].pk]["overdue"] is False


def test_a_lead_lists_the_reviews_of_her_groups(lead, queue):
    assert ids(bearer(lead).get(REVIEWS + "?assigned=groups")) == [
        queue["leads"].pk,
        queue["named"].pk,
        queue["overdue"].pk,
        queue["decided"].pk,
        queue["pending"].pk,
    ]


def test_reviews_of_one_run(operator, queue):
    run_id = queue["overdue"].run_id
    assert ids(bearer(operator).get(f"{REVIEWS}?run={run_id}")) == [queue["overdue"].pk]


def test_the_list_is_paginated(operator, queue):
    page = bearer(operator).get(REVIEWS + "?limit=2&offset=1").json()
    assert page["count"] == 5
    assert [item["id"] for item in page["items"]] == [queue["named"].pk, queue["overdue"].pk]


@pytest.mark.parametrize("query", ["?status=maybe", "?assigned=someone", "?overdue=perhaps", "?run=not-a-uuid"])
def test_a_bad_filter_is_a_422_naming_the_parameter(reviewer, query):
    body = problem(bearer(reviewer).get(REVIEWS + query), 422)
    assert [e["parameter"] for e in body["errors"]] == [query[1:].split("=")[0]]


# --- several at once -----------------------------------------------------------------------------


def test_bulk_decides_what_it_may_and_says_why_not_for_the_rest(reviewer, admin, queue):
    target = queue["pending"]
    ask = [target.pk, queue["decided"].pk, queue["leads"].pk, 987654, target.pk]
    response = bearer(reviewer).post(BULK, {"ids": ask, "decision": "approve", "comment": "fine"}, content_type="application/json")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["decided"] == 1
    assert [(r["id"], r["status"]) for r in body["results"]] == [
        (target.pk, "decided"), (queue["decided"].pk, "conflict"), (queue["leads"].pk, "not_found"), (987654, "not_found"),
    ]  # fmt: skip
    assert body["results"][1]["detail"] == "this review was already approved"
    assert ReviewTask.objects.get(pk=queue["leads"].pk).status == ReviewStatus.PENDING
    assert drain(target.run).status == RunStatus.SUCCEEDED


def test_bulk_tells_an_operator_each_review_is_not_theirs_to_decide(operator, queue):
    body = bearer(operator).post(BULK, {"ids": [queue["pending"].pk], "decision": "approve"}, content_type="application/json").json()
    assert body == {"decided": 0, "results": [{"id": queue["pending"].pk, "status": "forbidden", "detail": "you may not decide this review"}]}


def test_bulk_rejects_with_the_reason_for_each(reviewer, queue):
    body = (
        bearer(reviewer)
        .post(BULK, {"ids": [queue["pending"].pk, queue["overdue"].pk], "decision": "reject", "comment": "spam"}, content_type="application/json")
        .json()
    )

    assert body["decided"] == 2
    assert set(ReviewDecision.objects.filter(task__in=[queue["pending"], queue["overdue"]]).values_list("decision", "comment")) == {("reject", "spam")}


def test_bulk_reports_a_rejection_without_a_reason_as_invalid_for_each(reviewer, queue):
    body = bearer(reviewer).post(BULK, {"ids": [queue["pending"].pk], "decision": "reject"}, content_type="application/json").json()
    assert body["results"] == [{"id": queue["pending"].pk, "status": "invalid", "detail": "/comment: a rejection needs a reason"}]


@pytest.mark.parametrize(
    ("payload", "pointer"),
    [({"ids": [], "decision": "approve"}, "/ids"), ({"ids": [1], "decision": "edit"}, "/decision"), ({"ids": list(range(101)), "decision": "approve"}, "/ids")],
    ids=["no ids", "an edit, which needs one review", "over a hundred ids"],
)
def test_a_malformed_bulk_decision_is_a_422(reviewer, payload, pointer):
    assert pointers(problem(bearer(reviewer).post(BULK, payload, content_type="application/json"), 422)) == [pointer]


def test_bulk_needs_someone_signed_in(db):
    problem(ApiClient().post(BULK, {"ids": [1], "decision": "approve"}, content_type="application/json"), 401)
