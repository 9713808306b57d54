"""The run page's graph: a layered layout (grandalf) with no overlapping boxes and every arrow
running left to right, drawn as SVG with each node's state by colour class and glyph, kept live
by a poll that stops with HTTP 286, for a number of queries that does not grow with the run."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.contrib.staticfiles import finders
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from apps.console.graph import LAYER_GAP, NODE_GAP, Layout, _layout_cached, layered_layout, version_layout
from apps.console.templatetags.console import STATUS_ICONS, money
from apps.runs.models import NodeRun, NodeStatus, Run, RunStatus
from apps.runs.services import run_start
from tests.conftest import ROOT
from tests.factories import definition, llm_node, save_workflow, tool_node
from tests.reviews.helpers import start_gated_run
from tests.runs.helpers import drain

from .helpers import finish, start

HTMX = {"HX-Request": "true"}
FAST = {"simulation": {"latency": "fixed:0"}}

# --- DAG shapes, as {node: its dependencies} in a topological order ------------------------------


def chain(n: int) -> dict[str, list[str]]:
    return {f"n{i}": [f"n{i - 1}"] if i else [] for i in range(n)}


def fan_out(n: int) -> dict[str, list[str]]:
    """One start, n - 2 parallel branches, one join."""
    branches = {f"b{i}": ["start"] for i in range(n - 2)}
    return {"start": [], **branches, "join": list(branches)}


def diamond_lattice(n: int, width: int = 6) -> dict[str, list[str]]:
    """Rows of ``width`` nodes, each fed by the node above it and the one above and to the right."""
    deps: dict[str, list[str]] = {}
    for i in range(n):
        row, col = divmod(i, width)
        above = [f"n{(row - 1) * width + c}" for c in (col, col + 1) if row and c < width]
        deps[f"n{i}"] = above
    return deps


def random_dag(n: int, seed: int) -> dict[str, list[str]]:
    """Each node depends on up to three earlier ones, chosen at random (some nodes on none)."""
    rng = random.Random(seed)
    return {f"n{i}": rng.sample([f"n{j}" for j in range(i)], rng.randint(0, min(i, 3))) for i in range(n)}


SHAPES = {
    "one node": {"only": []},
    "two unconnected": {"a": [], "b": []},
    "chain of 60": chain(60),
    "fan-out of 60": fan_out(60),
    "diamond lattice of 60": diamond_lattice(60),
    **{f"random DAG of {n} (seed {seed})": random_dag(n, seed) for n, seed in [(12, 1), (30, 2), (45, 3), (60, 4), (60, 5), (60, 6), (60, 7)]},
}


def overlapping(layout: Layout) -> list[tuple[str, str]]:
    boxes = layout.boxes
    return [
        (a.node_id, b.node_id) for i, a in enumerate(boxes) for b in boxes[i + 1 :] if a.x < b.right and b.x < a.right and a.y < b.bottom and b.y < a.bottom
    ]


@pytest.mark.parametrize("deps", SHAPES.values(), ids=SHAPES.keys())
def test_no_two_boxes_overlap_and_neighbours_keep_their_gap(deps):
    layout = layered_layout(deps)

    assert [box.node_id for box in layout.boxes] == list(deps)  # one box per node, in the given order
    assert overlapping(layout) == []
    for i, a in enumerate(layout.boxes):
        for b in layout.boxes[i + 1 :]:
            if a.layer == b.layer and a.x == b.x:  # one column: stacked with the node gap between them
                assert max(b.y - a.bottom, a.y - b.bottom) >= NODE_GAP - 0.01
    assert all(box.x >= 0 and box.right <= layout.width and box.y >= 0 and box.bottom <= layout.height for box in layout.boxes)


@pytest.mark.parametrize("deps", SHAPES.values(), ids=SHAPES.keys())
def test_layers_go_left_to_right(deps):
    layout = layered_layout(deps)
    box = {b.node_id: b for b in layout.boxes}

    for node_id, sources in deps.items():
        for source in sources:
            assert box[source].right + LAYER_GAP - 0.01 <= box[node_id].x, f"{source} -> {node_id} does not go right"
            assert box[source].layer < box[node_id].layer
    columns: dict[int, set[float]] = {}
    for b in layout.boxes:
        columns.setdefault(b.layer, set()).add(b.x)
    assert all(len(xs) == 1 for xs in columns.values())  # a layer is one column


POINT = re.compile(r"(-?\d+(?:\.\d+)?),(-?\d+(?:\.\d+)?)")


@pytest.mark.parametrize("deps", SHAPES.values(), ids=SHAPES.keys())
def test_arrows_join_the_boxes_they_connect_and_long_ones_pass_between_boxes(deps):
    layout = layered_layout(deps)
    box = {b.node_id: b for b in layout.boxes}

    assert sorted((a.source, a.target) for a in layout.arrows) == sorted((s, t) for t, sources in deps.items() for s in sources)
    for arrow in layout.arrows:
        points = [(float(x), float(y)) for x, y in POINT.findall(arrow.path)]
        assert points[0] == pytest.approx((box[arrow.source].right, box[arrow.source].middle))
        assert points[-1] == pytest.approx((box[arrow.target].x, box[arrow.target].middle))  # where the arrowhead goes
        # Through a layer it crosses, an arrow runs level (an ``L``): never through a box there.
        for match in re.finditer(r"L(-?[\d.]+),(-?[\d.]+)", arrow.path):
            right, y = float(match[1]), float(match[2])
            assert not [b.node_id for b in layout.boxes if b.right == pytest.approx(right) and b.y <= y <= b.bottom]


def test_the_layout_is_the_same_in_every_process():
    """Polls of one page may reach different web processes: the graph must not jump about."""
    code = (
        "import django, json; django.setup(); from dataclasses import asdict;"
        "from apps.console.graph import layered_layout; from tests.console.test_run_graph import random_dag;"
        "print(json.dumps([asdict(layered_layout(random_dag(60, seed))) for seed in (4, 5)]))"
    )
    outputs = set()
    for hash_seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "DJANGO_SETTINGS_MODULE": "orchestrator_site.settings"}
        result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
        outputs.add(result.stdout)
    assert len(outputs) == 1
    assert json.loads(outputs.pop())[0]["boxes"]


def test_the_layout_is_computed_once_per_version(db):
    version = save_workflow(definition("cached", [tool_node(f"t{i}", depends_on=[f"t{i - 1}"] if i else []) for i in range(8)]))
    _layout_cached.cache_clear()

    first = version_layout(version_id=version.pk, content_hash=version.content_hash)
    again = version_layout(version_id=version.pk, content_hash=version.content_hash)

    assert again is first
    assert _layout_cached.cache_info().misses == 1


# --- the SVG on the run page -------------------------------------------------------------------------


def svg_of(html: str) -> str:
    start = html.index('<svg class="graph"')
    return html[start : html.index("</svg>", start)]  # the progress bar before it is an <svg> too


def node_element(svg: str, node_id: str) -> str:
    """The ``<a>`` of one node's box."""
    start = svg.index(f'<a id="gnode-{node_id}"')
    return svg[start : svg.index("</a>", start)]


