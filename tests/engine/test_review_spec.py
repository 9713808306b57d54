"""Review gates in the pure engine: how a bad gate is refused, and how a gate steers the scheduler."""

from __future__ import annotations

from typing import Any

import pytest

from apps.engine import definition
from apps.engine.scheduler import FAILED, PENDING, SKIPPED, SUCCEEDED, WAITING_REVIEW, advance, ready_nodes, run_outcome, upstream_context
from apps.engine.spec import duration_seconds
from tests.engine.defs import llm, load_problems, tool, workflow


def review(node_id: str = "gate", depends_on: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "review", "depends_on": ["draft"] if depends_on is None else depends_on, **extra}


def gated(**gate: Any) -> dict[str, Any]:
    """draft -> gate -> send, plus the gate's on_reject route ``redo`` when it has one."""
    nodes = [llm("draft"), review(**gate), tool("send", args={"text": "{{ nodes.draft }}"}, depends_on=["gate"])]
    if gate.get("on_reject"):
        nodes.append(tool(gate["on_reject"], args={"text": "{{ nodes.gate.comment }}"}, depends_on=["gate"]))
    return workflow(*nodes)


# (id, definition, pointer, fragments the message must contain)
BAD_GATES = [
    ("several-deps-without-subject", workflow(llm("draft"), llm("notes"), review(depends_on=["draft", "notes"])),
     "/nodes/2", ["node 'gate'", "several dependencies needs a subject"]),
    ("no-deps-without-subject", workflow(llm("draft"), review(depends_on=[])), "/nodes/1", ["node 'gate'", "needs a subject"]),
    ("subject-not-a-dependency", workflow(llm("draft"), llm("notes"), review(subject="notes")),
     "/nodes/2", ["node 'gate'", "subject 'notes' must be one of the review's depends_on"]),
    ("no-assignees-and-no-groups", workflow(llm("draft"), review(groups=[])), "/nodes/1", ["node 'gate'", "needs assignees or groups"]),
    ("escalation-without-due-in", workflow(llm("draft"), review(escalation={"action": "reject"})),
     "/nodes/1", ["node 'gate'", "an escalation needs a due_in"]),
    ("reassign-without-group", workflow(llm("draft"), review(due_in="1h", escalation={"action": "reassign"})),
     "/nodes/1/escalation", ["node 'gate'", "reassign needs a group"]),
    ("reject-naming-a-group", workflow(llm("draft"), review(due_in="1h", escalation={"action": "reject", "group": "leads"})),
     "/nodes/1/escalation", ["node 'gate'", "only a reassign escalation names a group"]),
    ("approve-without-allow-auto-approve", workflow(llm("draft"), review(due_in="1h", escalation={"action": "approve"})),
     "/nodes/1/escalation", ["node 'gate'", "needs allow_auto_approve: true"]),
    ("unknown-escalation-action", workflow(llm("draft"), review(due_in="1h", escalation={"action": "ignore"})),
     "/nodes/1/escalation/action", ["node 'gate'", "'reassign', 'reject' or 'approve'"]),
    ("due-in-words", workflow(llm("draft"), review(due_in="30 minutes")), "/nodes/1/due_in", ["node 'gate'", "is not a duration", "such as 90s, 30m"]),
    ("due-in-zero", workflow(llm("draft"), review(due_in="0m")), "/nodes/1/due_in", ["node 'gate'", "is not a duration", "such as 90s, 30m"]),
    ("due-in-weeks", workflow(llm("draft"), review(due_in="2w")), "/nodes/1/due_in", ["node 'gate'", "is not a duration", "such as 90s, 30m"]),
    ("due-in-no-unit", workflow(llm("draft"), review(due_in="90")), "/nodes/1/due_in", ["node 'gate'", "is not a duration", "such as 90s, 30m"]),
    ("on-reject-not-a-successor", workflow(llm("draft"), review(on_reject="redo"), tool("redo", depends_on=["draft"])),
     "/nodes/1/on_reject", ["node 'gate'", "on_reject route 'redo' is not a direct successor", "add 'gate' to its depends_on"]),
    ("on-reject-further-downstream", workflow(llm("draft"), review(on_reject="later"), tool("send", depends_on=["gate"]), tool("later", depends_on=["send"])),
     "/nodes/1/on_reject", ["node 'gate'", "on_reject route 'later' is not a direct successor"]),
    ("on-reject-unknown", workflow(llm("draft"), review(on_reject="ghost")), "/nodes/1/on_reject", ["node 'gate'", "'ghost' is not a node"]),
    ("no-approvals", workflow(llm("draft"), review(approvals_required=0)), "/nodes/1/approvals_required", ["node 'gate'", "greater than or equal to 1"]),
    ("unknown-field", workflow(llm("draft"), review(reviewers=["rita"])), "/nodes/1/reviewers", ["node 'gate'", "Extra inputs are not permitted"]),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "pointer", "fragments"), [pytest.param(*case[1:], id=case[0]) for case in BAD_GATES])
def test_a_bad_gate_is_refused_naming_the_node_with_a_pointer(raw: dict[str, Any], pointer: str, fragments: list[str]) -> None:
    [problem] = load_problems(raw)
    assert problem.pointer == pointer
    for fragment in fragments:
        assert fragment in problem.message


