"""The workflow editor (admins): write a definition, check it as you type, see its graph, save a
draft, test-run it, and publish it after reviewing the change.

One form serves both ways of using the page. Without JavaScript it is a textarea whose buttons
post the whole form: "Check" answers the page with the problems listed and the preview drawn,
"Save draft", "Test run" and "Publish" save the text first (a refused save answers the page with
its problems, 422). With JavaScript (``static/editor/editor.js``, built from ``frontend/``) a
CodeMirror editor replaces the textarea and posts the text to ``workflow_validate`` 300 ms after
typing stops, which answers the same problems-and-preview fragment.

The form carries ``expected_published``, the version that was published when the editor was
opened; saving and publishing pass it on, so an admin who edits while someone else publishes gets
a 409 with who and when, and the change between their draft and what is published now, instead of
overwriting it. Definition text is untrusted here as everywhere: every part of it that a page
shows is autoescaped.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from apps.engine import definition
from apps.engine.diff import DefinitionDiff, definition_diff
from apps.engine.errors import DefinitionError, InputError
from apps.engine.sourcemap import SourceSyntaxError, source_map
from apps.runs.services import run_start_test
from apps.workflows import selectors as workflow_selectors
from apps.workflows.models import Workflow, WorkflowVersion
from apps.workflows.roles import can_edit_workflows
from apps.workflows.services import (
    NOTHING_PUBLISHED,
    LocatedProblem,
    PublishConflict,
    Validation,
    definition_parse_text,
    definition_validate,
    published_number,
    workflow_publish,
    workflow_save,
)

from .editor import SNIPPETS, STARTING_TEMPLATE, completion_vocabulary, draft_preview, editable_text
from .forms import RawInputForm, RunInputForm, input_skeleton
from .views import VIEWER, HtmxHttpRequest, _json_text, _workflow_or_404, role_required

admin_required = role_required(VIEWER, (can_edit_workflows, "editing workflows needs the admin role"))

ACTIONS = ("check", "save", "test", "publish")


@admin_required
def workflow_new(request: HtmxHttpRequest) -> HttpResponse:
    """A new workflow, from the starting template."""
    return _editor(request, None)


@admin_required
def workflow_edit(request: HtmxHttpRequest, name: str) -> HttpResponse:
    """The newest version of the workflow (``?version=N``: that one), a draft or not."""
    return _editor(request, _workflow_or_404(name))


@admin_required
@require_POST
def workflow_validate(request: HtmxHttpRequest, name: str | None = None) -> HttpResponse:
    """The problems and the preview of the posted text, as the editor page shows them; saves nothing."""
    workflow = _workflow_or_404(name) if name else None
    text = request.POST.get("text", "")
    return render(request, "console/workflow_editor.html#editor-feedback", _feedback(text, _validate(text, workflow)))


def _editor(request: HtmxHttpRequest, workflow: Workflow | None) -> HttpResponse:
    if request.method != "POST":
        text, opened = _opening_text(request, workflow)
        context = _page(workflow, text, expected=_published(workflow), opened=opened)
        context |= {"notice": _notice(request)}
        return render(request, "console/workflow_editor.html", context)
    text = request.POST.get("text", "").replace("\r\n", "\n")
    expected = _expected(request.POST.get("expected_published"), workflow)
    action = request.POST.get("action") if request.POST.get("action") in ACTIONS else "check"
    validation = _validate(text, workflow)
    if action == "check" or not validation.ok:
        status = 200 if action == "check" else 422
        return render(request, "console/workflow_editor.html", _page(workflow, text, expected=expected, validation=validation, refused=action), status=status)
    try:
        version, _ = workflow_save(spec=definition_parse_text(text=text), user=request.user, expected_published=expected)
    except PublishConflict as exc:
        return _conflict(request, workflow, text, exc)
    except DefinitionError as exc:  # changed between the check and the save (a model's provider went away)
        validation = Validation([LocatedProblem(p.pointer, p.message, None) for p in exc.problems])
        return render(request, "console/workflow_editor.html", _page(workflow, text, expected=expected, validation=validation, refused=action), status=422)
    if action == "test":
        return redirect(f"{reverse('console:test_run', args=[version.workflow.name])}?version={version.number}")
    if action == "publish":
        return _publish_review(request, version, expected)
    return redirect(f"{reverse('console:edit', args=[version.workflow.name])}?saved={version.number}")


def _opening_text(request: HtmxHttpRequest, workflow: Workflow | None) -> tuple[str, WorkflowVersion | None]:
    if workflow is None:
        return STARTING_TEMPLATE, None
    number = request.GET.get("version", "")
    try:
        version = workflow.versions.get(number=int(number)) if number.isdigit() else workflow_selectors.version_latest(workflow=workflow)
    except WorkflowVersion.DoesNotExist:
        raise Http404(f"workflow {workflow.name!r} has no version {number}") from None
    return (editable_text(version.definition), version) if version else (STARTING_TEMPLATE.replace("my-workflow", workflow.name), None)


def _notice(request: HtmxHttpRequest) -> str:
    for key, words in (("saved", "Saved as draft v{}: not published."), ("published", "Published v{}: runs started from now on use it.")):
        if request.GET.get(key, "").isdigit():
            return words.format(request.GET[key])
    return ""


def _published(workflow: Workflow | None) -> int:
    return (published_number(workflow) if workflow else None) or NOTHING_PUBLISHED


def _expected(posted: str | None, workflow: Workflow | None) -> int:
    """The version the editor was opened on; a form without one (an old tab) is checked against
    nothing published for a new workflow, and against what is published now otherwise."""
    return int(posted) if posted and posted.isdigit() else _published(workflow)


def _validate(text: str, workflow: Workflow | None) -> Validation:
    """The engine's validation (``definition_validate``, the API's), and the editor's own rule
    about the name: a workflow's editor saves that workflow, the new-workflow page a new one."""
    validation = definition_validate(text=text)
    name = _draft_name(text)
    if name is None:
        return validation
    if workflow is not None and name != workflow.name:
        message = f"this editor saves workflow '{workflow.name}': a definition named '{name}' belongs in the new-workflow page"
    elif workflow is None and Workflow.objects.filter(name=name).exists():
        message = f"a workflow named '{name}' exists already: choose another name, or open its editor"
    else:
        return validation
    try:
        where = source_map(text).locate("/name")
    except SourceSyntaxError:
        where = None
    return replace(validation, problems=[LocatedProblem("/name", message, where), *validation.problems], plan=None)


