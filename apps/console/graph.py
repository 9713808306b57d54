"""The run page's graph: a layered layout, left to right, computed once per workflow version.

The layout is grandalf's Sugiyama layout (``grandalf==0.8``, pure Python, no dependency that is
used at run time). We weighed it against networkx 3.6 (``topological_generations`` and
``multipartite_layout``), the better-kept project, and chose grandalf because networkx does not
fit here:

- ``multipartite_layout`` needs numpy (a large binary dependency for a web page), and it only
  spreads each layer's nodes evenly in the order they were given: no crossing reduction, and long
  edges (over several layers) are drawn straight through the boxes in between.
- grandalf does the whole Sugiyama pipeline: layers, dummy vertices for long edges, crossing
  reduction by median sweeps, and Brandes-Köpf coordinates, which keep boxes of a layer apart by
  their size plus a gap. Long edges follow their dummy vertices, so they run in slots of their
  own between the boxes of the layers they cross.

grandalf lays layers top to bottom; we lay them left to right by handing it boxes turned a
quarter (its width is our height) and swapping the axes of its result. Two details keep the
result the same in every process (a page polled by several web workers must not jump about):
the connected components are found here, in definition order, rather than by grandalf's
``Graph``, which gathers each component's edges in a ``set`` (its iteration order follows memory
addresses); and each component is laid out from ordered lists only.

``version_layout`` caches the result per content hash, as ``version_plan`` does for plans: a
version never changes, so each process lays a version out once and the page only fills in states.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from django.urls import reverse
from grandalf.graphs import Edge, Vertex, graph_core
from grandalf.layouts import SugiyamaLayout

from apps.runs.models import NodeRun, NodeStatus, Run
from apps.workflows.selectors import version_plan

from .templatetags.console import money, status_icon, status_label

BOX_WIDTH = 184  # along the layers (x): room for a 22-character id beside its glyph
BOX_HEIGHT = 66  # across the layers (y): three lines of text
LAYER_GAP = 64  # between two layers, where the edges bend
NODE_GAP = 22  # between two boxes of one layer
COMPONENT_GAP = 40  # between unconnected parts of one workflow, stacked top to bottom
MARGIN = 12
ORDERING_ROUNDS = 3  # grandalf's ``draw(N)``: sweeps of crossing reduction (1.5 is its default)


@dataclass(frozen=True)
class Box:
    """A node's box, ``(x, y)`` its top left corner."""

    node_id: str
    x: float
    y: float
    layer: int
    width: float = BOX_WIDTH
    height: float = BOX_HEIGHT

    @property
    def right(self) -> float:
        return self.x + self.width

    @property
    def bottom(self) -> float:
        return self.y + self.height

    @property
    def middle(self) -> float:
        return self.y + self.height / 2

    @property
    def inner_right(self) -> float:
        """Where right-aligned text ends inside the box."""
        return self.width - 9


@dataclass(frozen=True)
class Arrow:
    """An edge from ``source`` to the node that depends on it; ``path`` is SVG path data."""

    source: str
    target: str
    path: str


@dataclass(frozen=True)
class Layout:
    boxes: tuple[Box, ...]  # in the order the nodes were given
    arrows: tuple[Arrow, ...]
    width: float
    height: float

    def box(self, node_id: str) -> Box:
        return next(box for box in self.boxes if box.node_id == node_id)


def version_layout(*, version_id: int, content_hash: str) -> Layout:
    """The layout of a version's graph, computed once per process (see the module docstring)."""
    return _layout_cached(content_hash, version_id)


@lru_cache(maxsize=256)
def _layout_cached(content_hash: str, version_id: int) -> Layout:
    plan = version_plan(version_id=version_id, content_hash=content_hash)
    return layered_layout({node_id: plan.deps[node_id] for node_id in plan.order})


class _BoxView:
    """What grandalf reads of a vertex (``w``, ``h``) and writes (``xy``), turned a quarter."""

    def __init__(self) -> None:
        self.w, self.h = BOX_HEIGHT, BOX_WIDTH
        self.xy = (0.0, 0.0)


