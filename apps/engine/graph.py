"""Graph-wide checks and the execution plan of a workflow."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from . import templating
from .errors import Problem
from .spec import AnyNode, LlmNode, ReviewNode, RouterNode, WorkflowSpec


@dataclass(frozen=True)
class Plan:
    """A validated workflow, indexed for scheduling: ``order`` is topological."""

    spec: WorkflowSpec
    order: tuple[str, ...]
    deps: dict[str, tuple[str, ...]]

    @cached_property
    def successors(self) -> dict[str, tuple[str, ...]]:
        succ: dict[str, list[str]] = {n: [] for n in self.order}
        for node_id in self.order:
            for dep in self.deps[node_id]:
                succ[dep].append(node_id)
        return {k: tuple(v) for k, v in succ.items()}

    @cached_property
    def ancestors(self) -> dict[str, frozenset[str]]:
        result: dict[str, frozenset[str]] = {}
        for node_id in self.order:  # topological: every dep is already done
            acc: set[str] = set()
            for dep in self.deps[node_id]:
                acc.add(dep)
                acc |= result[dep]
            result[node_id] = frozenset(acc)
        return result

    @cached_property
    def trigger_rules(self) -> dict[str, str]:
        return {node.id: node.trigger_rule for node in self.spec.nodes}

    @cached_property
    def routes(self) -> dict[str, frozenset[str]]:
        """Each router's possible routes (its successors that only run when chosen)."""
        routes = {node.id: frozenset(node.routes) for node in self.spec.nodes if isinstance(node, RouterNode)}
        return routes | {gate: frozenset({target}) for gate, target in self.reject_routes.items()}

    @cached_property
    def reject_routes(self) -> dict[str, str]:
        """Each review gate's ``on_reject`` route: taken on reject, skipped on approval."""
        return {node.id: node.on_reject for node in self.spec.nodes if isinstance(node, ReviewNode) and node.on_reject}

    @cached_property
    def review_subjects(self) -> dict[str, str]:
        """Each review gate and the node whose output it reviews."""
        return {node.id: node.subject_id for node in self.spec.nodes if isinstance(node, ReviewNode)}

    @cached_property
    def nodes_by_id(self) -> dict[str, AnyNode]:
        return {node.id: node for node in self.spec.nodes}

    def node(self, node_id: str) -> AnyNode:
        # by id, not ``spec.node``'s scan: callers look up every node of a plan (a run's start, its graph)
        return self.nodes_by_id[node_id]


def _find_cycle(deps: dict[str, list[str]]) -> list[str] | None:
    """A cycle as a path ``[a, b, ..., a]`` following depends_on edges, or None."""
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in deps.get(node, []):
            if state.get(dep) == 1:
                return stack[stack.index(dep) :] + [dep]
            if dep in deps and state.get(dep) is None:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in deps:
        if state.get(node) is None:
            found = visit(node)
            if found:
                return found
    return None


def _topological(deps: dict[str, list[str]], ids: list[str]) -> tuple[str, ...]:
    remaining = {n: set(deps[n]) for n in ids}
    order: list[str] = []
    while remaining:
        ready = [n for n in ids if n in remaining and not remaining[n]]
        for n in ready:
            del remaining[n]
            for rest in remaining.values():
                rest.discard(n)
        order.extend(ready)
    return tuple(order)


def _template_fields(node: AnyNode) -> list[tuple[str, list[str], bool]]:
    """``(field, sources, is_expression)`` for every field of the node that holds Jinja2."""
    if isinstance(node, LlmNode):
        return [("prompt", [node.prompt], False), ("system", [node.system] if node.system else [], False)]
    if isinstance(node, RouterNode):
        if node.llm is not None:
            return [("llm/prompt", [node.llm.prompt], False), ("llm/system", [node.llm.system] if node.llm.system else [], False)]
        return [(f"rules/{k}/when", [rule.when], True) for k, rule in enumerate(node.rules or [])]
    if isinstance(node, ReviewNode):
        return []
    return [("args", templating.template_sources(node.args), False)]


