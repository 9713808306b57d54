"""A workflow's version history: every version with its runs, one version read-only (its graph and
definition), the diff of any two, and rollback (publishing an older version) after a confirmation
that shows what changes.

Operators and admins read these pages (reviewers do not: they decide review gates, they do not
pick versions); only admins publish. The rollback form carries the version its confirmation showed
published, so a publish by someone else in between is refused (409) and the new diff shown, never
overwritten (``apps.workflows.services.workflow_publish``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse

from apps.engine.diff import DefinitionDiff
from apps.runs import selectors as run_selectors
from apps.runs.selectors import RunStats
from apps.workflows import selectors as workflow_selectors
from apps.workflows.models import Workflow, WorkflowVersion
from apps.workflows.roles import can_edit_workflows, can_start_runs
from apps.workflows.selectors import Publication
from apps.workflows.services import NOTHING_PUBLISHED, PublishConflict, published_number, workflow_publish

from .graph import BOX_WIDTH, ID_CHARS, Box, Layout, version_layout
from .views import VIEWER, HtmxHttpRequest, _workflow_or_404, role_required

# The same people who start runs read the history: they pick the version a run uses.
history_reader_required = role_required(VIEWER, (can_start_runs, "version history needs the operator or admin role"))
publisher_required = role_required(VIEWER, (can_edit_workflows, "publishing a version needs the admin role"))


@dataclass(frozen=True)
class VersionRow:
    version: WorkflowVersion
    runs: RunStats  # the runs that are not test runs
    test_runs: int
    published: bool
    publication: Publication | None  # the last time it was published or rolled back to
    previous: int | None  # the number of the version before it


def _version(workflow: Workflow, number: int) -> WorkflowVersion:
    try:
        return workflow_selectors.version_get(workflow=workflow, number=number)
    except WorkflowVersion.DoesNotExist:
        raise Http404(f"workflow {workflow.name!r} has no version {number}") from None


@history_reader_required
def version_list(request: HtmxHttpRequest, name: str) -> HttpResponse:
    """Every version, newest first, with its runs and success rate and its last publication; two
    queries for the rows (versions with their run counts, the publications), whatever their number."""
    workflow = _workflow_or_404(name)
    publications = workflow_selectors.version_publications(workflow=workflow)
    versions = list(run_selectors.version_list_with_run_stats(workflow=workflow))
    rows = [
        VersionRow(
            version=version,
            runs=RunStats(total=version.runs_count, finished=version.finished_count, succeeded=version.succeeded_count),
            test_runs=version.test_runs_count,
            published=version.pk == workflow.published_version_id,
            publication=publications.get(version.number),
            previous=versions[i + 1].number if i + 1 < len(versions) else None,
        )
        for i, version in enumerate(versions)
    ]
    before, after = _compare_defaults([row.version.number for row in rows], published_number(workflow))
    context = {
        "workflow": workflow,
        "rows": rows,
        "compare_before": before,
        "compare_after": after,
        "just_published": _int_or_none(request.GET.get("published")),
        "can_publish": can_edit_workflows(request.user),
    }
    return render(request, "console/version_list.html", context)


def _compare_defaults(numbers: list[int], published: int | None) -> tuple[int | None, int | None]:
    """What the compare form offers first: the published version against the newest when they
    differ (what publishing the newest would change), else the newest against the one before."""
    if not numbers:
        return None, None
    newest = numbers[0]
    if published and published != newest:
        return published, newest
    return (numbers[1] if len(numbers) > 1 else newest), newest


@history_reader_required
def version_compare(request: HtmxHttpRequest, name: str) -> HttpResponse:
    """The versions page's compare form, without script: on to the diff of the two picked."""
    workflow = _workflow_or_404(name)
    before, after = _int_or_none(request.GET.get("a")), _int_or_none(request.GET.get("b"))
    if before is None or after is None:
        return redirect("console:versions", name=workflow.name)
    return redirect("console:version_diff", name=workflow.name, a=before, b=after)


