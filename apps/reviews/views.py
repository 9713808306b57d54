"""The review console: the inbox, a review's page with its decision form, and the history.

Reads go through ``selectors``, decisions through ``services``; who may see or decide a review is
``access``'s call. Everything a model wrote, or a run was given, is printed autoescaped.

A refused decision comes back with its real status (422 invalid, 409 stale or decided already,
403 read-only) to htmx too; ``static/js/reviews.js`` lets htmx swap those answers into the panel
(htmx 2 leaves 4xx bodies out by default). Without JavaScript the forms post normally: a decision
answers 303 back to the review page, a refusal answers the whole page with the message inline.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseStopPolling
from django_htmx.middleware import HtmxDetails

from apps.engine.errors import Problem
from apps.workflows.roles import is_admin

from . import selectors
from .access import can_decide, can_read_all
from .forms import BulkDecisionForm, decision_from_post, edits_as_text
from .models import ReviewTask
from .services import BulkResult, DecisionInvalid, ReviewConflict, ReviewForbidden, ReviewNotFound, review_decide, review_get, reviews_decide_bulk

REVIEWS_PER_PAGE = 25
FILTER_LABELS = {"pending": "All pending", "mine": "Assigned to me", "groups": "My groups", "overdue": "Overdue"}


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def _client_address(request: HttpRequest) -> str | None:
    # The peer address only: X-Forwarded-For is whatever the client chose to send.
    return request.META.get("REMOTE_ADDR") or None


def _review_or_404(review_id: int, user: Any) -> ReviewTask:
    try:
        return review_get(review_id=review_id, user=user)
    except ReviewNotFound:
        raise Http404("no such review") from None


# --- inbox --------------------------------------------------------------------------------------


def _filter_name(params: QueryDict) -> str:
    name = params.get("filter", "")
    return name if name in selectors.INBOX_FILTERS else "pending"


def _inbox_context(user: Any, filter_name: str, page_number: str | None) -> dict[str, Any]:
    now = timezone.now()
    counts = selectors.review_counts(user=user, now=now)
    paginator = Paginator(selectors.inbox_reviews(user=user, filter=filter_name, now=now), REVIEWS_PER_PAGE)
    # The tab's count is this queryset's count: no second COUNT on every poll of the rows.
    paginator.count = counts.for_filter(filter_name)
    page = paginator.get_page(page_number)
    query = QueryDict(mutable=True)
    query.update({"filter": filter_name, "page": str(page.number)})
    return {
        "page": page,
        "filter": filter_name,
        "tabs": [(name, label, counts.for_filter(name)) for name, label in FILTER_LABELS.items()],
        "poll_url": f"{reverse('reviews:inbox')}?{query.urlencode()}",
        "can_read_all": can_read_all(user),
        "is_admin": is_admin(user),
        "can_bulk": is_admin(user) or counts.assigned > 0,
    }


@login_required
def inbox(request: HtmxHttpRequest) -> HttpResponse:
    """The queue of pending reviews; its rows and tab counts are polled every few seconds."""
    context = _inbox_context(request.user, _filter_name(request.GET), request.GET.get("page"))
    if request.htmx.target == "inbox-rows":
        return render(request, "reviews/inbox.html#inbox-poll", context)
    return render(request, "reviews/inbox.html", context | {"bulk_form": BulkDecisionForm()})


@login_required
@require_POST
def decide_selected(request: HtmxHttpRequest) -> HttpResponse:
    """Approve the checked reviews, or reject them with one reason; each one's result is shown."""
    form = BulkDecisionForm(request.POST)
    results: list[dict[str, Any]] = []
    if form.is_valid():
        decided = reviews_decide_bulk(
            review_ids=form.cleaned_data["review"], user=request.user, decision=form.decision(), client_address=_client_address(request)
        )
        results = _labelled(decided, request.user)
    context = _inbox_context(request.user, _filter_name(request.POST), request.POST.get("page"))
    context |= {"bulk_form": form if form.errors else BulkDecisionForm(), "results": results, "action": form.cleaned_data.get("action")}
    status = 422 if form.errors else 200
    template = "reviews/inbox.html#bulk-update" if request.htmx else "reviews/inbox.html"
    return render(request, template, context, status=status)


