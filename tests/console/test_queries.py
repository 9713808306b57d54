"""Pages cost a fixed number of queries, however many rows they show."""

from __future__ import annotations

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from apps.runs.models import NodeRun, NodeStatus
from apps.runs.services import run_start_test
from apps.workflows.services import workflow_publish
from tests.factories import definition, fan_out_definition, llm_node, save_workflow

from .helpers import finish, signed_in, start


def queries(client, url: str, **headers: str) -> int:
    client.get(url, headers=headers)  # warm the per-process caches (parsed plans, the user's roles)
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url, headers=headers)
    assert response.status_code in (200, 286)
    return len(captured)


def test_the_runs_list_does_not_grow_with_its_rows(version, chain_version, operator, admin):
    client = signed_in(operator)
    finish(start(version, operator))
    one = queries(client, reverse("console:runs"))

    for i in range(12):
        run = start(chain_version if i % 2 else version, admin if i % 3 else operator)
        if i % 4:
            finish(run)

    assert queries(client, reverse("console:runs")) == one
    assert queries(client, reverse("console:runs"), **{"HX-Request": "true", "HX-Target": "run-rows"}) <= one


def test_the_run_page_does_not_grow_with_its_nodes(operator):
    client = signed_in(operator)
    small = start(save_workflow(definition("small", [llm_node("only")])), operator)
    large = start(save_workflow(fan_out_definition("large", width=15)), operator)
    NodeRun.objects.filter(run=large).update(status=NodeStatus.SUCCEEDED, output={"text": "done"}, attempt=1)

    for name in ("console:run", "console:run_nodes"):
        assert queries(client, reverse(name, args=[large.id])) == queries(client, reverse(name, args=[small.id]))


def test_the_workflow_pages_do_not_grow_with_workflows_versions_or_runs(operator):
    client = signed_in(operator)
    first = save_workflow(definition("first"))
    start(first)
    few_list, few_detail = queries(client, reverse("console:workflows")), queries(client, reverse("console:workflow", args=["first"]))

    for i in range(5):
        save_workflow(definition("first", description=f"version {i + 2}"))
        start(save_workflow(definition(f"more-{i}")))
        finish(start(first))

    assert queries(client, reverse("console:workflows")) == few_list
    assert queries(client, reverse("console:workflow", args=["first"])) == few_detail


def test_the_versions_page_does_not_grow_with_versions_runs_or_publications(operator, admin):
    client = signed_in(operator)
    first = save_workflow(definition("history"))
    finish(start(first))
    url = reverse("console:versions", args=["history"])
    few = queries(client, url)

    for i in range(5):
        version = save_workflow(definition("history", description=f"version {i + 2}"), publish=False)
        finish(run_start_test(workflow=version.workflow, version_number=version.number, input={"topic": "tides"}))
        finish(start(first))
        workflow_publish(workflow=version.workflow, version_number=version.number, user=admin)

    assert queries(client, url) == few


def test_a_version_page_and_a_diff_do_not_grow_with_nodes(operator):
    client = signed_in(operator)
    save_workflow(definition("small", [llm_node("only")]))
    save_workflow(definition("small", [llm_node("only", "Another prompt.")]))
    save_workflow(fan_out_definition("large", width=3))
    save_workflow(fan_out_definition("large", width=15))

    for name, args in (("console:version", [1]), ("console:version_diff", [1, 2])):
        assert queries(client, reverse(name, args=["large", *args])) == queries(client, reverse(name, args=["small", *args]))