def _int_or_none(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


@history_reader_required
def version_detail(request: HtmxHttpRequest, name: str, number: int) -> HttpResponse:
    """One version, read-only: its graph, its definition as YAML, links to compare it."""
    workflow = _workflow_or_404(name)
    version = _version(workflow, number)
    published = published_number(workflow)
    context = {
        "workflow": workflow,
        "version": version,
        "graph": version_graph(version),
        "published": published,
        "is_published": version.pk == workflow.published_version_id,
        "publication": workflow_selectors.version_publications(workflow=workflow).get(number),
        "previous": workflow.versions.filter(number__lt=number).order_by("-number").values_list("number", flat=True).first(),
        "can_publish": can_edit_workflows(request.user),
        "can_start": can_start_runs(request.user),
    }
    return render(request, "console/version_detail.html", context)


@history_reader_required
def version_diff(request: HtmxHttpRequest, name: str, a: int, b: int) -> HttpResponse:
    """What changed from version ``a`` to version ``b``: by node and field, and the unified YAML diff."""
    workflow = _workflow_or_404(name)
    diff = _diff_or_404(workflow, a, b)
    context = {
        "workflow": workflow,
        "before": a,
        "after": b,
        "diff": diff,
        "before_label": f"v{a}",
        "after_label": f"v{b}",
        "numbers": list(workflow.versions.order_by("-number").values_list("number", flat=True)),
        "published": published_number(workflow),
        "can_publish": can_edit_workflows(request.user),
    }
    return render(request, "console/version_diff.html", context)


def _diff_or_404(workflow: Workflow, before: int, after: int) -> DefinitionDiff:
    try:
        return workflow_selectors.version_diff(workflow=workflow, before=before, after=after)
    except WorkflowVersion.DoesNotExist as exc:
        raise Http404(str(exc)) from None


@publisher_required
def version_rollback(request: HtmxHttpRequest, name: str, number: int) -> HttpResponse:
    """The confirmation (GET): the diff from the published version to this one, and the button;
    the publish (POST), refused with 409 and the new diff when another version was published
    since the confirmation was shown."""
    workflow = _workflow_or_404(name)
    version = _version(workflow, number)
    if request.method != "POST":
        return _rollback_page(request, workflow, version)
    expected = _int_or_none(request.POST.get("expected_published"))
    if expected is None:
        return _rollback_page(request, workflow, version, status=400, problem="The form did not say which version it saw published: review the change again.")
    try:
        workflow_publish(workflow=workflow, version_number=version.number, user=request.user, expected_published=expected)
    except PublishConflict as conflict:
        return _rollback_page(request, _workflow_or_404(name), version, status=409, conflict=conflict)
    return redirect(f"{reverse('console:versions', args=[workflow.name])}?published={version.number}")


def _rollback_page(request: HtmxHttpRequest, workflow: Workflow, version: WorkflowVersion, *, status: int = 200, **extra: Any) -> HttpResponse:
    published = published_number(workflow)
    context = {
        "workflow": workflow,
        "version": version,
        "published": published,
        "expected_published": published or NOTHING_PUBLISHED,
        "is_published": version.pk == workflow.published_version_id,
        # from what runs now to what would run (with nothing published, the page shows the definition)
        "diff": _diff_or_404(workflow, published, version.number) if published else None,
        **extra,
    }
    return render(request, "console/version_rollback.html", context, status=status)


# --- a version's graph: the run page's layout, without states -----------------------------------


@dataclass(frozen=True)
class VersionNode:
    box: Box
    node_id: str
    node_type: str
    detail: str  # the model or tool it calls
    label: str

    @property
    def short_id(self) -> str:
        return self.node_id if len(self.node_id) <= ID_CHARS else self.node_id[: ID_CHARS - 1] + "…"

    @property
    def short_detail(self) -> str:
        chars = BOX_WIDTH // 8
        return self.detail if len(self.detail) <= chars else self.detail[: chars - 1] + "…"


@dataclass(frozen=True)
class VersionGraph:
    layout: Layout
    nodes: tuple[VersionNode, ...]


def version_graph(version: WorkflowVersion) -> VersionGraph:
    """The version's graph as the run page draws it (the same cached layout), each box naming its
    node, type and model or tool."""
    layout = version_layout(version_id=version.pk, content_hash=version.content_hash)
    by_id = {node.id: node for node in version.plan.spec.nodes}
    nodes = []
    for box in layout.boxes:
        node = by_id[box.node_id]
        detail = str(getattr(node, "model", None) or getattr(node, "tool", None) or "")
        label = ", ".join([box.node_id, node.type, *([detail] if detail else [])])
        nodes.append(VersionNode(box=box, node_id=box.node_id, node_type=node.type, detail=detail, label=label))
    return VersionGraph(layout=layout, nodes=tuple(nodes))
