"""Routers at run time, driven in-process: the branch not taken and what only it feeds end
skipped (with events saying why), joins follow their trigger rules, and the run succeeds."""

from __future__ import annotations

from typing import Any

import pytest

from apps.runs import executors, services, signals
from apps.runs.models import NodeStatus, ProviderCall, Run, RunEvent, RunStatus
from tests.factories import definition, llm_node, save_workflow, tool_node
from tests.runs.test_services import drain, states

pytestmark = pytest.mark.django_db
# A fixed seed and no faults: the simulated router's answer depends on nothing else than the prompt.
SIMULATION = {"simulation": {"latency": "fixed:0", "seed": 7, "faults": {}}}


def start(version, topic: str, **input: Any) -> Run:
    return services.run_start(workflow=version.workflow, input={"topic": topic, **input}, options=SIMULATION)


def skip_reasons(run: Run) -> dict[str, str]:
    return {e.node_id: e.data["reason"] for e in RunEvent.objects.filter(run=run, kind="node_skipped")}


def support_flow(router: dict[str, Any]) -> dict[str, Any]:
    """classify -> triage (router) -> billing | tech -> tech_followup; reply joins both sides
    (none_failed_min_one_success) -> audit; both_sides joins them with the default all_success."""
    reply = "Reply using {{ nodes.billing if nodes.billing is defined else nodes.tech_followup }}"
    return definition(
        "support",
        [
            tool_node("classify"),
            {"id": "triage", "type": "router", "depends_on": ["classify"], "routes": ["billing", "tech"], **router},
            llm_node("billing", "Answer the billing question {{ input.topic }}", depends_on=["triage"]),
            tool_node("tech", depends_on=["triage"]),
            llm_node("tech_followup", "Follow up on {{ nodes.tech.words }} words", depends_on=["tech"]),
            llm_node("reply", reply, depends_on=["billing", "tech_followup"], trigger_rule="none_failed_min_one_success"),
            tool_node("audit", "text_stats", {"text": "{{ nodes.reply }}"}, depends_on=["reply"]),
            llm_node("both_sides", "{{ nodes.billing }} {{ nodes.tech_followup }}", depends_on=["billing", "tech_followup"]),
        ],
    )


RULES = {
    "rules": [
        {"when": "'invoice' in input.topic | lower", "route": "billing"},
        {"when": "nodes.classify.words > 6", "route": "billing"},
    ],
    "default": "tech",
}


def test_rules_take_one_branch_and_skip_the_other_with_what_only_it_feeds():
    run = drain(start(save_workflow(support_flow(RULES)), "Invoice 42 is overdue"))

    assert run.status == RunStatus.SUCCEEDED
    assert states(run) == {
        "classify": "succeeded", "triage": "succeeded", "billing": "succeeded", "tech": "skipped", "tech_followup": "skipped",
        "reply": "succeeded", "audit": "succeeded", "both_sides": "skipped",
    }  # fmt: skip
    assert skip_reasons(run) == {
        "tech": "router 'triage' chose 'billing'",
        "tech_followup": "trigger rule all_success: upstream skipped",
        "both_sides": "trigger rule all_success: upstream skipped",
    }
    triage = run.node_runs.get(node_id="triage")
    assert triage.output == {"route": "billing", "confidence": None, "reason": "rule 0 matched: 'invoice' in input.topic | lower", "rule": 0}
    assert triage.input == {"decision": triage.output}
    reply = run.node_runs.get(node_id="reply")
    assert reply.input["prompt"] == f"Reply using {run.node_runs.get(node_id='billing').output}"
    assert not ProviderCall.objects.filter(run=run, node_run=triage).exists()  # rules cost nothing


def test_the_default_route_runs_the_other_branch_and_the_join_still_runs():
    run = drain(start(save_workflow(support_flow(RULES)), "Login fails"))

    assert run.status == RunStatus.SUCCEEDED
    assert run.node_runs.get(node_id="triage").output["rule"] == "default"
    assert {n for n, s in states(run).items() if s == "skipped"} == {"billing", "both_sides"}
    assert run.node_runs.get(node_id="reply").input["prompt"] == f"Reply using {run.node_runs.get(node_id='tech_followup').output}"


def test_a_rule_over_an_upstream_output_routes_too():
    run = drain(start(save_workflow(support_flow(RULES)), "my account page shows the wrong name since monday"))

    assert run.node_runs.get(node_id="classify").output["words"] > 6
    assert run.node_runs.get(node_id="triage").output["rule"] == 1
    assert states(run)["billing"] == "succeeded"
    assert states(run)["tech"] == "skipped"


def test_skips_are_recorded_in_the_transaction_that_routes():
    run = start(save_workflow(support_flow(RULES)), "Invoice 42")
    for node_id in ("classify", "triage"):  # by hand: node_run_execute would go on down the chain
        claim = services.node_run_claim(node_run_id=run.node_runs.get(node_id=node_id).pk)
        services.node_run_complete(claim=claim, outcome=executors.execute(claim))

    assert states(run)["billing"] == NodeStatus.QUEUED
    assert states(run)["tech"] == states(run)["tech_followup"] == states(run)["both_sides"] == NodeStatus.SKIPPED
    assert states(run)["reply"] == NodeStatus.PENDING  # waits for billing: one success is needed
    assert run.node_runs.get(node_id="tech").finished_at is not None
    kinds = list(RunEvent.objects.filter(run=run).values_list("kind", "node_id"))
    assert kinds[kinds.index(("node_succeeded", "triage")) + 1 :] == [
        ("node_skipped", "tech"), ("node_skipped", "tech_followup"), ("node_skipped", "both_sides"), ("node_queued", "billing"),
    ]  # fmt: skip