class _EdgeView:
    """Receives the edge's route: the centres of its endpoints and of the dummies between them."""

    def __init__(self) -> None:
        self.points: list[tuple[float, float]] = []

    def setpath(self, points: list[tuple[float, float]]) -> None:
        self.points = points


def layered_layout(deps: Mapping[str, Sequence[str]]) -> Layout:
    """Boxes and arrows for a DAG given as ``{node: its dependencies}`` (in a topological order).

    Every node of a layer shares one column; a node's layer is one past its deepest dependency,
    so every arrow runs left to right.
    """
    boxes: list[Box] = []
    arrows: list[Arrow] = []
    top = MARGIN
    for component in _components(deps):
        placed, routes, height = _lay_out_component(component, deps, top)
        boxes += placed
        arrows += routes
        top += height + COMPONENT_GAP
    order = {node_id: i for i, node_id in enumerate(deps)}
    boxes.sort(key=lambda box: order[box.node_id])
    width = max((box.right for box in boxes), default=0) + MARGIN
    return Layout(boxes=tuple(boxes), arrows=tuple(arrows), width=width, height=max(top - COMPONENT_GAP + MARGIN, 0))


def _components(deps: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Connected parts of the graph (edges taken both ways), each in the given node order,
    ordered by their first node."""
    parent = {node_id: node_id for node_id in deps}

    def root(node_id: str) -> str:
        while parent[node_id] != node_id:
            parent[node_id] = parent[parent[node_id]]
            node_id = parent[node_id]
        return node_id

    for node_id, sources in deps.items():
        for source in sources:
            parent[root(source)] = root(node_id)
    parts: dict[str, list[str]] = {}
    for node_id in deps:
        parts.setdefault(root(node_id), []).append(node_id)
    return list(parts.values())


def _lay_out_component(nodes: list[str], deps: Mapping[str, Sequence[str]], top: float) -> tuple[list[Box], list[Arrow], float]:
    vertices = {node_id: Vertex(node_id) for node_id in nodes}
    edges: list[Edge] = []
    for node_id in nodes:
        vertices[node_id].view = _BoxView()
        for source in deps[node_id]:
            edge = Edge(vertices[source], vertices[node_id])
            edge.view = _EdgeView()
            edges.append(edge)
    sugiyama = SugiyamaLayout(graph_core(list(vertices.values()), edges))
    sugiyama.xspace, sugiyama.yspace = NODE_GAP, LAYER_GAP
    sugiyama.init_all()
    sugiyama.draw(ORDERING_ROUNDS)
    # grandalf's (x, y) are centres, y along the layers: ours is (y, x), shifted into the margin.
    left = min(v.view.xy[1] for v in vertices.values()) - BOX_WIDTH / 2
    across = min(v.view.xy[0] for v in vertices.values()) - BOX_HEIGHT / 2

    def point(xy: tuple[float, float]) -> tuple[float, float]:
        return xy[1] - left + MARGIN, xy[0] - across + top

    boxes = []
    for node_id, vertex in vertices.items():
        x, y = point(vertex.view.xy)
        boxes.append(Box(node_id=node_id, x=x - BOX_WIDTH / 2, y=y - BOX_HEIGHT / 2, layer=sugiyama.grx[vertex].rank))
    arrows = [Arrow(edge.v[0].data, edge.v[1].data, _path([point(xy) for xy in edge.view.points])) for edge in edges]
    height = max(box.bottom for box in boxes) - top
    return boxes, arrows, height


def _path(centres: list[tuple[float, float]]) -> str:
    """SVG path data from the source box's right side to the target box's left side.

    Between layers the path is a curve with level ends; through a layer it crosses (a long
    edge's dummy) it runs straight, in the slot the dummy kept free, so it never cuts a box.
    """
    half = BOX_WIDTH / 2
    (x, y), *middle, (tx, ty) = centres
    x += half
    parts = [f"M{x:.1f},{y:.1f}"]
    for cx, cy in [*middle, (tx, ty)]:
        enter = cx - half
        bend = (enter - x) / 2
        parts.append(f"C{x + bend:.1f},{y:.1f} {enter - bend:.1f},{cy:.1f} {enter:.1f},{cy:.1f}")
        x, y = cx + half, cy
        parts.append(f"L{x:.1f},{y:.1f}")
    parts.pop()  # the last curve ends at the target's left side, where the arrowhead goes
    return " ".join(parts)


# --- a run's graph: the cached layout with this request's states ----------------------------------

FINISHED = frozenset({NodeStatus.SUCCEEDED, NodeStatus.FAILED, NodeStatus.SKIPPED, NodeStatus.CANCELLED})
LEGEND = tuple(NodeStatus.values)


@dataclass(frozen=True)
class GraphNode:
    """A node's box and what it shows, put together once per request: the template only places
    these strings (and escapes them), which keeps a 60-node graph cheap to draw every second."""

    box: Box
    node_id: str
    node_type: str
    status: str
    glyph: str  # a shape per state (``status_icon``): colour is never the only signal
    state: str  # the status in words
    attempts: str
    cost: str
    label: str  # the accessible name: all of the above in one sentence
    href: str  # the run page opened on this node, for a click without script
    panel_url: str  # the node panel, fetched by htmx into the page
    review_url: str = ""  # the pending review of a gate that waits for one

    @property
    def short_id(self) -> str:
        return self.node_id if len(self.node_id) <= ID_CHARS else self.node_id[: ID_CHARS - 1] + "…"


ID_CHARS = 19  # what fits beside the glyph in a box, in the monospaced font


def graph_node(box: Box, node: NodeRun, *, run_url: str, review_id: int | None) -> GraphNode:
    attempts = "reused" if node.reused else f"attempt {node.attempt}" if node.attempt else "not started"
    state = status_label(node.status)
    label = ", ".join([node.node_id, node.node_type, state, attempts, *([f"cost {money(node.cost)}"] if node.cost else [])])
    return GraphNode(
        box=box,
        node_id=node.node_id,
        node_type=node.node_type,
        status=node.status,
        glyph=status_icon(node.status),
        state=state,
        attempts=attempts,
        cost=money(node.cost),
        label=label,
        href=f"{run_url}?node={node.node_id}#node-detail",
        panel_url=reverse("console:node", args=[node.run_id, node.node_id]),
        review_url=reverse("reviews:detail", args=[review_id]) if review_id else "",
    )


@dataclass(frozen=True)
class GraphArrow:
    arrow: Arrow
    state: str  # the target's status: an arrow into a skipped node is drawn faded

    # drawn by console/_graph_arrows.html like a layout's own Arrow
    @property
    def path(self) -> str:
        return self.arrow.path

    @property
    def source(self) -> str:
        return self.arrow.source

    @property
    def target(self) -> str:
        return self.arrow.target


@dataclass(frozen=True)
class RunGraph:
    layout: Layout
    nodes: tuple[GraphNode, ...]
    arrows: tuple[GraphArrow, ...]

    @property
    def total(self) -> int:
        return len(self.nodes)

    @property
    def done(self) -> int:
        """Nodes that will not change any more: succeeded, failed, skipped or cancelled."""
        return sum(1 for item in self.nodes if item.status in FINISHED)

    @property
    def percent(self) -> int:
        return round(100 * self.done / self.total) if self.total else 100

    @property
    def legend(self) -> tuple[str, ...]:
        return LEGEND


def run_graph(*, run: Run, nodes: list[NodeRun], pending_reviews: Mapping[str, int]) -> RunGraph:
    """The run's graph: its version's layout (cached) with each node's state; no query.

    A node the layout has no row for (none should be missing: a run creates every node's row
    as it starts) is left out rather than drawn without a state.
    """
    layout = version_layout(version_id=run.version_id, content_hash=run.version.content_hash)
    by_id = {node.node_id: node for node in nodes}
    run_url = reverse("console:run", args=[run.id])
    placed = tuple(
        graph_node(box, by_id[box.node_id], run_url=run_url, review_id=pending_reviews.get(box.node_id)) for box in layout.boxes if box.node_id in by_id
    )
    arrows = tuple(GraphArrow(arrow, by_id[arrow.target].status) for arrow in layout.arrows if arrow.target in by_id and arrow.source in by_id)
    return RunGraph(layout=layout, nodes=placed, arrows=arrows)
