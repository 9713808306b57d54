"""Reviews over the JSON API: list, read and decide review gates, one or several at once.

Any signed-in user may call these operations; which reviews they see and may decide is
``apps.reviews.access``'s answer per review, as in the console. A review the caller may not see
is a 404 (its existence is not revealed), one they may see but not decide a 403. Domain errors
(ReviewNotFound, ReviewForbidden, ReviewConflict, DecisionInvalid) become problems in
``apps.api.problems``.
"""

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from ninja import Field, Router, Schema
from ninja.pagination import paginate
from pydantic import ConfigDict

from apps.api.auth import requires
from apps.api.bounds import Id, Number, Page
from apps.api.problems import ProblemOut, problem_responses

from . import selectors
from .models import ReviewDecision, ReviewStatus, ReviewTask
from .services import Decision, review_decide, review_get, reviews_decide_bulk


def signed_in(user: Any) -> bool:
    """Any signed-in user passes: visibility is decided per review, never by a blanket 403 that
    would tell an outsider the endpoint holds something for them to want."""
    return True


router = Router(tags=["reviews"], auth=requires(signed_in))

MAX_BULK = 100


# --- out ----------------------------------------------------------------------------------------


class AssignmentOut(Schema):
    users: list[str]
    groups: list[str]


class ReviewDecisionOut(Schema):
    ordinal: int
    decision: str = Field(description="approve, edit (edit then approve) or reject.")
    reviewer: str = Field(description="The reviewer's username, or 'escalation' for a decision taken by the definition's escalation.")
    by_escalation: bool
    original: Any = Field(description="The output as it was before this decision.")
    edited: Any = Field(description="The reviewer's edit (an edit decision); null otherwise.")
    diff: str = Field(description="A unified diff from the original to the edit, as pretty-printed JSON.")
    comment: str
    created_at: datetime

    @staticmethod
    def resolve_reviewer(decision: ReviewDecision) -> str:
        return decision.actor


class ReviewLinksOut(Schema):
    self: str
    run: str = Field(description="The run in the API.")
    page: str | None = Field(description="The review's page in the console.")


class ReviewOut(Schema):
    id: int
    run: UUID
    workflow: str
    node_id: str = Field(description="The review gate's node.")
    subject_node_id: str = Field(description="The node whose output is under review.")
    status: str
    approvals: int
    approvals_required: int
    assignment: AssignmentOut
    due_at: datetime | None
    overdue: bool
    escalated_at: datetime | None
    version: int = Field(description="Grows with every change; send it with a decision so a stale page never overwrites a newer state.")
    created_at: datetime
    decided_at: datetime | None
    decided_by: str | None
    links: ReviewLinksOut

    @staticmethod
    def resolve_run(task: ReviewTask) -> UUID:
        return task.run_id

    @staticmethod
    def resolve_workflow(task: ReviewTask) -> str:
        return task.run.workflow.name

    @staticmethod
    def resolve_assignment(task: ReviewTask) -> dict[str, list[str]]:
        users = sorted(u.get_username() for u in task.assigned_users.all())
        return {"users": users, "groups": sorted(g.name for g in task.assigned_groups.all())}

    @staticmethod
    def resolve_overdue(task: ReviewTask) -> bool:
        return task.is_pending and task.due_at is not None and task.due_at < timezone.now()

    @staticmethod
    def resolve_decided_by(task: ReviewTask) -> str | None:
        return task.decided_by.get_username() if task.decided_by_id else None

    @staticmethod
    def resolve_links(task: ReviewTask) -> dict[str, str | None]:
        return {
            "self": reverse("api:review_get_one", kwargs={"review_id": task.pk}),
            "run": reverse("api:run_get_one", kwargs={"run_id": task.run_id}),
            "page": _page(task),
        }


class ReviewDetailOut(ReviewOut):
    subject: Any = Field(description="The upstream output under review, frozen when the gate was reached.")
    subject_hash: str
    current_output: Any = Field(description="What downstream nodes receive on approval: the subject, or the latest edit of it.")
    output_schema: dict[str, Any] | None = Field(description="The producing node's output schema, which an edit must satisfy.")
    context: dict[str, Any] = Field(description="Run input, upstream outputs, the model calls behind them, cost so far.")
    instructions: str
    decisions: list[ReviewDecisionOut]

    @staticmethod
    def resolve_decisions(task: ReviewTask) -> list[ReviewDecision]:
        return selectors.review_decisions(task=task)