def _draft_name(text: str) -> str | None:
    try:
        name = definition_parse_text(text=text).get("name")
    except DefinitionError:
        return None
    return name if isinstance(name, str) else None


def _feedback(text: str, validation: Validation) -> dict[str, Any]:
    count = len(validation.problems)
    summary = "No problems: ready to save." if validation.ok else f"{count} problem{'s' if count != 1 else ''}."
    return {"validation": validation, "preview": draft_preview(text=text, validation=validation), "summary": summary}


def _page(workflow: Workflow | None, text: str, *, expected: int, validation: Validation | None = None, **extra: Any) -> dict[str, Any]:
    validation = validation if validation is not None else _validate(text, workflow)
    validate_url = reverse("console:edit_validate", args=[workflow.name]) if workflow else reverse("console:new_validate")
    return {
        "workflow": workflow,
        "text": text,
        "expected_published": expected,
        "published": workflow.published_version if workflow and workflow.published_version_id else None,
        "validate_url": validate_url,
        "snippets": [(kind, node_id, body) for kind, (node_id, body) in SNIPPETS.items()],
        "vocabulary": completion_vocabulary(),
        **_feedback(text, validation),
        **extra,
    }


# --- publishing: the change first, then the move of the pointer -------------------------------------


def _publish_review(request: HtmxHttpRequest, version: WorkflowVersion, expected: int) -> HttpResponse:
    """The confirmation step: what publishing ``version`` changes against the published version."""
    workflow = _workflow_or_404(version.workflow.name)  # re-read: the save may have created it
    published = workflow.published_version if workflow.published_version_id else None
    diff = _diff_to(workflow, published, version)
    context = {"workflow": workflow, "version": version, "published": published, "diff": diff, "expected_published": expected}
    return render(request, "console/workflow_publish.html", context)


