"""A real Celery worker process runs the fan-out demo: branches overlap, everything is persisted."""

from __future__ import annotations

import pytest

from apps.runs.models import NodeStatus, ProviderCall, RunStatus
from apps.runs.services import run_start
from apps.workflows.management.commands.load_demos import DEMOS
from apps.workflows.services import definition_parse_text, workflow_save
from tests.runs.helpers import wait_for_run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

ARTICLE = {
    "title": "Harbour expansion approved",
    "body": "The city council approved the harbour expansion on Monday after a two-year review. "
    "Construction starts in spring and the port expects twice the container traffic by 2030.",
}


def test_fan_out_demo_runs_branches_in_parallel_and_persists_every_node(celery_worker, operator):
    version, _ = workflow_save(spec=definition_parse_text(text=(DEMOS / "article-brief.yaml").read_text()), publish=True)
    run = run_start(workflow=version.workflow, input=ARTICLE, started_by=operator, options={"simulation": {"latency": "fixed:300"}})

    run = wait_for_run(run.id)

    assert run.status == RunStatus.SUCCEEDED, run.error
    nodes = {n.node_id: n for n in run.node_runs.all()}
    assert all(n.status == NodeStatus.SUCCEEDED for n in nodes.values())
    branches = [nodes["summary"], nodes["facts"], nodes["tone"]]
    latest_start = max(b.started_at for b in branches)
    earliest_finish = min(b.finished_at for b in branches)
    assert latest_start < earliest_finish, "the three branches did not run at the same time"
    assert nodes["brief"].started_at >= max(b.finished_at for b in branches)
    for node in nodes.values():
        assert node.attempt == 1
        assert node.input_hash
        assert node.input is not None
        assert node.output is not None
    llm_nodes = [n for n in nodes.values() if n.node_type == "llm"]
    calls = ProviderCall.objects.filter(run=run)
    assert sorted(c.node_run_id for c in calls) == sorted(n.pk for n in llm_nodes)
    assert all(c.raw_response and c.tokens_in > 0 and c.tokens_out > 0 for c in calls)
    assert run.tokens_in == sum(c.tokens_in for c in calls)
    assert run.cost == sum(c.cost for c in calls)
    assert run.started_by == operator
    kinds = list(run.events.values_list("kind", flat=True))
    assert kinds[0] == "run_created"
    assert kinds[-1] == "run_finished"
    assert kinds.count("node_succeeded") == len(nodes)
