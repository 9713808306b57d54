"""Which nodes may run next, which are skipped, and when a run is over. Pure functions over node states.

A pending node is judged by its trigger rule over the states of its direct dependencies, counted
as succeeded, skipped, or failed (failed, cancelled, or a dependency that can itself never run
because of a failure upstream: Airflow's ``upstream_failed``, never stored here). A node with no
dependencies is always ready. Like Airflow's, the rules decide as early as they can:

=============================  ===========================================  ========================================  ==================================
rule                           ready when                                   skipped when                              can never run (failure) when
=============================  ===========================================  ========================================  ==================================
all_success (default)          every dependency succeeded                   any dependency skipped, none failed       any dependency failed
one_success                    at least one dependency succeeded            all dependencies skipped                  all done, none succeeded, some failed
none_failed_min_one_success    all done, none failed, at least one          all dependencies skipped                  any dependency failed
                               succeeded
all_done                       every dependency is done, however it ended   never (by its dependencies)               never
=============================  ===========================================  ========================================  ==================================

A ``one_success`` node does not wait for its other dependencies: its templates see the outputs
that exist when it is claimed.

Routing comes first: a route of a router that succeeded and chose another route is skipped,
whatever its trigger rule. A route of a router that failed follows its trigger rule as usual.
A review gate is a router with one route, its ``on_reject``: skipped when the gate approves; when
it rejects, that route runs and the gate's other successors are skipped.

The run fails when a node failed and no node downstream of a failure can still run, i.e. once the
nodes whose rules tolerate the failure (``all_done``, ``one_success``) have had their turn; until
then it goes on. It then fails as before: waiting nodes are cancelled, running ones abandoned. A
failure is never absorbed: a run with a failed node ends ``failed`` even if a ``one_success`` join
ran (unlike Airflow, where a succeeding leaf hides it). A run succeeds when every node succeeded or
was skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .graph import Plan

PENDING, QUEUED, RUNNING, WAITING_REVIEW = "pending", "queued", "running", "waiting_review"
SUCCEEDED, FAILED, SKIPPED, CANCELLED = "succeeded", "failed", "skipped", "cancelled"
TERMINAL = frozenset({SUCCEEDED, FAILED, SKIPPED, CANCELLED})
ALL_SUCCESS, ONE_SUCCESS, NONE_FAILED_MIN_ONE_SUCCESS, ALL_DONE = "all_success", "one_success", "none_failed_min_one_success", "all_done"
# A pending node that can never run because of a failure upstream. Only ever a verdict of this
# module: the node stays pending in the database and is cancelled when the run fails.
UPSTREAM_FAILED = "upstream_failed"
_READY, _WAIT = "ready", "wait"
_FAILURES = frozenset({FAILED, CANCELLED, UPSTREAM_FAILED})


@dataclass(frozen=True)
class Step:
    """What the run should do next: queue ``ready``, mark ``skip`` skipped (``reasons`` says why,
    per node), and finish with ``outcome`` when it is not None (then nothing is ready)."""

    ready: list[str]
    skip: list[str]
    outcome: str | None
    reasons: dict[str, str] = field(default_factory=dict)


def advance(plan: Plan, states: Mapping[str, str], router_choices: Mapping[str, str | None] | None = None) -> Step:
    """The next step of a run from its node states and its routers' choices (router id -> route).

    One pass in topological order reaches the fixpoint: a node's verdict depends only on its
    dependencies, which come before it, so a skip propagates through the whole graph at once.
    """
    resolved, ready, reasons = _resolve(plan, states, router_choices or {})
    outcome = _outcome(plan, resolved)
    return Step(ready=[] if outcome else ready, skip=list(reasons), outcome=outcome, reasons=reasons)


def ready_nodes(plan: Plan, states: Mapping[str, str], router_choices: Mapping[str, str | None] | None = None) -> list[str]:
    """Pending nodes whose trigger rule is met, in topological order."""
    return _resolve(plan, states, router_choices or {})[1]


def run_outcome(plan: Plan, states: Mapping[str, str], router_choices: Mapping[str, str | None] | None = None) -> str | None:
    """``failed`` once a failure can no longer be handled, ``succeeded`` when every node succeeded
    or is (or would now be) skipped, else None."""
    return _outcome(plan, _resolve(plan, states, router_choices or {})[0])


def _resolve(plan: Plan, states: Mapping[str, str], choices: Mapping[str, str | None]) -> tuple[dict[str, str], list[str], dict[str, str]]:
    """States with the verdicts on pending nodes applied, the ready nodes, and the skipped ones with why."""
    resolved = dict(states)
    ready: list[str] = []
    reasons: dict[str, str] = {}
    for node_id in plan.order:
        if states.get(node_id) != PENDING:
            continue
        verdict, reason = _verdict(plan, node_id, resolved, choices)
        if verdict == _READY:
            ready.append(node_id)
        elif verdict != _WAIT:
            resolved[node_id] = verdict
            if verdict == SKIPPED:
                reasons[node_id] = reason
    return resolved, ready, reasons


def _verdict(plan: Plan, node_id: str, states: Mapping[str, str], choices: Mapping[str, str | None]) -> tuple[str, str]:
    deps = plan.deps[node_id]
    for dep in deps:
        if states.get(dep) != SUCCEEDED:
            continue
        choice = choices.get(dep)
        if dep in plan.reject_routes:
            if node_id == plan.reject_routes[dep] and choice != node_id:
                return SKIPPED, f"review '{dep}' approved"
            if node_id != plan.reject_routes[dep] and choice == plan.reject_routes[dep]:
                return SKIPPED, f"review '{dep}' rejected: its on_reject route '{choice}' runs instead"
        elif node_id in plan.routes.get(dep, ()) and choice != node_id:
            return SKIPPED, f"router '{dep}' chose '{choice}'" if choice else f"router '{dep}' chose no route"
    if not deps:
        return _READY, ""
    ended = [states.get(dep) for dep in deps]
    succeeded, skipped = ended.count(SUCCEEDED), ended.count(SKIPPED)
    failed = sum(1 for state in ended if state in _FAILURES)
    done = succeeded + skipped + failed == len(deps)
    rule = plan.trigger_rules[node_id]
    if rule == ALL_SUCCESS:
        verdict = UPSTREAM_FAILED if failed else SKIPPED if skipped else _READY if done else _WAIT
    elif rule == ONE_SUCCESS:
        verdict = _READY if succeeded else _WAIT if not done else UPSTREAM_FAILED if failed else SKIPPED
    elif rule == NONE_FAILED_MIN_ONE_SUCCESS:
        verdict = UPSTREAM_FAILED if failed else _WAIT if not done else _READY if succeeded else SKIPPED
    else:  # all_done
        verdict = _READY if done else _WAIT
    return verdict, (f"trigger rule {rule}: upstream skipped" if verdict == SKIPPED else "")


def _outcome(plan: Plan, resolved: Mapping[str, str]) -> str | None:
    doomed = {n for n in plan.order if resolved.get(n) in (FAILED, UPSTREAM_FAILED)}
    if any(resolved.get(n) == FAILED for n in plan.order):
        # Nodes downstream of a failure that can still run are handling it: wait for them.
        handling = any(resolved.get(n) not in TERMINAL and n not in doomed and plan.ancestors[n] & doomed for n in plan.order)
        return None if handling else FAILED
    if all(resolved.get(n) in (SUCCEEDED, SKIPPED) for n in plan.order):
        return SUCCEEDED
    return None


def upstream_context(plan: Plan, node_id: str, run_input: object, outputs: Mapping[str, object]) -> dict:
    """The template context of ``node_id``: the run input and its ancestors' outputs only.

    Downstream of an approved review gate, the reviewed node's output is the approved one (a
    reviewer's edit included): what was approved is exactly what later nodes receive.
    """
    ancestors = plan.ancestors[node_id]
    nodes = {k: v for k, v in outputs.items() if k in ancestors}
    for gate, subject in plan.review_subjects.items():
        decision = nodes.get(gate)
        if subject in nodes and isinstance(decision, dict) and decision.get("decision") in APPROVED_DECISIONS:
            nodes[subject] = decision.get("output")
    return {"input": run_input, "nodes": nodes}


APPROVED_DECISIONS = frozenset({"approved", "edited"})
