"""Operator pages: workflows, starting runs, and runs with their nodes, kept live over htmx.

Views only read through selectors and write through services; the templates print model output
and run input with autoescaping on (shared/DESIGN.md, "Untrusted text").
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import date
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect, HttpResponseStopPolling
from django_htmx.middleware import HtmxDetails

from apps.engine.errors import InputError
from apps.providers.selectors import breaker_overview
from apps.runs import operations as run_operations
from apps.runs import selectors as run_selectors
from apps.runs.models import NodeRun, Run, RunStatus
from apps.runs.operations import RunStateConflict, UnknownNode
from apps.runs.services import IdempotencyConflict, run_start
from apps.workflows import selectors as workflow_selectors
from apps.workflows.models import Workflow, WorkflowNotPublished, WorkflowVersion
from apps.workflows.roles import can_edit_workflows, can_start_runs, can_view

from .forms import RawInputForm, RunInputForm, input_skeleton
from .graph import run_graph

RUNS_PER_PAGE = 25
RECENT_RUNS = 10


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


View = Callable[..., HttpResponse]


Check = tuple[Callable[[Any], bool], str]  # who passes, and what the others are told (403)
VIEWER: Check = (can_view, "your account has no role in Dagwright yet")


def role_required(*checks: Check) -> Callable[[View], View]:
    """Sign-in first (anonymous people go to the login page), then each check in turn."""

    def decorator(view: View) -> View:
        @wraps(view)
        def wrapped(request: HtmxHttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            for allowed, refusal in checks:
                if not allowed(request.user):
                    raise PermissionDenied(refusal)
            return view(request, *args, **kwargs)

        return login_required(wrapped)

    return decorator


viewer_required = role_required(VIEWER)  # a role that may read
# then the operator role (admins have it too): cancel, retry, re-run
operator_required = role_required(VIEWER, (can_start_runs, "this needs the operator role"))


def _workflow_or_404(name: str) -> Workflow:
    try:
        return workflow_selectors.workflow_get(name=name)
    except Workflow.DoesNotExist:
        raise Http404(f"no workflow named {name!r}") from None


def _version_or_404(workflow: Workflow, number: str | None = None) -> WorkflowVersion:
    """The version asked for, else the published one; WorkflowNotPublished when there is none."""
    try:
        return workflow_selectors.version_get(workflow=workflow, number=int(number) if number and number.isdigit() else None)
    except WorkflowVersion.DoesNotExist:
        raise Http404(f"workflow {workflow.name!r} has no such version") from None


def _not_published(request: HtmxHttpRequest, workflow: Workflow) -> HttpResponse:
    """A page, not a 404: the workflow exists, it only has nothing published to run yet (409)."""
    context = {"workflow": workflow, "latest": workflow_selectors.version_latest(workflow=workflow)}
    return render(request, "console/workflow_not_published.html", context, status=409)


def _run_or_404(run_id: uuid.UUID) -> Run:
    try:
        return run_selectors.run_get(run_id=run_id)
    except Run.DoesNotExist:
        raise Http404("no such run") from None


@viewer_required
def home(request: HtmxHttpRequest) -> HttpResponse:
    return redirect("console:runs")


# --- workflows --------------------------------------------------------------------------------


@viewer_required
def workflow_list(request: HtmxHttpRequest) -> HttpResponse:
    user = request.user
    context = {"workflows": run_selectors.workflow_list_with_run_stats(), "can_start": can_start_runs(user), "can_edit": can_edit_workflows(user)}
    return render(request, "console/workflow_list.html", context)


@viewer_required
def workflow_detail(request: HtmxHttpRequest, name: str) -> HttpResponse:
    workflow = _workflow_or_404(name)
    versions = list(workflow_selectors.version_list(workflow=workflow))
    # the published version's nodes; a workflow with drafts only shows its newest draft's
    shown = _version_or_404(workflow) if workflow.published_version_id else workflow_selectors.version_latest(workflow=workflow)
    context = {
        "workflow": workflow,
        "versions": versions,
        "shown": shown,
        "runs": run_selectors.workflow_recent_runs(workflow=workflow, limit=RECENT_RUNS),
        "stats": run_selectors.workflow_run_stats(workflow=workflow),
        "can_start": can_start_runs(request.user),
        "can_edit": can_edit_workflows(request.user),
    }
    return render(request, "console/workflow_detail.html", context)


@role_required(VIEWER, (can_start_runs, "starting runs needs the operator role"))
def workflow_run_start(request: HtmxHttpRequest, name: str) -> HttpResponse:
    """The start-a-run page: a form generated from the input schema, or raw JSON."""
    workflow = _workflow_or_404(name)
    try:  # the version the form showed (or a version linked to), else the published one
        version = _version_or_404(workflow, request.POST.get("version") or request.GET.get("version"))
    except WorkflowNotPublished:
        return _not_published(request, workflow)
    schema = version.definition.get("input_schema") or {}
    mode = "json" if request.POST.get("mode") == "json" else "form"
    submission = _submission_key(request.POST.get("submission"))
    bound: RunInputForm | RawInputForm | None = None
    if request.method == "POST":
        bound = RawInputForm(request.POST, auto_id="raw_%s") if mode == "json" else RunInputForm(schema, request.POST)
        if bound.is_valid():
            run, submission = _submit(bound, workflow=workflow, version=version, user=request.user, submission=submission)
            if run is not None:
                return redirect("console:run", run_id=run.id)
    initial = {"submission": submission}
    raw_initial = {**initial, "input_json": _json_text(input_skeleton(schema))}
    context = {
        "workflow": workflow,
        "version": version,
        "form": bound if bound and mode == "form" else RunInputForm(schema, initial=initial),
        "raw_form": bound if bound and mode == "json" else RawInputForm(initial=raw_initial, auto_id="raw_%s"),
        "mode": mode if bound else None,
    }
    return render(request, "console/run_start.html", context)


def _submit(form: RunInputForm | RawInputForm, *, workflow: Workflow, version: WorkflowVersion, user: Any, submission: str) -> tuple[Run | None, str]:
    """Start the run; or put what went wrong on the form. Returns the run and the form's next key."""
    value = form.cleaned_data["input_json"] if isinstance(form, RawInputForm) else form.input_value()
    try:
        run = run_start(workflow=workflow, input=value, version_number=version.number, started_by=user, idempotency_key=f"console:{submission}")
    except InputError as exc:
        form.add_problems(exc.problems)
        return None, submission  # nothing was written: the key is still unused
    except IdempotencyConflict as exc:
        # This rendered form already started a run with another input (back button, edit, submit
        # again): say so, and hand out a fresh key so that the next submit starts a new run.
        fresh = str(uuid.uuid4())
        form.data = form.data.copy()
        form.data["submission"] = fresh
        form.add_error(None, f"This form already started run {str(exc.run.id)[:8]} with a different input. Submit again to start another run.")
        return None, fresh
    return run, submission


