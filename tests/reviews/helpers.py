"""Review-gate workflows and helpers shared by the review tests."""

from __future__ import annotations

from typing import Any

from apps.reviews.models import ReviewTask
from apps.runs.models import Run
from apps.runs.services import run_start
from tests.factories import definition, llm_node, save_workflow, tool_node
from tests.runs.helpers import drain

ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"reply": {"type": "string", "minLength": 1}, "priority": {"type": "integer", "minimum": 1, "maximum": 5}},
    "required": ["reply", "priority"],
    "additionalProperties": False,
}


def review_node(node_id: str = "gate", depends_on: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "review", "depends_on": depends_on or ["draft"], "instructions": "Check the reply.", **extra}


def gated_definition(name: str = "gated", *, side_branch: bool = False, **gate: Any) -> dict[str, Any]:
    """draft (llm, schema) -> gate (review) -> send (tool reading the draft); optionally a side
    branch that does not wait for the gate, and an on_reject route ``redo``."""
    nodes = [
        llm_node("draft", "Reply to {{ input.topic }}.", output_schema=ANSWER_SCHEMA),
        review_node(**gate),
        tool_node("send", args={"text": "{{ nodes.draft.reply }}"}, depends_on=["gate"]),
    ]
    if gate.get("on_reject"):
        nodes.append(tool_node(gate["on_reject"], args={"text": "rejected: {{ nodes.gate.comment }}"}, depends_on=["gate"]))
    if side_branch:
        nodes.append(tool_node("side", args={"text": "{{ input.topic }}"}))
    return definition(name, nodes)


def start_gated_run(name: str = "gated", **gate: Any) -> tuple[Run, ReviewTask]:
    """Start a gated run and execute it in this process up to its gate."""
    version = save_workflow(gated_definition(name, **gate))
    run = drain(run_start(workflow=version.workflow, input={"topic": "a refund"}))
    return run, ReviewTask.objects.get(run=run)