def wide_definition(name: str, width: int) -> dict[str, Any]:
    """start (tool) -> width llm branches -> join (tool)."""
    branches = [llm_node(f"b{i}", "Angle {{ nodes.start.words }} " + str(i), depends_on=["start"]) for i in range(width)]
    return definition(name, [tool_node("start"), *branches, tool_node("join", args={"text": "done"}, depends_on=[b["id"] for b in branches])])


def test_the_svg_draws_each_node_with_its_state_class_glyph_attempts_and_cost(operator, operator_client):
    run = start(save_workflow(wide_definition("states", 7)), operator)
    states = [NodeStatus.SUCCEEDED, NodeStatus.FAILED, NodeStatus.RUNNING, NodeStatus.RETRY_WAIT, NodeStatus.QUEUED, NodeStatus.CANCELLED, NodeStatus.PENDING]
    for i, status in enumerate(states):
        NodeRun.objects.filter(run=run, node_id=f"b{i}").update(status=status, attempt=i % 3 + 1, cost=f"0.00{i + 1}")
    NodeRun.objects.filter(run=run, node_id="start").update(status=NodeStatus.SUCCEEDED, attempt=1)

    svg = svg_of(operator_client.get(reverse("console:run", args=[run.id])).content.decode())

    assert svg.count('<a id="gnode-') == 9
    for i, status in enumerate(states):
        box = node_element(svg, f"b{i}")
        assert f'class="gnode gnode-{status}" data-status="{status}"' in box
        assert f'<text class="gnode-glyph" x="15" y="22" text-anchor="middle">{STATUS_ICONS[status]}</text>' in box
        assert f">{status.replace('_', ' ')}</text>" in box  # the state in words too
        assert f">attempt {i % 3 + 1}</text>" in box
        assert f">{money(NodeRun.objects.get(run=run, node_id=f'b{i}').cost)}</text>" in box
        assert ">llm</text>" in box
    assert len(set(STATUS_ICONS[s] for s in states)) == len(states)  # a glyph per state: colour is never alone
    assert svg.count('marker-end="url(#graph-arrowhead)"') == 14  # start -> 7 branches -> join


