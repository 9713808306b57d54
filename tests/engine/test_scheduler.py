"""Readiness and run outcome over node states, and what a node's templates can see."""

from __future__ import annotations

import pytest

from apps.engine.scheduler import CANCELLED, FAILED, PENDING, QUEUED, RUNNING, SKIPPED, SUCCEEDED, ready_nodes, run_outcome, upstream_context
from tests.engine.defs import plan_of

CHAIN = plan_of({"a": [], "b": ["a"], "c": ["b"]})
DIAMOND = plan_of({"top": [], "left": ["top"], "right": ["top"], "bottom": ["left", "right"]})
FAN = plan_of({"start": [], **{f"branch_{i}": ["start"] for i in range(4)}, "join": [f"branch_{i}" for i in range(4)]})
TWO_ROOTS = plan_of({"x": [], "y": [], "both": ["x", "y"]})


def _states(plan, default: str = PENDING, **states: str) -> dict[str, str]:
    return {node_id: states.get(node_id, default) for node_id in plan.order}


def test_plan_order_is_topological_and_keeps_definition_order_among_peers() -> None:
    plan = plan_of({"join": ["b", "a"], "b": [], "a": []})

    assert plan.order == ("b", "a", "join")
    assert FAN.order == ("start", "branch_0", "branch_1", "branch_2", "branch_3", "join")


def test_plan_successors_and_ancestors() -> None:
    assert DIAMOND.successors == {"top": ("left", "right"), "left": ("bottom",), "right": ("bottom",), "bottom": ()}
    assert DIAMOND.ancestors["bottom"] == {"top", "left", "right"}
    assert DIAMOND.ancestors["left"] == {"top"}
    assert DIAMOND.ancestors["top"] == frozenset()


@pytest.mark.parametrize(
    ("plan", "states", "ready"),
    [
        pytest.param(CHAIN, {}, ["a"], id="chain-start"),
        pytest.param(CHAIN, {"a": SUCCEEDED}, ["b"], id="chain-middle"),
        pytest.param(CHAIN, {"a": SUCCEEDED, "b": RUNNING}, [], id="chain-waits-for-running"),
        pytest.param(CHAIN, {"a": SUCCEEDED, "b": SUCCEEDED}, ["c"], id="chain-last"),
        pytest.param(DIAMOND, {"top": SUCCEEDED}, ["left", "right"], id="diamond-both-sides-at-once"),
        pytest.param(DIAMOND, {"top": SUCCEEDED, "left": SUCCEEDED}, ["right"], id="diamond-bottom-waits-for-both"),
        pytest.param(DIAMOND, {"top": SUCCEEDED, "left": SUCCEEDED, "right": SUCCEEDED}, ["bottom"], id="diamond-bottom-ready"),
        pytest.param(FAN, {"start": SUCCEEDED}, [f"branch_{i}" for i in range(4)], id="fan-out-all-branches"),
        pytest.param(FAN, {"start": SUCCEEDED, **{f"branch_{i}": SUCCEEDED for i in range(3)}}, ["branch_3"], id="join-waits-for-last-branch"),
        pytest.param(FAN, {"start": SUCCEEDED, **{f"branch_{i}": SUCCEEDED for i in range(4)}}, ["join"], id="join-ready"),
        pytest.param(TWO_ROOTS, {}, ["x", "y"], id="independent-roots-together"),
        pytest.param(CHAIN, {"a": QUEUED}, [], id="queued-is-not-ready-again"),
        pytest.param(CHAIN, {"a": FAILED}, [], id="failed-dependency-blocks"),
        pytest.param(DIAMOND, {"top": SUCCEEDED, "left": SUCCEEDED, "right": FAILED}, [], id="failed-side-blocks-join"),
        pytest.param(CHAIN, {"a": SKIPPED}, [], id="skipped-dependency-is-not-success"),
        pytest.param(CHAIN, {"a": CANCELLED}, [], id="cancelled-dependency-blocks"),
    ],
)
def test_ready_nodes(plan, states: dict[str, str], ready: list[str]) -> None:
    assert ready_nodes(plan, _states(plan, **states)) == ready


def test_a_node_with_no_state_is_not_ready() -> None:
    assert ready_nodes(CHAIN, {"b": PENDING}) == []


@pytest.mark.parametrize(
    ("plan", "states", "outcome"),
    [
        pytest.param(CHAIN, {}, None, id="nothing-done"),
        pytest.param(CHAIN, {"a": SUCCEEDED, "b": RUNNING}, None, id="still-running"),
        pytest.param(CHAIN, {"a": SUCCEEDED, "b": SUCCEEDED, "c": SUCCEEDED}, SUCCEEDED, id="chain-done"),
        pytest.param(DIAMOND, {"top": SUCCEEDED, "left": SUCCEEDED, "right": SUCCEEDED, "bottom": SUCCEEDED}, SUCCEEDED, id="diamond-done"),
        pytest.param(CHAIN, {"a": SUCCEEDED, "b": FAILED}, FAILED, id="failure-ends-the-run"),
        pytest.param(FAN, {"start": SUCCEEDED, "branch_0": FAILED, "branch_1": RUNNING}, FAILED, id="failure-wins-while-others-run"),
        pytest.param(CHAIN, {"a": SUCCEEDED, "b": SKIPPED, "c": SKIPPED}, SUCCEEDED, id="skipped-counts-as-done"),
        pytest.param(CHAIN, {"a": SUCCEEDED, "b": CANCELLED, "c": CANCELLED}, None, id="cancelled-is-not-success"),
    ],
)
def test_run_outcome(plan, states: dict[str, str], outcome: str | None) -> None:
    assert run_outcome(plan, _states(plan, **states)) == outcome


def test_upstream_context_exposes_only_ancestors() -> None:
    outputs = {"top": {"n": 1}, "left": "L", "right": "R", "bottom": "B"}

    assert upstream_context(DIAMOND, "left", {"q": 1}, outputs) == {"input": {"q": 1}, "nodes": {"top": {"n": 1}}}
    assert upstream_context(DIAMOND, "bottom", {"q": 1}, outputs)["nodes"] == {"top": {"n": 1}, "left": "L", "right": "R"}
    assert upstream_context(DIAMOND, "top", {"q": 1}, outputs)["nodes"] == {}


def test_upstream_context_includes_indirect_ancestors_but_not_siblings() -> None:
    outputs = {f"branch_{i}": i for i in range(4)} | {"start": "S"}

    context = upstream_context(FAN, "branch_2", None, outputs)

    assert context["nodes"] == {"start": "S"}
    assert upstream_context(CHAIN, "c", None, {"a": 1, "b": 2})["nodes"] == {"a": 1, "b": 2}