def test_a_skip_that_fails_half_way_rolls_back_the_routers_completion():
    run = start(save_workflow(support_flow(RULES)), "Invoice 42")
    claims = []
    for node_id in ("classify", "triage"):
        claims.append(services.node_run_claim(node_run_id=run.node_runs.get(node_id=node_id).pk))
        if node_id == "classify":
            services.node_run_complete(claim=claims[-1], outcome=executors.execute(claims[-1]))

    def explode(sender, **kwargs):
        raise RuntimeError("the event log is down")

    signals.nodes_skipped.connect(explode)
    try:
        with pytest.raises(RuntimeError):
            services.node_run_complete(claim=claims[-1], outcome=executors.execute(claims[-1]))
    finally:
        signals.nodes_skipped.disconnect(explode)

    assert states(run)["triage"] == NodeStatus.RUNNING
    assert {states(run)[n] for n in ("billing", "tech", "tech_followup")} == {NodeStatus.PENDING}
    assert not RunEvent.objects.filter(run=run, node_id="triage", kind="node_succeeded").exists()


def test_a_failing_rule_expression_fails_the_router_for_good():
    router = {"rules": [{"when": "input.priority > 3", "route": "billing"}], "default": "tech"}
    run = drain(start(save_workflow(support_flow(router)), "Invoice 42"))

    assert run.status == RunStatus.FAILED
    triage = run.node_runs.get(node_id="triage")
    assert (triage.status, triage.attempt, triage.error_class) == (NodeStatus.FAILED, 1, "template_error")
    assert "rule 0 (input.priority > 3): 'dict object' has no attribute 'priority'" in triage.error
    assert states(run)["billing"] == states(run)["tech"] == NodeStatus.CANCELLED
    assert not skip_reasons(run)


# --- LLM-as-router ----------------------------------------------------------------------------------


def llm_routed(min_confidence: float) -> dict[str, Any]:
    prompt = "Route this support ticket: {{ input.topic }}"
    llm = {"model": "sim-fast", "prompt": prompt, "min_confidence": min_confidence, "low_confidence_route": "review"}
    router = {"type": "router", "id": "triage", "routes": ["auto", "review"], "llm": llm}
    return definition(
        "llm-routed",
        [
            router,
            llm_node("auto", "Draft an answer to {{ input.topic }}", depends_on=["triage"]),
            tool_node("review", depends_on=["triage"]),
            tool_node("done", "text_stats", {"text": "{{ input.topic }}"}, depends_on=["auto", "review"], trigger_rule="one_success"),
        ],
    )


def test_a_confident_model_answer_takes_its_route():
    run = drain(start(save_workflow(llm_routed(min_confidence=0.0)), "password reset"))

    assert run.status == RunStatus.SUCCEEDED
    decision = run.node_runs.get(node_id="triage").output
    assert decision["route"] == decision["proposed"] == "auto"  # the simulated model's pick for this prompt and seed
    assert 0 <= decision["confidence"] <= 1
    assert decision["rule"] is None
    assert states(run) == {"triage": "succeeded", "auto": "succeeded", "review": "skipped", "done": "succeeded"}
    assert skip_reasons(run) == {"review": "router 'triage' chose 'auto'"}


def test_an_unsure_model_answer_takes_the_low_confidence_route():
    run = drain(start(save_workflow(llm_routed(min_confidence=1.0)), "password reset"))

    assert run.status == RunStatus.SUCCEEDED
    decision = run.node_runs.get(node_id="triage").output
    assert decision["confidence"] < 1.0
    assert decision["route"] == "review"
    assert decision["proposed"] == "auto"
    assert decision["reason"].startswith(f"confidence {decision['confidence']:g} is below 1; the model proposed 'auto': ")
    assert states(run) == {"triage": "succeeded", "auto": "skipped", "review": "succeeded", "done": "succeeded"}


def test_the_routing_call_is_stored_and_costed_like_an_llm_call():
    run = drain(start(save_workflow(llm_routed(min_confidence=0.5)), "shipping delay"))

    triage = run.node_runs.get(node_id="triage")
    call = ProviderCall.objects.get(node_run=triage)
    assert call.request["output_schema"]["properties"]["route"]["enum"] == ["auto", "review"]
    assert call.request["prompt"] == "Route this support ticket: shipping delay"
    assert call.output == {k: v for k, v in triage.output.items() if k in ("confidence", "reason")} | {"route": triage.output["proposed"]}
    assert call.error_class == ""
    assert (triage.model, triage.tokens_in, triage.tokens_out, triage.cost) == (call.model, call.tokens_in, call.tokens_out, call.cost)
    assert triage.cost > 0
    assert run.cost == sum(c.cost for c in ProviderCall.objects.filter(run=run))


# --- trigger rules and failures -----------------------------------------------------------------


def test_an_all_done_node_runs_after_a_failure_and_the_run_still_fails():
    spec = definition(
        nodes=[
            tool_node("bad", "json_pick", {"value": {}, "paths": "not a list"}),
            llm_node("after", depends_on=["bad"]),
            tool_node("cleanup", depends_on=["bad"], trigger_rule="all_done"),
        ]
    )
    run = drain(start(save_workflow(spec), "harbours"))

    assert run.status == RunStatus.FAILED
    assert states(run) == {"bad": "failed", "after": "cancelled", "cleanup": "succeeded"}
    assert "node 'bad' failed" in run.error
    kinds = [k for k, n in RunEvent.objects.filter(run=run).values_list("kind", "node_id")]
    assert kinds.index("run_finished") > kinds.index("node_succeeded")  # it ended after cleanup ran