def test_each_box_opens_the_node_panel_and_has_an_accessible_name(version, operator, operator_client):
    run = start(version, operator)

    box = node_element(svg_of(operator_client.get(reverse("console:run", args=[run.id])).content.decode()), "answer")

    assert f'href="{reverse("console:run", args=[run.id])}?node=answer#node-detail"' in box  # works without script too
    assert f'hx-get="{reverse("console:node", args=[run.id, "answer"])}" hx-target="#node-detail"' in box
    assert 'aria-label="answer, llm, queued, not started"' in box
    assert "<title>answer, llm, queued, not started</title>" in box


ROUTED = definition(
    "routed",
    [
        tool_node("classify"),
        {"id": "triage", "type": "router", "depends_on": ["classify"], "routes": ["billing", "tech"],
         "rules": [{"when": "'invoice' in input.topic | lower", "route": "billing"}], "default": "tech"},
        llm_node("billing", "Answer {{ input.topic }}", depends_on=["triage"]),
        tool_node("tech", depends_on=["triage"]),
        tool_node("reply", args={"text": "done"}, depends_on=["billing", "tech"], trigger_rule="none_failed_min_one_success"),
    ],
)  # fmt: skip


@pytest.mark.usefixtures("unconsumed_queue")
def test_skipped_nodes_are_drawn_dashed_and_faded(operator_client):
    run = drain(run_start(workflow=save_workflow(ROUTED).workflow, input={"topic": "Invoice 7 is wrong"}, options=FAST))
    assert NodeRun.objects.get(run=run, node_id="tech").status == NodeStatus.SKIPPED

    svg = svg_of(operator_client.get(reverse("console:run", args=[run.id])).content.decode())

    assert 'class="gnode gnode-skipped"' in node_element(svg, "tech")
    assert re.search(r'<path class="gedge gedge-skipped" d="[^"]+" marker-end="url\(#graph-arrowhead\)" data-source="triage" data-target="tech">', svg)
    css = Path(finders.find("css/dagwright.css")).read_text()
    assert re.search(r"\.gnode-skipped \.gnode-box[^{]*\{[^}]*stroke-dasharray", css)
    assert re.search(r"\.gnode-skipped \{[^}]*opacity: \.\d+", css)
    assert re.search(r"\.gedge-skipped[^{]*\{[^}]*stroke-dasharray", css)


@pytest.mark.usefixtures("unconsumed_queue")
def test_a_node_waiting_for_review_links_to_its_pending_review(operator_client):
    run, task = start_gated_run("graph-gate")

    svg = svg_of(operator_client.get(reverse("console:run", args=[run.id])).content.decode())

    assert 'class="gnode gnode-waiting_review"' in node_element(svg, "gate")
    assert f'<a class="gnode-review" id="gnode-review-gate" href="{reverse("reviews:detail", args=[task.pk])}"' in svg
    assert svg.count('class="gnode-review"') == 1  # only the gate that waits


def test_progress_elapsed_time_tokens_and_cost_sit_above_the_graph(operator, operator_client):
    run = start(save_workflow(wide_definition("progress", 3)), operator)
    NodeRun.objects.filter(run=run, node_id__in=["start", "b0"]).update(status=NodeStatus.SUCCEEDED, attempt=1)
    NodeRun.objects.filter(run=run, node_id="b1").update(status=NodeStatus.SKIPPED)
    started = timezone.now() - timezone.timedelta(seconds=75)
    Run.objects.filter(pk=run.pk).update(tokens_in=1200, tokens_out=345, cost="0.0123", started_at=started)

    asked = timezone.now()
    html = operator_client.get(reverse("console:run", args=[run.id])).content.decode()
    answered = timezone.now()
    head = html[html.index('<section id="run-graph"') : html.index('<svg class="graph"')]

    assert "3 of 5 nodes done" in head
    assert '<rect class="meter-fill" width="60" height="1"/>' in head  # of a 100-wide bar: an attribute, not a style the CSP would refuse
    # a running run's elapsed time is counted to when the page was drawn: between the two readings of the clock
    elapsed = re.search(r'<dd id="run-elapsed">(\d+) min (\d\d) s</dd>', head)
    assert elapsed, head
    minutes, secs = elapsed.groups()
    assert int((asked - started).total_seconds()) <= 60 * int(minutes) + int(secs) <= int((answered - started).total_seconds())
    assert '<dd id="run-tokens">1,200 / 345</dd>' in head
    assert '<dd id="run-cost">$0.0123</dd>' in head


