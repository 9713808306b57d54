"""Routers and trigger rules: choosing a route, checking router definitions, skips propagating
through joins, and when a run with skipped or failed nodes is over."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from apps.engine import definition, routing
from apps.engine.errors import TemplateError
from apps.engine.graph import Plan
from apps.engine.scheduler import CANCELLED, FAILED, PENDING, QUEUED, RUNNING, SKIPPED, SUCCEEDED, Step, advance, ready_nodes, run_outcome
from apps.engine.spec import LlmRouting, RouterNode, ToolNode
from tests.engine.defs import llm, load_problems, tool, workflow

TRIGGER_RULES = ("all_success", "one_success", "none_failed_min_one_success", "all_done")
NO_RETRY = {"max_attempts": 1, "backoff_seconds": 0, "backoff_cap_seconds": 0}


def rules_router(node_id: str = "triage", routes: tuple[str, ...] = ("billing", "tech"), **extra: Any) -> dict[str, Any]:
    rules = [{"when": "input.topic == 'invoice'", "route": routes[0]}]
    return {"id": node_id, "type": "router", "routes": list(routes), "rules": rules, "default": routes[-1], **extra}


def llm_router(node_id: str = "triage", routes: tuple[str, ...] = ("billing", "tech"), **llm_extra: Any) -> dict[str, Any]:
    config = {"model": "sim-fast", "prompt": "Route this ticket: {{ input.topic }}", "min_confidence": 0.6, "low_confidence_route": routes[0]}
    return {"id": node_id, "type": "router", "routes": list(routes), "llm": {**config, **llm_extra}}


def step(node_id: str, *deps: str, trigger_rule: str = "all_success") -> dict[str, Any]:
    return tool(node_id, args={"text": node_id}, depends_on=list(deps), trigger_rule=trigger_rule)


def problems_of(raw: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p.pointer, p.message) for p in load_problems(raw)]


def states_of(plan: Plan, **states: str) -> dict[str, str]:
    return {node_id: states.get(node_id, PENDING) for node_id in plan.order}


def router_node(raw: dict[str, Any], node_id: str = "triage") -> RouterNode:
    node = definition.load(raw).spec.node(node_id)
    assert isinstance(node, RouterNode)
    return node


ROUTED = workflow(rules_router(), step("billing", "triage"), step("tech", "triage"))
CONTEXT = {"input": {"topic": "invoice", "amount": 120}, "nodes": {}}


# --- choosing a route by rules ------------------------------------------------------------------


def test_the_first_matching_rule_wins() -> None:
    raw = rules_router(routes=("billing", "refund", "tech"))
    raw["rules"] = [
        {"when": "input.amount > 1000", "route": "refund"},
        {"when": "input.topic == 'invoice'", "route": "billing"},
        {"when": "input.amount > 100", "route": "refund"},  # also true, but comes later
    ]
    node = router_node(workflow(raw, step("billing", "triage"), step("refund", "triage"), step("tech", "triage")))

    decision = routing.route_by_rules(node, CONTEXT)

    assert decision == {"route": "billing", "confidence": None, "reason": "rule 1 matched: input.topic == 'invoice'", "rule": 1}


def test_no_matching_rule_takes_the_default() -> None:
    node = router_node(ROUTED)

    decision = routing.route_by_rules(node, {"input": {"topic": "login"}, "nodes": {}})

    assert decision == {"route": "tech", "confidence": None, "reason": "no rule matched", "rule": "default"}


def test_rules_read_upstream_outputs() -> None:
    raw = rules_router(depends_on=["classify"])
    raw["rules"] = [{"when": "nodes.classify.words > 3 and 'refund' in input.topic | lower", "route": "billing"}]
    node = router_node(workflow(step("classify"), raw, step("billing", "triage"), step("tech", "triage")))

    assert routing.route_by_rules(node, {"input": {"topic": "REFUND please"}, "nodes": {"classify": {"words": 5}}})["route"] == "billing"
    assert routing.route_by_rules(node, {"input": {"topic": "REFUND please"}, "nodes": {"classify": {"words": 2}}})["route"] == "tech"


@pytest.mark.parametrize(
    ("when", "error"),
    [
        pytest.param("input.missing == 1", "has no attribute 'missing'", id="undefined-attribute"),
        pytest.param("input.amount / 0", "division by zero", id="arithmetic"),
        pytest.param("input.__class__", "unsafe", id="sandbox"),
    ],
)
def test_a_failing_expression_is_an_error_naming_the_rule_not_false(when: str, error: str) -> None:
    raw = rules_router()
    raw["rules"] = [{"when": when, "route": "billing"}]
    node = router_node(workflow(raw, step("billing", "triage"), step("tech", "triage")))

    with pytest.raises(TemplateError) as caught:
        routing.route_by_rules(node, CONTEXT)

    assert str(caught.value).startswith(f"rule 0 ({when}): ")
    assert error in str(caught.value)


def test_is_defined_guards_an_optional_value() -> None:
    raw = rules_router()
    raw["rules"] = [{"when": "input.vip is defined and input.vip", "route": "billing"}]
    node = router_node(workflow(raw, step("billing", "triage"), step("tech", "triage")))

    assert routing.route_by_rules(node, CONTEXT)["route"] == "tech"
    assert routing.route_by_rules(node, {"input": {"vip": True}, "nodes": {}})["route"] == "billing"


# --- choosing a route by a model's answer ---------------------------------------------------------


def test_the_route_schema_offers_exactly_the_routes() -> None:
    node = router_node(workflow(llm_router(), step("billing", "triage"), step("tech", "triage")))

    schema = routing.route_schema(node)

    assert schema["properties"]["route"]["enum"] == ["billing", "tech"]
    assert schema["properties"]["confidence"] == {"type": "number", "minimum": 0, "maximum": 1}
    assert schema["required"] == ["route", "confidence", "reason"]


def test_a_confident_answer_takes_the_models_route() -> None:
    node = router_node(workflow(llm_router(min_confidence=0.6), step("billing", "triage"), step("tech", "triage")))

    decision = routing.route_by_answer(node, {"route": "tech", "confidence": 0.6, "reason": "a login problem"})

    assert decision == {"route": "tech", "confidence": 0.6, "reason": "a login problem", "rule": None, "proposed": "tech"}


def test_an_unsure_answer_takes_the_low_confidence_route() -> None:
    node = router_node(workflow(llm_router(min_confidence=0.6, low_confidence_route="billing"), step("billing", "triage"), step("tech", "triage")))

    decision = routing.route_by_answer(node, {"route": "tech", "confidence": 0.59, "reason": "maybe a login problem"})

    assert decision["route"] == "billing"
    assert decision["proposed"] == "tech"
    assert decision["confidence"] == 0.59
    assert decision["reason"] == "confidence 0.59 is below 0.6; the model proposed 'tech': maybe a login problem"


@pytest.mark.parametrize(("output", "route"), [({"route": "tech"}, "tech"), ({"route": None}, None), ("tech", None), (None, None)])
def test_chosen_route_reads_the_route_from_an_output(output: Any, route: str | None) -> None:
    assert routing.chosen_route(output) == route


def test_an_llm_router_round_trips() -> None:
    router = llm_router(system="You route {{ input.topic | length }} chars.", max_tokens=64, temperature=0.2, fallbacks=["sim-mini"])
    router |= {"depends_on": ["intake"], "description": "Sorts tickets", "retry": NO_RETRY, "trigger_rule": "all_done", "cache": {"ttl_seconds": 300}}
    billing = step("billing", "triage") | {"description": "The billing desk", "retry": NO_RETRY}
    raw = workflow(step("intake"), router, billing, step("tech", "triage"))
    # every field an llm router and a tool node can have, each with a value of its own (a default would survive being dropped)
    assert set(router) == set(RouterNode.model_fields) - {"rules", "default"}
    assert set(billing) == set(ToolNode.model_fields)
    assert set(router["llm"]) == set(LlmRouting.model_fields)
    assert not [name for name, value in router["llm"].items() if value == LlmRouting.model_fields[name].get_default(call_default_factory=True)]

    spec = definition.load(copy.deepcopy(raw)).spec  # a copy: the comparison is with the source as written
    dumped = definition.dump(spec)

    for source, node in zip(raw["nodes"], dumped["nodes"], strict=True):
        assert {name: node.get(name) for name in source} == source
    assert (dumped["nodes"][1]["rules"], dumped["nodes"][1]["default"]) == (None, None)
    assert definition.load(dumped).spec == spec


# --- checking router definitions -------------------------------------------------------------------


def test_a_route_must_be_a_direct_successor_of_the_router() -> None:
    raw = workflow(rules_router(), step("billing", "triage"), step("tech", "billing"))

    assert problems_of(raw) == [("/nodes/0/routes/1", "node 'triage': route 'tech' is not a direct successor of the router (add 'triage' to its depends_on)")]


def test_a_route_must_be_a_node() -> None:
    raw = workflow(rules_router(routes=("billing", "nowhere")), step("billing", "triage"))

    assert problems_of(raw) == [
        ("/nodes/0/routes/1", "node 'triage': route 'nowhere' is not a node"),
    ]


def test_rules_default_and_low_confidence_route_must_name_routes() -> None:
    rules = rules_router(default="elsewhere")
    rules["rules"] = [{"when": "true", "route": "tech"}, {"when": "false", "route": "sales"}]
    unsure = llm_router("unsure", low_confidence_route="review")
    raw = workflow(rules, step("billing", "triage"), step("tech", "triage"), step("elsewhere", "triage"),
                   unsure, step("a", "unsure"), step("b", "unsure"), step("review", "unsure"))  # fmt: skip
    raw["nodes"][4]["routes"] = ["a", "b"]

    assert problems_of(raw) == [
        ("/nodes/0/rules/1/route", "node 'triage': rule 1 goes to 'sales', which is not one of its routes"),
        ("/nodes/0/default", "node 'triage': the default goes to 'elsewhere', which is not one of its routes"),
        ("/nodes/4/llm/low_confidence_route", "node 'unsure': the low-confidence route goes to 'review', which is not one of its routes"),
    ]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        pytest.param({"llm": llm_router()["llm"]}, "a router needs either rules (with a default route) or llm, not both", id="rules-and-llm"),
        pytest.param({"rules": None, "default": None}, "a router needs either rules (with a default route) or llm, not both", id="neither"),
        pytest.param({"default": None}, "a router with rules needs a default route", id="no-default"),
        pytest.param({"routes": ["billing", "billing"]}, "route 'billing' is listed twice", id="repeated-route"),
    ],
)
def test_a_router_routes_one_way_or_the_other(change: dict[str, Any], problem: str) -> None:
    raw = workflow({**rules_router(), **change}, step("billing", "triage"), step("tech", "triage"))

    pointer, message = problems_of(raw)[0]

    assert pointer.startswith("/nodes/0")
    assert message == f"node 'triage': {problem}"


def test_an_llm_router_has_no_default() -> None:
    raw = workflow({**llm_router(), "default": "tech"}, step("billing", "triage"), step("tech", "triage"))

    assert problems_of(raw) == [("/nodes/0", "node 'triage': default goes with rules; an llm router falls back to llm.low_confidence_route")]


@pytest.mark.parametrize("value", [-0.1, 1.01])
def test_min_confidence_is_between_0_and_1(value: float) -> None:
    raw = workflow(llm_router(min_confidence=value), step("billing", "triage"), step("tech", "triage"))

    [(pointer, message)] = problems_of(raw)

    assert pointer == "/nodes/0/llm/min_confidence"
    assert message.startswith("node 'triage': Input should be")


@pytest.mark.parametrize(
    ("when", "message"),
    [
        pytest.param("input.topic ==", "expression syntax error, line 1: unexpected 'end of template'", id="incomplete"),
        pytest.param("input.a }}{{ input.b", "expression syntax error, line 1: unexpected text after the expression", id="two-expressions"),
        pytest.param("{% if true %}", "expression syntax error, line 1: unexpected '%'", id="a-statement"),
    ],
)
def test_a_rule_expression_must_parse(when: str, message: str) -> None:
    raw = workflow(rules_router(), step("billing", "triage"), step("tech", "triage"))
    raw["nodes"][0]["rules"][0]["when"] = when

    assert problems_of(raw) == [("/nodes/0/rules/0/when", f"node 'triage': {message}")]


def test_a_rule_expression_may_only_read_input_and_upstream_nodes() -> None:
    raw = rules_router(depends_on=["first"])
    raw["rules"] = [
        {"when": "ticket.priority == 'high'", "route": "billing"},
        {"when": "nodes.later.ok or nodes['ghost']", "route": "billing"},
        {"when": "nodes.first.words > 2", "route": "billing"},
    ]
    raw = workflow(step("first"), raw, step("billing", "triage"), step("tech", "triage"), step("later", "tech"))

    assert problems_of(raw) == [
        ("/nodes/1/rules/0/when", "node 'triage': expression uses unknown name 'ticket' (use input or nodes)"),
        ("/nodes/1/rules/1/when", "node 'triage': expression references unknown node 'ghost'"),
        ("/nodes/1/rules/1/when", "node 'triage': expression references node 'later', which is not upstream of it"),
    ]


def test_an_llm_router_prompt_is_checked_like_any_template() -> None:
    raw = workflow(llm_router(prompt="Route {{ ticket }} after {{ nodes.tech }}"), step("billing", "triage"), step("tech", "triage"))

    assert problems_of(raw) == [
        ("/nodes/0/llm/prompt", "node 'triage': template uses unknown name 'ticket' (use input or nodes)"),
        ("/nodes/0/llm/prompt", "node 'triage': template references node 'tech', which is not upstream of it"),
    ]


def test_an_unknown_trigger_rule_is_refused() -> None:
    raw = workflow(step("a"), step("b", "a", trigger_rule="any_success"))

    [(pointer, message)] = problems_of(raw)

    assert pointer == "/nodes/1/trigger_rule"
    assert "'all_success', 'one_success', 'none_failed_min_one_success' or 'all_done'" in message


def test_a_router_successor_outside_its_routes_is_allowed() -> None:
    plan = definition.load(workflow(rules_router(), step("billing", "triage"), step("tech", "triage"), step("audit", "triage")))

    assert plan.routes == {"triage": frozenset({"billing", "tech"})}


# --- trigger rules, one join at a time ----------------------------------------------------------


def verdict(result: Step, node_id: str = "join") -> str:
    """What the step does with ``node_id``: ready, skipped, the run fails, or it waits."""
    if node_id in result.ready:
        return "ready"
    if node_id in result.skip:
        return "skipped"
    if result.outcome == FAILED:
        return "run fails"
    assert result.outcome is None
    return "waits"


S, F, K, R = SUCCEEDED, FAILED, SKIPPED, RUNNING
JOIN_CASES = {
    "all_success": [
        ((S, S), "ready"), ((S, R), "waits"), ((S, K), "skipped"), ((K, K), "skipped"), ((K, R), "skipped"),
        ((F, S), "run fails"), ((F, K), "run fails"), ((F, R), "run fails"),
    ],
    "one_success": [
        ((S, S), "ready"), ((S, R), "ready"), ((S, K), "ready"), ((S, F), "ready"), ((K, R), "waits"), ((F, R), "waits"),
        ((K, K), "skipped"), ((F, K), "run fails"), ((F, F), "run fails"),
    ],
    "none_failed_min_one_success": [
        ((S, S), "ready"), ((S, K), "ready"), ((S, R), "waits"), ((K, R), "waits"), ((K, K), "skipped"),
        ((F, S), "run fails"), ((F, K), "run fails"), ((F, R), "run fails"),
    ],
    "all_done": [
        ((S, S), "ready"), ((S, K), "ready"), ((K, K), "ready"), ((F, S), "ready"), ((F, F), "ready"), ((F, K), "ready"),
        ((S, R), "waits"), ((K, R), "waits"), ((F, R), "waits"),
    ],
}  # fmt: skip


@pytest.mark.parametrize(
    ("rule", "upstream", "expected"),
    [pytest.param(rule, upstream, expected, id=f"{rule}-{'-'.join(upstream)}") for rule, cases in JOIN_CASES.items() for upstream, expected in cases],
)
def test_a_join_follows_its_trigger_rule(rule: str, upstream: tuple[str, str], expected: str) -> None:
    plan = definition.load(workflow(step("a"), step("b"), step("join", "a", "b", trigger_rule=rule)))

    result = advance(plan, states_of(plan, a=upstream[0], b=upstream[1]))

    assert verdict(result) == expected


def test_every_trigger_rule_has_join_cases() -> None:
    assert set(JOIN_CASES) == set(TRIGGER_RULES)


@pytest.mark.parametrize("rule", TRIGGER_RULES)
def test_a_node_without_dependencies_is_ready_whatever_its_rule(rule: str) -> None:
    plan = definition.load(workflow(step("a", trigger_rule=rule)))

    assert ready_nodes(plan, {"a": PENDING}) == ["a"]


def test_a_cancelled_dependency_counts_as_failed_but_does_not_fail_the_run() -> None:
    plan = definition.load(workflow(step("a"), step("b", "a"), step("c", "a", trigger_rule="all_done")))

    assert advance(plan, {"a": CANCELLED, "b": PENDING, "c": PENDING}) == Step(ready=["c"], skip=[], outcome=None)


# --- routing and skips through the graph -------------------------------------------------------

#            triage (router: invoice -> billing, else tech)
#           /      \
#      billing     tech
#         |          |
#      invoice     debug
#           \      /
#             join (trigger rule under test)
#               |
#             reply
BRANCHES = [rules_router(), step("billing", "triage"), step("tech", "triage"), step("invoice", "billing"), step("debug", "tech")]


def branched(rule: str) -> Plan:
    return definition.load(workflow(*BRANCHES, step("join", "invoice", "debug", trigger_rule=rule), step("reply", "join")))


@pytest.mark.parametrize(
    ("rule", "join_after_branch", "join_skipped"),
    [
        ("all_success", "skipped", True),
        ("one_success", "ready", False),
        ("none_failed_min_one_success", "ready", False),
        ("all_done", "ready", False),
    ],
)
def test_a_skipped_branch_propagates_to_the_join_by_its_trigger_rule(rule: str, join_after_branch: str, join_skipped: bool) -> None:
    plan = branched(rule)
    chose_tech = {"triage": "tech"}

    routed = advance(plan, states_of(plan, triage=SUCCEEDED), chose_tech)
    branch_done = advance(plan, states_of(plan, triage=S, billing=K, invoice=K, tech=S, debug=S), chose_tech)

    assert routed.ready == ["tech"]
    assert routed.skip[:2] == ["billing", "invoice"]  # the branch not taken, and what only it feeds
    assert routed.reasons["billing"] == "router 'triage' chose 'tech'"
    assert routed.reasons["invoice"] == "trigger rule all_success: upstream skipped"
    assert ("join" in routed.skip) is join_skipped  # all_success knows at once; the others wait for debug
    assert ("reply" in routed.skip) is join_skipped
    assert verdict(branch_done) == join_after_branch


def test_a_join_of_all_skipped_branches_is_skipped_except_under_all_done() -> None:
    both_skipped = {"triage": S, "billing": K, "tech": K}
    for rule in TRIGGER_RULES:
        plan = branched(rule)
        result = advance(plan, states_of(plan, **both_skipped), {"triage": None})
        assert ("join" in result.skip) is (rule != "all_done"), rule
        assert ("join" in result.ready) is (rule == "all_done"), rule


def test_an_unchosen_route_is_skipped_whatever_its_trigger_rule() -> None:
    raw = workflow(rules_router(), step("billing", "triage", trigger_rule="all_done"), step("tech", "triage", trigger_rule="one_success"))
    plan = definition.load(raw)

    assert advance(plan, states_of(plan, triage=SUCCEEDED), {"triage": "billing"}) == Step(
        ready=["billing"], skip=["tech"], outcome=None, reasons={"tech": "router 'triage' chose 'billing'"}
    )


def test_routes_are_not_decided_before_the_router_succeeds() -> None:
    plan = definition.load(ROUTED)

    for state in (PENDING, QUEUED, RUNNING):
        assert advance(plan, states_of(plan, triage=state)).skip == []


def test_a_failed_router_fails_the_run_instead_of_skipping() -> None:
    plan = definition.load(ROUTED)

    assert advance(plan, states_of(plan, triage=FAILED)) == Step(ready=[], skip=[], outcome=FAILED)


def test_a_diamond_with_one_branch_skipped_joins_with_none_failed_min_one_success() -> None:
    join = step("join", "billing", "tech", trigger_rule="none_failed_min_one_success")
    plan = definition.load(workflow(rules_router(), step("billing", "triage"), step("tech", "triage"), join))
    chose = {"triage": "billing"}

    first = advance(plan, states_of(plan, triage=SUCCEEDED), chose)
    running = advance(plan, states_of(plan, triage=S, billing=R, tech=K), chose)
    joined = advance(plan, states_of(plan, triage=S, billing=S, tech=K), chose)
    finished = advance(plan, states_of(plan, triage=S, billing=S, tech=K, join=S), chose)

    assert (first.ready, first.skip, first.outcome) == (["billing"], ["tech"], None)
    assert (running.ready, running.skip, running.outcome) == ([], [], None)
    assert (joined.ready, joined.skip, joined.outcome) == (["join"], [], None)
    assert finished.outcome == SUCCEEDED


# --- when a run is over --------------------------------------------------------------------------


def test_a_run_whose_remaining_nodes_are_all_skipped_succeeded() -> None:
    plan = branched("all_success")

    states = states_of(plan, triage=S, billing=S, invoice=S, tech=SKIPPED)

    assert run_outcome(plan, states, {"triage": "billing"}) == SUCCEEDED  # debug, join and reply would be skipped
    assert advance(plan, states, {"triage": "billing"}) == Step(
        ready=[], skip=["debug", "join", "reply"], outcome=SUCCEEDED,
        reasons=dict.fromkeys(["debug", "join", "reply"], "trigger rule all_success: upstream skipped"),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("states", "outcome"),
    [
        pytest.param({"triage": S, "billing": S, "tech": K, "join": S}, SUCCEEDED, id="skipped-and-succeeded"),
        pytest.param({"triage": S, "billing": K, "tech": K, "join": K}, SUCCEEDED, id="all-but-the-router-skipped"),
        pytest.param({"triage": S, "billing": S, "tech": K, "join": RUNNING}, None, id="join-still-running"),
        pytest.param({"triage": S, "billing": F, "tech": K}, FAILED, id="taken-branch-failed"),
        pytest.param({"triage": S, "billing": S, "tech": K, "join": CANCELLED}, None, id="cancelled-is-not-done"),
    ],
)
def test_run_outcome_with_skips(states: dict[str, str], outcome: str | None) -> None:
    join = step("join", "billing", "tech", trigger_rule="one_success")
    plan = definition.load(workflow(rules_router(), step("billing", "triage"), step("tech", "triage"), join))

    assert run_outcome(plan, states_of(plan, **states), {"triage": "billing"}) == outcome


def test_a_run_waits_for_the_nodes_that_handle_a_failure_then_fails() -> None:
    #  work -> report ; work -> cleanup (all_done) -> notify ; other (independent)
    raw = workflow(step("work"), step("report", "work"), step("cleanup", "work", trigger_rule="all_done"), step("notify", "cleanup"), step("other"))
    plan = definition.load(raw)

    failed = advance(plan, {"work": F, "report": PENDING, "cleanup": PENDING, "notify": PENDING, "other": RUNNING})
    cleaning = advance(plan, {"work": F, "report": PENDING, "cleanup": S, "notify": RUNNING, "other": RUNNING})
    handled = advance(plan, {"work": F, "report": PENDING, "cleanup": S, "notify": S, "other": RUNNING})

    assert (failed.ready, failed.outcome) == (["cleanup"], None)
    assert cleaning.outcome is None
    assert handled.outcome == FAILED  # the failure is handled, not forgiven; "other" is abandoned as before


def test_a_one_success_join_waits_for_its_last_chance() -> None:
    raw = workflow(step("fast"), step("slow"), step("best", "fast", "slow", trigger_rule="one_success"))
    plan = definition.load(raw)

    assert advance(plan, {"fast": F, "slow": RUNNING, "best": PENDING}).outcome is None
    assert advance(plan, {"fast": F, "slow": S, "best": PENDING}).ready == ["best"]
    assert advance(plan, {"fast": F, "slow": F, "best": PENDING}).outcome == FAILED


def test_an_llm_node_can_be_a_route() -> None:
    plan = definition.load(workflow(llm_router(), llm("billing", depends_on=["triage"]), step("tech", "triage")))

    assert advance(plan, states_of(plan, triage=S), {"triage": "billing"}).ready == ["billing"]
