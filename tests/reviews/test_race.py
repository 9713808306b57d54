"""The race: many reviewers press at once on one gate, round after round.

Each decider is a real thread with its own database connection, released together by a barrier,
each a different reviewer allowed to decide. Whatever the interleaving, exactly one decision is
recorded per required approval, every other decider is told who decided (ReviewConflict, a 409
through the API), the gate moves on once, the run resumes once and its next node is queued once,
and the audit chain verifies. Then a decision racing the run's cancellation: one of them wins,
coherently.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from typing import Any

import pytest
from django.db import connections
from django.utils import timezone

from apps.api.services import api_token_issue
from apps.audit.audit import audit_verify
from apps.audit.models import AuditEntry
from apps.reviews.models import ReviewDecision, ReviewStatus, ReviewTask
from apps.reviews.services import Decision, ReviewConflict, ReviewNotFound, review_decide, reviews_escalate_overdue
from apps.runs.models import NodeRun, NodeStatus, Run, RunEvent, RunStatus
from apps.runs.operations import run_cancel
from apps.runs.services import run_start
from apps.workflows.roles import REVIEWERS
from tests.factories import UserFactory, save_workflow
from tests.reviews.helpers import gated_definition
from tests.runs.helpers import drain

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("unconsumed_queue", "instant_model")]

DECIDERS = 12
ROUNDS = 5
EDIT = {"reply": "We refund you in full today", "priority": 2}


@pytest.fixture
def instant_model(settings) -> None:
    settings.DAGWRIGHT_SIMULATION = {**settings.DAGWRIGHT_SIMULATION, "latency": "fixed:0"}


@pytest.fixture
def deciders(db) -> list[Any]:
    """Reviewers in the ``reviewers`` group, the one the gates are assigned to."""
    return [UserFactory(username=f"decider-{i:02}", role=REVIEWERS) for i in range(DECIDERS)]


def race(calls: list[Callable[[], Any]]) -> list[tuple[str, Any]]:
    """Run the calls in threads released together; each outcome is ("ok", result) or ("error", exc)."""
    barrier = threading.Barrier(len(calls))
    outcomes: list[tuple[str, Any]] = [("missing", None)] * len(calls)

    def contend(i: int, call: Callable[[], Any]) -> None:
        try:
            barrier.wait(timeout=30)
            outcomes[i] = ("ok", call())
        except BaseException as exc:
            outcomes[i] = ("error", exc)
        finally:
            connections.close_all()  # this thread's connection, never the test's

    threads = [threading.Thread(target=contend, args=(i, call), daemon=True) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a decider never finished"
    return outcomes


def gated_run(version) -> tuple[Run, ReviewTask]:
    run = drain(run_start(workflow=version.workflow, input={"topic": "a refund"}))
    assert run.status == RunStatus.WAITING_REVIEW
    return run, ReviewTask.objects.get(run=run)


def events(run: Run, kind: str, node_id: str = "") -> int:
    return RunEvent.objects.filter(run=run, kind=kind, node_id=node_id).count()


def assert_the_gate_moved_on_once(run: Run, task: ReviewTask, winners: list[str]) -> None:
    """Exactly the winners' decisions, in order; the gate succeeded once, the run resumed once,
    the next node was queued once; the audit trail records one decision per winner and verifies."""
    task.refresh_from_db()
    assert list(ReviewDecision.objects.filter(task=task).order_by("ordinal").values_list("reviewer__username", flat=True)) == winners
    assert (task.status, task.approvals, task.version, task.decided_by.username) == (ReviewStatus.APPROVED, len(winners), 1 + len(winners), winners[-1])
    gate = NodeRun.objects.get(run=run, node_id="gate")
    assert gate.status == NodeStatus.SUCCEEDED
    assert gate.output["decided_by"] == winners
    assert events(run, "node_reviewed", "gate") == events(run, "node_succeeded", "gate") == 1
    assert events(run, "run_resumed") == 1
    assert events(run, "node_queued", "send") == 1
    assert NodeRun.objects.get(run=run, node_id="send").status == NodeStatus.QUEUED
    assert Counter(AuditEntry.objects.filter(review=task).values_list("event", flat=True))["decided"] == len(winners)
    assert audit_verify().ok


def sorted_outcomes(outcomes: list[tuple[str, Any]], users: list[Any]) -> tuple[list[str], list[ReviewConflict]]:
    """The usernames whose call succeeded, and the ReviewConflicts of the others (anything else fails)."""
    winners = [user.username for user, (kind, _) in zip(users, outcomes, strict=True) if kind == "ok"]
    losses = [result for kind, result in outcomes if kind != "ok"]
    unexpected = [loss for loss in losses if not isinstance(loss, ReviewConflict)]
    assert not unexpected, f"a decider failed with something else than a conflict: {unexpected!r}"
    return winners, losses


# --- through the service -------------------------------------------------------------------------


def test_many_deciders_on_one_gate_make_exactly_one_decision(deciders):
    version = save_workflow(gated_definition("race"))
    for _ in range(ROUNDS):
        run, task = gated_run(version)

        # half approve from a page that showed version 1, half edit
        decisions = [Decision("edit", output={**EDIT, "priority": 1 + i % 5}) if i % 2 else Decision("approve", version=task.version) for i in range(DECIDERS)]
        presses = [
            partial(review_decide, review_id=task.pk, user=user, decision=decisions[i], client_address=f"10.0.0.{i + 1}") for i, user in enumerate(deciders)
        ]

        winners, losses = sorted_outcomes(race(presses), deciders)

        assert len(winners) == 1
        assert len(losses) == DECIDERS - 1
        assert {(loss.decided_by, str(loss)) for loss in losses} == {(winners[0], "this review was already approved")}
        assert_the_gate_moved_on_once(run, task, winners)
        won = decisions[[user.username for user in deciders].index(winners[0])]
        assert NodeRun.objects.get(run=run, node_id="gate").output["output"] == (won.output if won.kind == "edit" else task.subject)


def test_two_required_approvals_are_given_by_exactly_two_reviewers(deciders):
    version = save_workflow(gated_definition("race-two", approvals_required=2))
    for _ in range(ROUNDS):
        run, task = gated_run(version)

        presses = [partial(review_decide, review_id=task.pk, user=user, decision=Decision("approve")) for user in deciders]

        winners, losses = sorted_outcomes(race(presses), deciders)

        assert len(set(winners)) == 2
        assert len(losses) == DECIDERS - 2
        decided = list(ReviewDecision.objects.filter(task=task).order_by("ordinal").values_list("reviewer__username", flat=True))
        assert sorted(decided) == sorted(winners)
        assert {loss.decided_by for loss in losses} == {decided[-1]}  # the one whose approval completed it
        assert_the_gate_moved_on_once(run, task, decided)


# --- through the HTTP API ------------------------------------------------------------------------


def post_json(url: str, token: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_many_deciders_over_http_get_one_200_and_409s_naming_the_winner(deciders, live_server):
    tokens = {user.username: api_token_issue(username=user.username)[1] for user in deciders}
    version = save_workflow(gated_definition("race-http"))
    for _ in range(ROUNDS):
        run, task = gated_run(version)
        url = f"{live_server.url}/api/v1/reviews/{task.pk}/decision"

        outcomes = race([partial(post_json, url, tokens[user.username], {"decision": "approve", "version": task.version}) for user in deciders])

        assert all(kind == "ok" for kind, _ in outcomes), outcomes
        answers = {user.username: result for user, (_, result) in zip(deciders, outcomes, strict=True)}
        winners = [name for name, (status, _) in answers.items() if status == 200]
        assert len(winners) == 1
        problems = [body for status, body in answers.values() if status != 200]
        assert {(body["status"], body["decided_by"], body["review_status"]) for body in problems} == {(409, winners[0], "approved")}
        assert all(f"decided by {winners[0]} at " in body["detail"] for body in problems)
        assert_the_gate_moved_on_once(run, task, winners)


# --- a decision racing the run's cancellation --------------------------------------------------


def assert_coherent(run: Run, task: ReviewTask, decided: tuple[str, Any]) -> str:
    """Either the decision landed before the cancel (the gate succeeded, then the run was cancelled)
    or the cancel landed first (the review closed, the decision refused); never a decided review on
    a cancelled gate, nor a gate that succeeded after the run was cancelled. Returns who won."""
    run.refresh_from_db()
    task.refresh_from_db()
    gate = NodeRun.objects.get(run=run, node_id="gate")
    assert run.status == RunStatus.CANCELLED
    assert NodeRun.objects.get(run=run, node_id="send").status == NodeStatus.CANCELLED
    cancelled_at = RunEvent.objects.get(run=run, kind="run_cancelled").pk
    if decided[0] == "ok":
        assert task.status == ReviewStatus.APPROVED
        assert ReviewDecision.objects.filter(task=task).count() == 1
        assert gate.status == NodeStatus.SUCCEEDED
        assert RunEvent.objects.get(run=run, kind="node_reviewed").pk < cancelled_at
        winner = "decision"
    else:
        assert isinstance(decided[1], ReviewConflict)
        assert str(decided[1]) == "this review was already cancelled"
        assert task.status == ReviewStatus.CANCELLED
        assert not ReviewDecision.objects.filter(task=task).exists()
        assert gate.status == NodeStatus.CANCELLED
        assert not RunEvent.objects.filter(run=run, kind="node_reviewed").exists()
        winner = "cancel"
    assert audit_verify().ok
    return winner


def test_a_decision_racing_a_cancel_never_lands_on_a_cancelled_gate(deciders, operator):
    version = save_workflow(gated_definition("race-cancel"))
    winners = Counter()
    for _ in range(ROUNDS * 2):
        run, task = gated_run(version)
        decide = partial(review_decide, review_id=task.pk, user=deciders[0], decision=Decision("approve"))
        decided, cancelled = race([decide, partial(run_cancel, run=Run.objects.get(pk=run.pk), by=operator)])
        assert cancelled[0] == "ok", cancelled  # the run was active either way
        winners[assert_coherent(run, task, decided)] += 1
    assert sum(winners.values()) == ROUNDS * 2


def test_a_decision_after_the_cancel_is_refused(deciders, operator):
    run, task = gated_run(save_workflow(gated_definition("cancel-first")))
    run_cancel(run=run, by=operator)
    with pytest.raises(ReviewConflict) as refused:
        review_decide(review_id=task.pk, user=deciders[0], decision=Decision("approve"))
    assert assert_coherent(run, task, ("error", refused.value)) == "cancel"


def test_a_cancel_after_the_decision_stops_the_run_that_went_on(deciders, operator):
    run, task = gated_run(save_workflow(gated_definition("decide-first")))
    review_decide(review_id=task.pk, user=deciders[0], decision=Decision("approve"))
    run_cancel(run=Run.objects.get(pk=run.pk), by=operator)
    assert assert_coherent(run, task, ("ok", task)) == "decision"


# --- a decision racing an escalation that reassigns the review -----------------------------------


def test_a_decision_racing_a_reassignment_is_taken_only_while_the_reviewer_is_assigned(deciders):
    version = save_workflow(gated_definition("race-reassign", due_in="30m", escalation={"action": "reassign", "group": "leads"}))
    outcomes = Counter()
    for _ in range(ROUNDS * 4):
        run, task = gated_run(version)
        ReviewTask.objects.filter(pk=task.pk).update(due_at=timezone.now() - timedelta(minutes=1))
        decided, escalated = race([partial(review_decide, review_id=task.pk, user=deciders[0], decision=Decision("approve")), reviews_escalate_overdue])
        assert escalated[0] == "ok", escalated
        events = list(AuditEntry.objects.filter(review=task, event__in=("escalated", "decided")).order_by("seq").values_list("event", flat=True))
        if decided[0] == "ok":
            assert events == ["decided"]
            assert escalated[1] == 0
            outcomes["decision"] += 1
        else:
            # reassigned to leads first: the reviewer may no longer see it, let alone decide it
            assert isinstance(decided[1], ReviewNotFound), decided
            assert events == ["escalated"]
            assert not ReviewDecision.objects.filter(task=task).exists()
            task.refresh_from_db()
            assert task.status == ReviewStatus.PENDING
            assert list(task.assigned_groups.values_list("name", flat=True)) == ["leads"]
            outcomes["reassign"] += 1
    assert sum(outcomes.values()) == ROUNDS * 4