def test_the_poll_partial_brings_the_new_states_and_stops_with_286_when_the_run_is_over(version, operator_client):
    run = start(version)
    url = reverse("console:run_nodes", args=[run.id])

    active = operator_client.get(url, headers=HTMX)
    assert active.status_code == 200
    assert '<section id="run-graph" class="run-graph" hx-swap-oob="true"' in active.content.decode()
    assert 'class="gnode gnode-queued"' in active.content.decode()

    NodeRun.objects.filter(run=run).update(status=NodeStatus.RUNNING, attempt=1, started_at=timezone.now())
    assert 'class="gnode gnode-running"' in operator_client.get(url, headers=HTMX).content.decode()

    finish(run, RunStatus.SUCCEEDED)
    final = operator_client.get(url, headers=HTMX)
    assert final.status_code == 286  # htmx swaps this last answer in, then stops polling
    body = final.content.decode()
    assert 'class="gnode gnode-succeeded"' in body
    assert "1 of 1 nodes done" in body
    assert not re.search(r'hx-trigger="[^"]*every', body)


def test_a_finished_runs_page_polls_nothing(version, operator_client):
    run = finish(start(version))

    html = operator_client.get(reverse("console:run", args=[run.id])).content.decode()

    assert not re.search(r'hx-trigger="[^"]*every', html)
    assert html.count("hx-trigger=") == 1  # the review badge, read once on load
    assert 'hx-trigger="load" hx-select="#review-counts > *" hx-swap="innerHTML"' in html


# --- queries ---------------------------------------------------------------------------------------


def count_queries(client, url: str, **headers: str) -> int:
    client.get(url, headers=headers)  # warm the per-process caches (plan, layout, the user's roles)
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url, headers=headers)
    assert response.status_code in (200, 286)
    return len(captured)


def executed_run(width: int) -> Run:
    """A run of 2 + width nodes executed for real, its llm nodes retrying after faults (so the
    nodes have different numbers of attempts, model calls and events)."""
    spec = wide_definition(f"executed-{width}", width)
    for node in spec["nodes"]:
        if node["type"] == "llm":
            node["retry"] = {"max_attempts": 6, "backoff_seconds": 0, "backoff_cap_seconds": 0}
    options = {"simulation": {"latency": "fixed:0", "seed": 3, "faults": {"error_rate": 0.4}}}
    run = drain(run_start(workflow=save_workflow(spec).workflow, input={"topic": "tides"}, options=options))
    assert run.status == RunStatus.SUCCEEDED
    return run


@pytest.mark.usefixtures("unconsumed_queue")
def test_the_run_page_and_its_poll_cost_the_same_queries_for_5_and_50_nodes(operator_client):
    small, large = executed_run(3), executed_run(48)
    assert (small.node_runs.count(), large.node_runs.count()) == (5, 50)
    busiest = max(large.node_runs.all(), key=lambda node: node.attempt)
    assert busiest.attempt > 1  # the large run's nodes really retried
    assert large.provider_calls.count() > large.node_runs.filter(node_type="llm").count()

    def each(run: Run, node_id: str) -> dict[str, int]:
        page, nodes, node = reverse("console:run", args=[run.id]), reverse("console:run_nodes", args=[run.id]), reverse("console:node", args=[run.id, node_id])
        return {
            "page": count_queries(operator_client, page),
            "page with a node open": count_queries(operator_client, f"{page}?node={node_id}"),
            "poll": count_queries(operator_client, nodes, **HTMX),
            "node panel": count_queries(operator_client, node, **HTMX),
        }

    assert each(large, busiest.node_id) == each(small, "b0")


def test_an_active_runs_poll_costs_the_same_queries_for_5_and_50_nodes(operator, operator_client):
    small, large = start(save_workflow(wide_definition("active-5", 3)), operator), start(save_workflow(wide_definition("active-50", 48)), operator)
    NodeRun.objects.filter(run=large, node_id__startswith="b").update(status=NodeStatus.RUNNING, attempt=2)

    for name in ("console:run", "console:run_nodes"):
        url_small, url_large = reverse(name, args=[small.id]), reverse(name, args=[large.id])
        assert count_queries(operator_client, url_large, **HTMX) == count_queries(operator_client, url_small, **HTMX)