def _submission_key(posted: str | None) -> str:
    try:
        return str(uuid.UUID(posted or ""))
    except ValueError:
        return str(uuid.uuid4())


def _json_text(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


# --- runs -------------------------------------------------------------------------------------


RUN_FILTERS = ("workflow", "version", "status", "q", "started_by", "from", "to", "test")
# Test runs (``run_start_test``) are listed with the others, badged, unless the filter says otherwise:
# an admin who just test-ran a draft looks for it here, and the badge tells them apart at a glance.
TEST_RUN_FILTERS = {"": None, "exclude": False, "only": True}


@viewer_required
def run_list(request: HtmxHttpRequest) -> HttpResponse:
    """All runs, filtered by workflow, version number, status, id prefix, who started them, the
    days they were created (from and to, inclusive) and whether they are test runs (``test``:
    ``exclude`` or ``only``; both by default); the rows poll while a listed run is active."""
    filters = {key: request.GET.get(key, "").strip() for key in RUN_FILTERS}
    days = {key: _day_or_none(filters[key]) for key in ("from", "to")}
    if filters["test"] not in TEST_RUN_FILTERS:
        filters["test"] = ""
    if not filters["version"].isdigit():  # a version number or nothing
        filters["version"] = ""
    runs = run_selectors.run_table(
        workflow=filters["workflow"],
        status=filters["status"],
        id_prefix=filters["q"],
        started_by=filters["started_by"],
        created_from=days["from"],
        created_to=days["to"],
        is_test=TEST_RUN_FILTERS[filters["test"]],
        version_number=int(filters["version"]) if filters["version"] else None,
    )
    page = Paginator(runs, RUNS_PER_PAGE).get_page(request.GET.get("page"))
    polling = any(run.is_active for run in page)
    context = {"page": page, "polling": polling, "poll_url": request.get_full_path()}
    if request.htmx.target == "run-rows":
        return _poll_response(request, "console/run_list.html#run-rows", context, keep_polling=polling)
    context |= {
        "filters": filters,
        "filtered": any(filters.values()),
        "bad_days": [key for key, day in days.items() if filters[key] and day is None],
        "workflow_names": workflow_selectors.workflow_list().values_list("name", flat=True),
        "statuses": RunStatus.choices,
        "query": _query_without_page(request),
    }
    return render(request, "console/run_list.html", context)


def _day_or_none(text: str) -> date | None:
    """A day as ``<input type="date">`` sends it (YYYY-MM-DD); anything else filters nothing."""
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        return None


def _query_without_page(request: HttpRequest) -> str:
    query = request.GET.copy()
    query.pop("page", None)
    return query.urlencode()


def _poll_response(request: HttpRequest, template: str, context: dict[str, Any], *, keep_polling: bool) -> HttpResponse:
    """A polled fragment; HTTP 286 tells htmx to swap it in and stop polling."""
    content = render_to_string(template, context, request)
    return HttpResponse(content) if keep_polling else HttpResponseStopPolling(content)


@viewer_required
def run_detail(request: HtmxHttpRequest, run_id: uuid.UUID) -> HttpResponse:
    return _run_page(request, _run_or_404(run_id), node_id=request.GET.get("node"))


def _run_page(request: HtmxHttpRequest, run: Run, *, node_id: str | None = None, status: int = 200, **extra: Any) -> HttpResponse:
    """The run page, showing the node ``node_id`` in its detail panel."""
    context = {
        **_live_context(request, run),
        **_node_panel_context(run, node_id),
        "breakers": breaker_overview(models=run_selectors.run_models(run=run)),
        **extra,
    }
    return render(request, "console/run_detail.html", context, status=status)


def _live_context(request: HtmxHttpRequest, run: Run) -> dict[str, Any]:
    """What the polled parts of the run page show: the summary, the graph and the node table.
    A fixed number of queries, whatever the number of nodes: the layout is cached per version."""
    nodes = run_selectors.run_node_table(run=run)
    pending = run_selectors.run_pending_reviews(run=run, nodes=nodes)
    graph = run_graph(run=run, nodes=nodes, pending_reviews=pending)
    return {"run": run, "nodes": nodes, "graph": graph, "can_operate": can_start_runs(request.user)}


@viewer_required
def run_node_table(request: HtmxHttpRequest, run_id: uuid.UUID) -> HttpResponse:
    """The graph, the node table and the run summary, polled every second until the run is over;
    the last answer (HTTP 286) stops the polling, the review badge's included (see the template)."""
    run = _run_or_404(run_id)  # read the run before its nodes: a run seen active polls once more
    return _poll_response(request, "console/run_detail.html#live-update", _live_context(request, run), keep_polling=run.is_active)


@viewer_required
def node_detail(request: HtmxHttpRequest, run_id: uuid.UUID, node_id: str) -> HttpResponse:
    """A node's prompt, output, every attempt's raw response, its retries and events; without
    htmx, the run page showing it."""
    run = _run_or_404(run_id)
    context = _node_panel_context(run, node_id)
    if context["selected"] is None:
        raise Http404("no such node in this run")
    if not request.htmx:
        return redirect(f"{reverse('console:run', args=[run.id])}?node={node_id}#node-detail")
    return render(request, "console/run_detail.html#node-detail", {"run": run, **context})


def _node_panel_context(run: Run, node_id: str | None) -> dict[str, Any]:
    selected = _node_or_none(run, node_id)
    if selected is None:
        return {"selected": None}
    events = run_selectors.node_events(run=run, node_id=selected.node_id)
    return {
        "selected": selected,
        "events": events,
        "timeline": run_selectors.node_retry_timeline(events),
        "idempotency_key": run_selectors.node_idempotency_key(run_id=run.id, node_id=selected.node_id) if selected.node_type == "tool" else "",
    }


def _node_or_none(run: Run, node_id: str | None) -> NodeRun | None:
    if not node_id:
        return None
    try:
        return run_selectors.node_run_detail(run=run, node_id=node_id)
    except NodeRun.DoesNotExist:
        return None


# --- operations: cancel, retry, re-run from a node -----------------------------------------------
# htmx ignores the body of an error answer, so a refusal shown inline is answered 200 to htmx;
# without htmx the whole page comes back with the refusal and its real status.


@operator_required
@require_POST
def run_cancel(request: HtmxHttpRequest, run_id: uuid.UUID) -> HttpResponse:
    return _operate(request, run_id, run_operations.run_cancel)


@operator_required
@require_POST
def run_retry(request: HtmxHttpRequest, run_id: uuid.UUID) -> HttpResponse:
    return _operate(request, run_id, run_operations.run_retry_failed)


def _operate(request: HtmxHttpRequest, run_id: uuid.UUID, operation: Callable[..., Run]) -> HttpResponse:
    try:
        operation(run=_run_or_404(run_id), by=request.user)
    except RunStateConflict as exc:
        return _after_operation(request, run_id, message=f"Not done: {exc}.", status=409)
    if not request.htmx:
        return redirect("console:run", run_id=run_id)
    return _after_operation(request, run_id)


def _after_operation(request: HtmxHttpRequest, run_id: uuid.UUID, *, message: str = "", status: int = 200) -> HttpResponse:
    """The run's actions, with the node table and summary swapped in out of band (the operation
    changed them, and may have started or stopped the polling)."""
    run = _run_or_404(run_id)  # read again: the operation changed it
    if not request.htmx:
        return _run_page(request, run, status=status, operation_message=message)
    context = {**_live_context(request, run), "operation_message": message}
    return render(request, "console/run_detail.html#operation-update", context)


@operator_required
def run_rerun_preview(request: HtmxHttpRequest, run_id: uuid.UUID) -> HttpResponse:
    """What a re-run from the chosen node executes again, reuses and costs, with the button that starts it."""
    return _rerun_preview(request, _run_or_404(run_id), request.GET.get("node", ""))


def _rerun_preview(request: HtmxHttpRequest, run: Run, node_id: str) -> HttpResponse:
    try:
        rerun, error = run_operations.run_rerun_preview(run=run, node_id=node_id), ""
    except UnknownNode as exc:
        rerun, error = None, str(exc) if node_id else "Choose the node to re-run from."
    if not request.htmx:
        return _run_page(request, run, status=422 if error else 200, rerun=rerun, rerun_error=error)
    return render(request, "console/run_detail.html#rerun-preview", {"run": run, "rerun": rerun, "rerun_error": error})


@operator_required
@require_POST
def run_rerun(request: HtmxHttpRequest, run_id: uuid.UUID) -> HttpResponse:
    """Start the re-run as a new run and go to its page."""
    run, node_id = _run_or_404(run_id), request.POST.get("node", "")
    try:
        new = run_operations.run_rerun_from(run=run, node_id=node_id, by=request.user)
    except UnknownNode:
        return _rerun_preview(request, run, node_id)
    url = reverse("console:run", args=[new.id])
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