def test_a_gate_reviews_its_only_dependency_and_defaults_to_the_reviewers_group() -> None:
    gate = definition.load(gated()).spec.node("gate")

    assert gate.subject_id == "draft"
    assert gate.groups == ["reviewers"]
    assert gate.approvals_required == 1
    assert gate.escalation is None


def test_a_gate_with_several_dependencies_reviews_its_subject() -> None:
    plan = definition.load(workflow(llm("draft"), llm("notes"), review(depends_on=["draft", "notes"], subject="notes")))

    assert plan.review_subjects == {"gate": "notes"}


def test_an_approving_escalation_is_accepted_when_explicitly_allowed() -> None:
    gate = definition.load(gated(due_in="2h", escalation={"action": "approve", "allow_auto_approve": True})).spec.node("gate")

    assert gate.escalation.action == "approve"
    assert gate.escalation.allow_auto_approve is True


@pytest.mark.parametrize(("due_in", "seconds"), [("90s", 90), ("1m", 60), ("30m", 1800), ("4h", 14_400), ("2d", 172_800)])
def test_due_in_reads_as_seconds(due_in: str, seconds: int) -> None:
    assert definition.load(gated(due_in=due_in)).spec.node("gate").due_in == due_in
    assert duration_seconds(due_in) == seconds


# --- the scheduler -------------------------------------------------------------------------

REJECTABLE = definition.load(gated(on_reject="redo"))


def test_on_reject_is_the_gates_only_route() -> None:
    assert REJECTABLE.reject_routes == {"gate": "redo"}
    assert REJECTABLE.routes["gate"] == frozenset({"redo"})


def test_an_approved_gate_skips_its_on_reject_route() -> None:
    states = {"draft": SUCCEEDED, "gate": SUCCEEDED, "send": PENDING, "redo": PENDING}

    step = advance(REJECTABLE, states, {"gate": None})

    assert step.ready == ["send"]
    assert step.skip == ["redo"]
    assert step.reasons["redo"] == "review 'gate' approved"


def test_a_rejected_gate_with_on_reject_runs_that_route_and_skips_the_others() -> None:
    states = {"draft": SUCCEEDED, "gate": SUCCEEDED, "send": PENDING, "redo": PENDING}

    step = advance(REJECTABLE, states, {"gate": "redo"})

    assert step.ready == ["redo"]
    assert step.skip == ["send"]
    assert "on_reject route 'redo' runs instead" in step.reasons["send"]
    assert run_outcome(REJECTABLE, {**states, "send": SKIPPED, "redo": SUCCEEDED}, {"gate": "redo"}) == SUCCEEDED


def test_a_waiting_gate_blocks_its_successors_but_not_other_branches() -> None:
    plan = definition.load({**gated(on_reject="redo"), "nodes": [*gated(on_reject="redo")["nodes"], tool("side")]})
    states = {"draft": SUCCEEDED, "gate": WAITING_REVIEW, "send": PENDING, "redo": PENDING, "side": PENDING}

    step = advance(plan, states, {})

    assert step.ready == ["side"]
    assert step.skip == []
    assert step.outcome is None
    assert ready_nodes(plan, {**states, "side": SUCCEEDED}) == []
    assert run_outcome(plan, {**states, "side": SUCCEEDED}) is None


def test_a_gate_rejected_without_on_reject_fails_the_run() -> None:
    plan = definition.load(gated())

    step = advance(plan, {"draft": SUCCEEDED, "gate": FAILED, "send": PENDING}, {})

    assert step.ready == []
    assert step.outcome == FAILED


# --- what nodes downstream of a gate see ---------------------------------------------------------

PRODUCED = {"reply": "We cannot refund you.", "priority": 3}
EDITED = {"reply": "We refund you in full today.", "priority": 2}


def _gate_output(decision: str, output: Any) -> dict[str, Any]:
    return {"decision": decision, "output": output, "route": None, "comment": "", "decided_by": ["rita"]}


@pytest.mark.parametrize(("decision", "approved"), [("approved", PRODUCED), ("edited", EDITED)])
def test_downstream_of_an_approved_gate_the_subject_is_the_approved_output(decision: str, approved: dict[str, Any]) -> None:
    outputs = {"draft": PRODUCED, "gate": _gate_output(decision, approved)}

    context = upstream_context(REJECTABLE, "send", {"topic": "refund"}, outputs)

    assert context["nodes"]["draft"] == approved
    assert context["nodes"]["gate"]["decision"] == decision
    assert context["input"] == {"topic": "refund"}


def test_after_a_rejection_the_on_reject_route_sees_what_was_produced() -> None:
    outputs = {"draft": PRODUCED, "gate": {**_gate_output("rejected", None), "route": "redo", "comment": "too curt"}}

    context = upstream_context(REJECTABLE, "redo", {}, outputs)

    assert context["nodes"]["draft"] == PRODUCED
    assert context["nodes"]["gate"]["comment"] == "too curt"


def test_a_sibling_of_the_gate_sees_the_produced_output() -> None:
    plan = definition.load({**gated(), "nodes": [*gated()["nodes"], tool("log", args={"text": "{{ nodes.draft }}"}, depends_on=["draft"])]})
    outputs = {"draft": PRODUCED, "gate": _gate_output("edited", EDITED)}

    assert upstream_context(plan, "log", {}, outputs)["nodes"] == {"draft": PRODUCED}