def _check_templates(spec: WorkflowSpec, plan: Plan) -> list[Problem]:
    problems: list[Problem] = []
    for index, node in enumerate(spec.nodes):
        for field, sources, is_expression in _template_fields(node):
            if not sources:
                continue
            names, refs = templating.referenced_names(sources, expressions=is_expression)
            where, what = f"/nodes/{index}/{field}", "expression" if is_expression else "template"
            for name in sorted(names - templating.TEMPLATE_NAMES):
                problems.append(Problem(where, f"node '{node.id}': {what} uses unknown name '{name}' (use input or nodes)"))
            for ref in sorted(refs):
                if ref not in plan.deps:
                    problems.append(Problem(where, f"node '{node.id}': {what} references unknown node '{ref}'"))
                elif ref not in plan.ancestors[node.id]:
                    problems.append(Problem(where, f"node '{node.id}': {what} references node '{ref}', which is not upstream of it"))
    return problems


def _check_router(index: int, node: RouterNode, plan: Plan) -> list[Problem]:
    """Routes are direct successors of the router; rules, default and low-confidence route name routes."""
    problems: list[Problem] = []
    for k, route in enumerate(node.routes):
        if route not in plan.deps:
            problems.append(Problem(f"/nodes/{index}/routes/{k}", f"node '{node.id}': route '{route}' is not a node"))
        elif node.id not in plan.deps[route]:
            message = f"node '{node.id}': route '{route}' is not a direct successor of the router (add '{node.id}' to its depends_on)"
            problems.append(Problem(f"/nodes/{index}/routes/{k}", message))
    targets = [(f"rules/{k}/route", f"rule {k}", rule.route) for k, rule in enumerate(node.rules or [])]
    targets += [("default", "the default", node.default)] if node.default is not None else []
    targets += [("llm/low_confidence_route", "the low-confidence route", node.llm.low_confidence_route)] if node.llm is not None else []
    for field, label, route in targets:
        if route not in node.routes:
            problems.append(Problem(f"/nodes/{index}/{field}", f"node '{node.id}': {label} goes to '{route}', which is not one of its routes"))
    return problems


def _check_review(index: int, node: ReviewNode, plan: Plan) -> list[Problem]:
    """``on_reject`` is a direct successor of the gate."""
    if node.on_reject is None:
        return []
    where = f"/nodes/{index}/on_reject"
    if node.on_reject not in plan.deps:
        return [Problem(where, f"node '{node.id}': on_reject route '{node.on_reject}' is not a node")]
    if node.id not in plan.deps[node.on_reject]:
        message = f"node '{node.id}': on_reject route '{node.on_reject}' is not a direct successor of the review (add '{node.id}' to its depends_on)"
        return [Problem(where, message)]
    return []


def _check_routers(spec: WorkflowSpec, plan: Plan) -> list[Problem]:
    problems = [p for index, node in enumerate(spec.nodes) if isinstance(node, RouterNode) for p in _check_router(index, node, plan)]
    return problems + [p for index, node in enumerate(spec.nodes) if isinstance(node, ReviewNode) for p in _check_review(index, node, plan)]


def check(spec: WorkflowSpec) -> tuple[Plan | None, list[Problem]]:
    """Check the graph rules; returns the plan when there are no problems."""
    if not spec.nodes:
        return None, [Problem("/nodes", "a workflow needs at least one node")]
    problems: list[Problem] = []
    first_index: dict[str, int] = {}
    for index, node in enumerate(spec.nodes):
        if node.id in first_index:
            problems.append(Problem(f"/nodes/{index}/id", f"node '{node.id}': duplicate id (also at /nodes/{first_index[node.id]})"))
        else:
            first_index[node.id] = index
    for index, node in enumerate(spec.nodes):
        for k, dep in enumerate(node.depends_on):
            if dep not in first_index:
                problems.append(Problem(f"/nodes/{index}/depends_on/{k}", f"node '{node.id}': depends on unknown node '{dep}'"))
    if problems:
        return None, problems
    deps = {n.id: list(dict.fromkeys(n.depends_on)) for n in spec.nodes}
    cycle = _find_cycle(deps)
    if cycle:
        path = " -> ".join(cycle)
        return None, [Problem(f"/nodes/{first_index[cycle[0]]}/depends_on", f"node '{cycle[0]}': dependency cycle {path}")]
    ids = [n.id for n in spec.nodes]
    plan = Plan(spec=spec, order=_topological(deps, ids), deps={k: tuple(v) for k, v in deps.items()})
    problems = _check_routers(spec, plan) + _check_templates(spec, plan)
    return (None, problems) if problems else (plan, [])
