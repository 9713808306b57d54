"""The workflow list and a workflow's page."""

from __future__ import annotations

from django.urls import reverse

from apps.runs.models import RunStatus
from tests.factories import definition, fan_out_definition, save_workflow

from .helpers import finish, start


def row_of(html: str, name: str) -> str:
    start_at = html.index(f'<a href="/workflows/{name}/"><strong>')
    return html[start_at : html.index("</tr>", start_at)]


def test_the_list_shows_each_workflows_latest_version_nodes_and_runs(version, operator_client):
    save_workflow(definition("tiny", description="second version"))
    save_workflow(fan_out_definition("fan", width=4))
    finish(start(version))
    finish(start(version), RunStatus.FAILED)

    html = operator_client.get(reverse("console:workflows")).content.decode()

    tiny, fan = row_of(html, "tiny"), row_of(html, "fan")
    assert "second version" in tiny
    assert ">v2<" in tiny
    assert '<td class="num">1</td>' in tiny  # one node
    assert '?workflow=tiny">2</a>' in tiny  # two runs, linked to the filtered list
    assert "failed" in tiny  # the last run's status
    assert ">v1<" in fan
    assert '<td class="num">6</td>' in fan  # start, four branches, join
    assert '<td class="num">0</td>' in fan
    assert html.index("fan") < html.index("tiny")


def test_the_workflow_page_shows_versions_nodes_definition_runs_and_success_rate(chain_version, operator_client):
    v2 = save_workflow(definition("chain", [{"id": "only", "type": "llm", "model": "sim-fast", "prompt": "Line one\nLine <two>"}]))
    finish(start(chain_version))
    finish(start(chain_version))
    finish(start(chain_version), RunStatus.FAILED)
    start(chain_version)  # still active: not counted in the success rate

    html = operator_client.get(reverse("console:workflow", args=["chain"])).content.decode()

    assert "v2" in html
    assert "v1" in html
    assert v2.content_hash[:12] in html
    assert chain_version.content_hash[:12] in html
    assert "<code>only</code>" in html  # the latest version's nodes
    assert "prompt: |-\n    Line one\n    Line &lt;two&gt;" in html  # YAML, multi-line block, escaped
    assert "67%" in html
    assert "2 of 3 finished" in html
    assert html.count('<a class="mono" href="/runs/') == 4


def test_node_dependencies_are_listed(chain_version, operator_client):
    html = operator_client.get(reverse("console:workflow", args=["chain"])).content.decode()

    answer = html[html.index("<td><code>answer</code></td>") :]
    answer = answer[: answer.index("</tr>")]
    assert "<code>measure</code>" in answer
    assert "llm" in answer


def test_a_workflow_without_runs_has_no_success_rate(version, operator_client):
    html = operator_client.get(reverse("console:workflow", args=["tiny"])).content.decode()

    assert "No runs yet." in html
    assert "<dt>Success rate</dt><dd>—" in html