def _labelled(results: list[BulkResult], user: Any) -> list[dict[str, Any]]:
    """Each result with its review, when the user may see it (a missing one is not described)."""
    tasks = selectors.reviews_by_id(user=user, review_ids=[r.review_id for r in results])
    return [{"result": r, "task": tasks.get(r.review_id)} for r in results]


def counts(request: HtmxHttpRequest) -> HttpResponse:
    """The navigation badge: pending reviews assigned to me (by name or group), and how many are overdue."""
    if not request.user.is_authenticated:
        # A page whose session ended stops polling rather than swapping a login page into the badge.
        return HttpResponseStopPolling("") if request.htmx else redirect_to_login(request.get_full_path())
    return render(request, "reviews/_counts.html", {"counts": selectors.review_badge(user=request.user)})


# --- history ------------------------------------------------------------------------------------


@login_required
def history(request: HtmxHttpRequest) -> HttpResponse:
    page = Paginator(selectors.history_reviews(user=request.user), REVIEWS_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "reviews/history.html", {"page": page})


# --- one review ---------------------------------------------------------------------------------


@login_required
def review_detail(request: HtmxHttpRequest, review_id: int) -> HttpResponse:
    return render(request, "reviews/detail.html", _review_context(request.user, _review_or_404(review_id, request.user)))


def _review_context(user: Any, task: ReviewTask, **extra: Any) -> dict[str, Any]:
    task = selectors.review_for_page(task=task)
    decisions = selectors.review_decisions(task=task)
    deciding = can_decide(user, task)
    decided_by_me = any(d.reviewer_id == user.pk for d in decisions)
    return {
        "task": task,
        "run": task.run,
        "can_decide": deciding,
        "decided_by_me": decided_by_me,
        "show_form": deciding and task.is_pending and not decided_by_me,
        "decisions": decisions,
        "audit": selectors.review_audit(task=task),
        "graph": selectors.review_graph(task=task),
        "calls": selectors.review_calls(task=task),
        "upstream": list(task.context.get("upstream", {}).items()),
        "cost_so_far": Decimal(task.context.get("cost_so_far") or 0),
        "edits_as_text": edits_as_text(task),
        **extra,
    }


@login_required
@require_POST
def review_decide_view(request: HtmxHttpRequest, review_id: int) -> HttpResponse:
    """Approve, edit then approve, or reject, from the review page (htmx or a plain form post)."""
    task = _review_or_404(review_id, request.user)
    if not can_decide(request.user, task):
        raise PermissionDenied("you may read this review but not decide it")
    try:
        decision = decision_from_post(request.POST, task)
        review_decide(review_id=task.pk, user=request.user, decision=decision, client_address=_client_address(request))
    except DecisionInvalid as exc:
        return _decision_answer(request, task, status=422, failed=request.POST.get("action", ""), posted=request.POST, **_problems(exc.problems))
    except ReviewConflict as exc:
        return _decision_answer(request, task, status=409, conflict=_conflict(exc))
    except ReviewForbidden:
        raise PermissionDenied("you may read this review but not decide it") from None
    except ReviewNotFound:
        raise Http404("no such review") from None
    if not request.htmx:
        return HttpResponseRedirect(reverse("reviews:detail", args=[task.pk]), status=303)
    return _decision_answer(request, task, just_decided=True)


def _decision_answer(request: HtmxHttpRequest, task: ReviewTask, *, status: int = 200, **extra: Any) -> HttpResponse:
    """The decision panel with the parts of the page a decision changes (htmx), or the whole page."""
    context = _review_context(request.user, task, **extra)
    template = "reviews/detail.html#decision-update" if request.htmx else "reviews/detail.html"
    return render(request, template, context, status=status)


def _problems(problems: list[Problem]) -> dict[str, list[Problem]]:
    """Problems by the field they point at: the edit box, the comment, or the form as a whole."""
    grouped: dict[str, list[Problem]] = {"output_problems": [], "comment_problems": [], "form_problems": []}
    for problem in problems:
        field = next((f for f in ("output", "comment") if problem.pointer == f"/{f}" or problem.pointer.startswith(f"/{f}/")), "form")
        grouped[f"{field}_problems"].append(problem)
    return grouped


def _conflict(exc: ReviewConflict) -> dict[str, Any]:
    return {"status": exc.task.status, "by": exc.decided_by, "at": exc.decided_at, "detail": str(exc)}