def _diff_to(workflow: Workflow, published: WorkflowVersion | None, version: WorkflowVersion) -> DefinitionDiff:
    if published is None:  # a first publish: everything is new
        return definition_diff({"nodes": []}, version.definition, before_label="nothing published", after_label=f"{workflow.name} v{version.number}")
    return workflow_selectors.version_diff(workflow=workflow, before=published.number, after=version.number)


@admin_required
@require_POST
def workflow_publish_confirm(request: HtmxHttpRequest, name: str) -> HttpResponse:
    """Publish the version the confirmation showed, if what is published is still what it showed."""
    workflow = _workflow_or_404(name)
    number = request.POST.get("version", "")
    if not number.isdigit():
        raise Http404("no version given")
    try:
        version = workflow_publish(
            workflow=workflow, version_number=int(number), user=request.user, expected_published=_expected(request.POST.get("expected_published"), workflow)
        )
    except WorkflowVersion.DoesNotExist:
        raise Http404(f"workflow {name!r} has no version {number}") from None
    except PublishConflict as exc:
        draft = workflow.versions.get(number=int(number))
        return _conflict(request, workflow, editable_text(draft.definition), exc, draft=draft)
    return redirect(f"{reverse('console:edit', args=[workflow.name])}?published={version.number}")


def _conflict(request: HtmxHttpRequest, workflow: Workflow | None, text: str, exc: PublishConflict, draft: WorkflowVersion | None = None) -> HttpResponse:
    """409: someone published since the editor was opened. The page shows who and when, and the
    change from what is published now to the admin's draft; the form now expects the new version,
    so saving or publishing again is a decision taken with that change in view."""
    workflow = _workflow_or_404(exc.workflow.name)
    published = workflow.published_version
    draft_data = draft.definition if draft else definition.dump(definition.load(definition_parse_text(text=text)).spec)
    label = f"your draft v{draft.number}" if draft else "your draft"
    diff = definition_diff(published.definition, draft_data, before_label=f"{workflow.name} v{published.number} (published)", after_label=label)
    context = _page(workflow, text, expected=exc.published or NOTHING_PUBLISHED) | {"conflict": exc, "conflict_diff": diff, "conflict_draft": draft}
    return render(request, "console/workflow_editor.html", context, status=409)


# --- test runs of a draft ---------------------------------------------------------------------------


@admin_required
def workflow_test_run(request: HtmxHttpRequest, name: str) -> HttpResponse:
    """The input form of a test run of ``?version=N`` (any version, a draft included): every model
    answered by the simulated provider unless the admin asks for the real ones."""
    workflow = _workflow_or_404(name)
    number = request.POST.get("version") or request.GET.get("version") or ""
    try:
        version = workflow.versions.get(number=int(number)) if number.isdigit() else workflow_selectors.version_latest(workflow=workflow)
    except WorkflowVersion.DoesNotExist:
        version = None
    if version is None:
        raise Http404(f"workflow {name!r} has no version {number}")
    schema = version.definition.get("input_schema") or {}
    mode = "json" if request.POST.get("mode") == "json" else "form"
    bound: RunInputForm | RawInputForm | None = None
    if request.method == "POST":
        bound = RawInputForm(request.POST, auto_id="raw_%s") if mode == "json" else RunInputForm(schema, request.POST)
        if bound.is_valid():
            value = bound.cleaned_data["input_json"] if isinstance(bound, RawInputForm) else bound.input_value()
            real = request.POST.get("real_providers") == "on"
            try:
                run = run_start_test(workflow=workflow, version_number=version.number, input=value, started_by=request.user, real_providers=real)
            except InputError as exc:
                bound.add_problems(exc.problems)
            else:
                return redirect("console:run", run_id=run.id)
    context = {
        "workflow": workflow,
        "version": version,
        "test_run": True,
        "real_providers": request.POST.get("real_providers") == "on",
        "form": bound if bound and mode == "form" else RunInputForm(schema),
        "raw_form": bound if bound and mode == "json" else RawInputForm(initial={"input_json": _json_text(input_skeleton(schema))}, auto_id="raw_%s"),
        "mode": mode if bound else None,
    }
    return render(request, "console/run_start.html", context, status=422 if bound else 200)
