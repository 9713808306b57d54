"""The workflow the reliability tests run, and the invariants they check after it."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

from apps.runs.models import NodeStatus, OutboxMessage, RunEvent, RunStatus
from apps.runs.services import run_start
from tests.factories import definition, llm_node, save_workflow, tool_node

NODES = 5


def own_model(scenario: str) -> str:
    """A simulated model no other test uses, so this test's circuit breaker is its own."""
    return f"sim-rel-{scenario}-{uuid.uuid4().hex[:6]}"


def five_node_workflow(name: str, model: str, max_attempts: int) -> dict[str, Any]:
    """draft -> (facts, tone) -> notify (the outbox tool: a side effect) -> brief.

    The fan-out sends facts and tone through the broker; notify and brief are lone successors
    that run inline in the worker that finished the node before them.
    """
    after_draft = "{{ nodes.draft }}"
    notify_args = {"topic": "briefs", "payload": {"topic": "{{ input.topic }}", "facts": "{{ nodes.facts }}"}}
    return definition(
        name,
        [
            llm_node("draft", "Write about {{ input.topic }}.", model=model),
            llm_node("facts", f"List the facts in: {after_draft}", model=model, depends_on=["draft"]),
            llm_node("tone", f"Describe the tone of: {after_draft}", model=model, depends_on=["draft"]),
            tool_node("notify", "outbox", notify_args, depends_on=["facts", "tone"]),
            llm_node("brief", "Brief on {{ nodes.facts }} ({{ nodes.tone }}), message {{ nodes.notify.message_id }}.", model=model, depends_on=["notify"]),
        ],
        retry={"max_attempts": max_attempts, "backoff_seconds": 0.2, "backoff_cap_seconds": 1},
    )


def start_runs_of(version, count: int, latency_ms: int, start_index: int = 0) -> list:
    options = {"simulation": {"latency": f"fixed:{latency_ms}", "faults": {}}}
    return [run_start(workflow=version.workflow, input={"topic": f"harbour {i}"}, options=options).pk for i in range(start_index, start_index + count)]


def save_five_node_workflow(scenario: str, max_attempts: int):
    return save_workflow(five_node_workflow(f"rel-{scenario}-{uuid.uuid4().hex[:6]}", own_model(scenario), max_attempts))


def save_held_workflow(scenario: str, max_attempts: int = 3):
    """One llm node on a held model (tests.providers.held): it runs until the test releases its call."""
    name = f"rel-held-{scenario}-{uuid.uuid4().hex[:6]}"
    node = llm_node("answer", "Answer about {{ input.topic }}.", model=f"held-{scenario}-{name[-6:]}")
    retry = {"max_attempts": max_attempts, "backoff_seconds": 0.2, "backoff_cap_seconds": 1}
    # held-* models are served by the workers' DAGWRIGHT_PROVIDERS (Deployment.serve_held_model), not this process's
    return save_workflow(definition(name, [node], retry=retry), check_models=False)


def start_held_run(version, topic: str):
    """A run of ``save_held_workflow``; its call's prompt contains ``topic``."""
    return run_start(workflow=version.workflow, input={"topic": topic})


def assert_every_run_succeeded_once_per_node(run_ids: list, max_attempts: int) -> None:
    """Every run succeeded; each node succeeded exactly once, within its attempts, and took a
    second attempt only when the worker of its first was lost; the outbox message of each run
    was written exactly once. (For workflows without provider faults.)"""
    from apps.runs.models import NodeRun, Run

    runs = Run.objects.filter(pk__in=run_ids)
    failed = {str(r.pk)[:8]: r.error for r in runs if r.status != RunStatus.SUCCEEDED}
    assert not failed, f"{len(failed)} runs did not succeed: {failed}"
    nodes = NodeRun.objects.filter(run_id__in=run_ids)
    assert nodes.count() == NODES * len(run_ids)
    assert set(nodes.values_list("status", flat=True)) == {NodeStatus.SUCCEEDED}
    attempts = list(nodes.values_list("attempt", flat=True))
    assert min(attempts) >= 1
    assert max(attempts) <= max_attempts
    lost = RunEvent.objects.filter(run_id__in=run_ids, kind="node_lease_expired").count()
    assert sum(a - 1 for a in attempts) == lost, "an attempt was spent although no worker was lost"
    successes = Counter(RunEvent.objects.filter(run_id__in=run_ids, kind="node_succeeded").values_list("run_id", "node_id"))
    assert len(successes) == NODES * len(run_ids)
    twice = {key: n for key, n in successes.items() if n != 1}
    assert not twice, f"nodes that succeeded more than once: {twice}"
    outbox = Counter(OutboxMessage.objects.filter(run_id__in=run_ids).values_list("run_id", "node_id"))
    assert outbox == Counter({(run_id, "notify"): 1 for run_id in run_ids}), "an outbox message is missing or was written twice"


def assert_each_struck_node_recovered_once(run_ids: list, max_attempts: int) -> None:
    """Runs of ``save_held_workflow`` whose worker was killed in the middle of the held call: each
    node's lease expired and the sweeper gave it to another attempt, which succeeded, once, and was
    the only call paid for (the killed one never got its answer)."""
    from apps.runs.models import NodeRun, ProviderCall, Run

    runs = Run.objects.filter(pk__in=run_ids)
    failed = {str(r.pk)[:8]: r.error for r in runs if r.status != RunStatus.SUCCEEDED}
    assert not failed, f"{len(failed)} struck runs did not succeed: {failed}"
    lost = Counter(RunEvent.objects.filter(run_id__in=run_ids, kind="node_lease_expired").values_list("run_id", flat=True))
    assert set(lost) == set(run_ids), f"{len(set(run_ids) - set(lost))} struck nodes were never recovered from an expired lease"
    for node in NodeRun.objects.filter(run_id__in=run_ids):
        assert (node.status, node.attempt - 1) == (NodeStatus.SUCCEEDED, lost[node.run_id]), f"{node.node_id} of run {str(node.run_id)[:8]}"
        assert 2 <= node.attempt <= max_attempts
    successes = Counter(RunEvent.objects.filter(run_id__in=run_ids, kind="node_succeeded").values_list("run_id", flat=True))
    assert successes == Counter(run_ids), "a struck node succeeded more than once, or not at all"
    paid = Counter(ProviderCall.objects.filter(run_id__in=run_ids, output__isnull=False).values_list("run_id", flat=True))
    assert paid == Counter(run_ids), "a struck node's call was paid for more than once, or not at all"