def _page(task: ReviewTask) -> str | None:
    try:
        return reverse("reviews:detail", kwargs={"review_id": task.pk})
    except NoReverseMatch:  # the console's pages are not mounted on this site
        return None


class ReviewConflictOut(ProblemOut):
    decided_by: str | None = Field(description="Who decided last; null when nobody did (the review was cancelled).")
    decided_at: datetime | None
    review_status: str
    version: int = Field(description="The review's current version.")


# --- in -----------------------------------------------------------------------------------------


class ReviewDecisionIn(Schema):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "edit", "reject"]
    output: Any = Field(None, description="The edited output (edit only), checked against the producing node's output schema.")
    comment: str = Field("", description="Required to reject.")
    version: Number | None = Field(None, description="The version your page showed; a newer one answers 409.")


class BulkDecisionIn(Schema):
    model_config = ConfigDict(extra="forbid")

    ids: list[Id] = Field(min_length=1, max_length=MAX_BULK, description="The reviews to decide, each on its own.")
    decision: Literal["approve", "reject"]
    comment: str = Field("", description="Required to reject.")


class BulkResultOut(Schema):
    id: int
    status: Literal["decided", "conflict", "forbidden", "not_found", "invalid"]
    detail: str


class BulkDecisionOut(Schema):
    decided: int
    results: list[BulkResultOut]


# --- operations ---------------------------------------------------------------------------------


def _with_relations(reviews: QuerySet[ReviewTask]) -> QuerySet[ReviewTask]:
    return reviews.select_related("run__workflow", "decided_by").prefetch_related("assigned_users", "assigned_groups")


def _address(request: HttpRequest) -> str | None:
    return request.META.get("REMOTE_ADDR") or None


def _detail(review_id: int, user: Any) -> ReviewTask:
    task = review_get(review_id=review_id, user=user)
    return _with_relations(ReviewTask.objects.filter(pk=task.pk)).get()


@router.get("/reviews", response={200: list[ReviewOut], **problem_responses(422)}, summary="List reviews")
@paginate(Page)
def review_list(
    request: HttpRequest,
    status: ReviewStatus | None = None,
    assigned: Literal["me", "groups", "all"] = "all",
    overdue: bool | None = None,
    run: UUID | None = None,
    workflow: str | None = None,
) -> Any:
    """The reviews you may see, newest first. ``assigned``: ``me`` (to you by name), ``groups``
    (to one of your groups), ``all`` (everything you may see: your assignments, or every review
    for operators and admins). ``overdue``: pending past its due time."""
    return _with_relations(selectors.review_list(user=request.auth, status=status, assigned=assigned, overdue=overdue, run=run, workflow=workflow))


@router.get("/reviews/{int:review_id}", response={200: ReviewDetailOut, **problem_responses(404)}, summary="Get a review")
def review_get_one(request: HttpRequest, review_id: Id) -> ReviewTask:
    """A review with what is to be approved, its context, assignment, deadline and decisions."""
    return _detail(review_id, request.auth)


DECIDE_PROBLEMS = {**problem_responses(400, 404, 422), 409: ReviewConflictOut}


@router.post("/reviews/{int:review_id}/decision", response={200: ReviewDetailOut, **DECIDE_PROBLEMS}, summary="Decide a review")
def review_decide_post(request: HttpRequest, review_id: Id, payload: ReviewDecisionIn) -> ReviewTask:
    """Approve, edit then approve, or reject (with a reason). 403 when the review is not yours to
    decide; 409 when someone decided first (the problem says who and when), when you approved
    already, or when ``version`` is not the current one; 422 when an edit breaks the schema."""
    decision = Decision(kind=payload.decision, output=payload.output, comment=payload.comment, version=payload.version)
    review_decide(review_id=review_id, user=request.auth, decision=decision, client_address=_address(request))
    return _detail(review_id, request.auth)


@router.post("/reviews/decisions", response={200: BulkDecisionOut, **problem_responses(400, 422)}, summary="Decide several reviews")
def review_decide_bulk_post(request: HttpRequest, payload: BulkDecisionIn) -> dict[str, Any]:
    """Approve or reject several reviews, each on its own: one that cannot be decided (not found,
    not yours, decided already, a rejection without a reason) does not stop the others."""
    decision = Decision(kind=payload.decision, comment=payload.comment)
    results = reviews_decide_bulk(review_ids=payload.ids, user=request.auth, decision=decision, client_address=_address(request))
    out = [{"id": r.review_id, "status": r.status, "detail": r.detail} for r in results]
    return {"decided": sum(r.status == "decided" for r in results), "results": out}
