"""Reads for the review console: the inbox and its counts, the history, and a review's page."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from django.db.models import BooleanField, Count, Exists, ExpressionWrapper, F, OuterRef, Q, QuerySet
from django.utils import timezone

from apps.audit.models import AuditEntry
from apps.runs.models import NodeRun, ProviderCall
from apps.workflows.roles import can_view as has_role
from apps.workflows.roles import user_groups

from .access import visible_reviews
from .models import DecisionKind, ReviewDecision, ReviewStatus, ReviewTask

INBOX_FILTERS = ("pending", "mine", "groups", "overdue")
DECIDED = (ReviewStatus.APPROVED, ReviewStatus.REJECTED, ReviewStatus.CANCELLED)
# What a list page never prints: the frozen context can be large.
_LIST_DEFERRED = ("context", "subject", "output_schema", "escalation")


def assigned_directly(user: Any) -> Exists:
    through = ReviewTask.assigned_users.through
    return Exists(through.objects.filter(reviewtask_id=OuterRef("pk"), user_id=user.pk))


def assigned_through_groups(user: Any) -> Exists:
    through = ReviewTask.assigned_groups.through
    return Exists(through.objects.filter(reviewtask_id=OuterRef("pk"), group__name__in=user_groups(user)))


def _pending(user: Any, now: datetime) -> QuerySet[ReviewTask]:
    """The pending reviews ``user`` may see, annotated with how they reach them and whether they are overdue.

    Exists() subqueries rather than joins over the assignment tables: a review assigned to two
    of the user's groups is still one row.
    """
    overdue = ExpressionWrapper(Q(due_at__lt=now), output_field=BooleanField())
    return (
        visible_reviews(user)
        .filter(status=ReviewStatus.PENDING)
        .annotate(mine=assigned_directly(user), via_group=assigned_through_groups(user), overdue=overdue)
    )


def may_use_reviews(user: Any) -> bool:
    """Whether the navigation offers the review console: a role, or a review assigned by name."""
    if not getattr(user, "is_authenticated", False):
        return False
    return has_role(user) or visible_reviews(user).exists()


def inbox_reviews(*, user: Any, filter: str = "pending", now: datetime | None = None) -> QuerySet[ReviewTask]:
    """The inbox queue: overdue and soonest due first, then the oldest."""
    reviews = _pending(user, now or timezone.now())
    if filter == "mine":
        reviews = reviews.filter(mine=True)
    elif filter == "groups":
        reviews = reviews.filter(via_group=True)
    elif filter == "overdue":
        reviews = reviews.filter(overdue=True)
    return (
        reviews.select_related("run__workflow")
        .prefetch_related("assigned_users", "assigned_groups")
        .defer(*_LIST_DEFERRED)
        .order_by(F("due_at").asc(nulls_last=True), "created_at", "id")
    )


@dataclass(frozen=True)
class ReviewCounts:
    pending: int  # every pending review the user may see
    mine: int  # assigned to the user by name
    groups: int  # assigned through one of the user's groups
    overdue: int  # pending past its due time, of those the user may see
    assigned: int  # mine or through my groups: what the navigation badge counts
    assigned_overdue: int

    def for_filter(self, name: str) -> int:
        return getattr(self, name)


def review_counts(*, user: Any, now: datetime | None = None) -> ReviewCounts:
    """Every count of the inbox tabs and the navigation badge, in one query."""
    assigned = Q(mine=True) | Q(via_group=True)
    # The aggregates' names must differ from the annotations they filter on.
    totals = _pending(user, now or timezone.now()).aggregate(
        n_pending=Count("pk"),
        n_mine=Count("pk", filter=Q(mine=True)),
        n_groups=Count("pk", filter=Q(via_group=True)),
        n_overdue=Count("pk", filter=Q(overdue=True)),
        n_assigned=Count("pk", filter=assigned),
        n_assigned_overdue=Count("pk", filter=assigned & Q(overdue=True)),
    )
    return ReviewCounts(**{name.removeprefix("n_"): count for name, count in totals.items()})


def review_list(
    *, user: Any, status: str | None = None, assigned: str = "all", overdue: bool | None = None, run: UUID | None = None, workflow: str | None = None
) -> QuerySet[ReviewTask]:
    """The reviews ``user`` may see, narrowed as the API's list asks: ``assigned`` me | groups | all,
    ``overdue`` (pending past its due time) or not, a status, a run, a workflow."""
    reviews = visible_reviews(user)
    if assigned == "me":
        reviews = reviews.filter(assigned_directly(user))
    elif assigned == "groups":
        reviews = reviews.filter(assigned_through_groups(user))
    if status:
        reviews = reviews.filter(status=status)
    if overdue is not None:
        late = {"status": ReviewStatus.PENDING, "due_at__lt": timezone.now()}
        reviews = reviews.filter(**late) if overdue else reviews.exclude(**late)
    if run:
        reviews = reviews.filter(run_id=run)
    if workflow:
        reviews = reviews.filter(run__workflow__name=workflow)
    return reviews


@dataclass(frozen=True)
class ReviewBadge:
    assigned: int  # pending, assigned to the user by name or through one of their groups
    assigned_overdue: int


def review_badge(*, user: Any, now: datetime | None = None) -> ReviewBadge:
    """The navigation badge's two counts (``review_counts``'s ``assigned`` and ``assigned_overdue``).

    Every signed-in page polls it every few seconds, so it is one query, which reads neither the
    user's groups (group membership is joined in the subquery) nor every review an operator may
    see: what is assigned to someone is always theirs to see.
    """
    if not user.is_active:
        return ReviewBadge(0, 0)
    through_groups = ReviewTask.assigned_groups.through.objects.filter(reviewtask_id=OuterRef("pk"), group__user=user)
    totals = (
        ReviewTask.objects.filter(Q(assigned_directly(user)) | Q(Exists(through_groups)), status=ReviewStatus.PENDING)
        .order_by()
        .aggregate(assigned=Count("pk"), assigned_overdue=Count("pk", filter=Q(due_at__lt=now or timezone.now())))
    )
    return ReviewBadge(**totals)


def reviews_by_id(*, user: Any, review_ids: list[int]) -> dict[int, ReviewTask]:
    """The reviews among ``review_ids`` the user may see, by id."""
    return visible_reviews(user).select_related("run__workflow").defer(*_LIST_DEFERRED).in_bulk(review_ids)


def history_reviews(*, user: Any) -> QuerySet[ReviewTask]:
    """Decided reviews (approved, rejected, cancelled) the user may see, the latest decided first."""
    edits = ReviewDecision.objects.filter(task_id=OuterRef("pk"), decision=DecisionKind.EDIT)
    escalated = ReviewDecision.objects.filter(task_id=OuterRef("pk"), by_escalation=True)
    return (
        visible_reviews(user)
        .filter(status__in=DECIDED)
        .select_related("run__workflow", "decided_by")
        .annotate(edited=Exists(edits), by_escalation=Exists(escalated))
        .defer(*_LIST_DEFERRED)
        .order_by(F("decided_at").desc(nulls_last=True), "-id")
    )


# --- one review's page --------------------------------------------------------------------------


@dataclass(frozen=True)
class GraphNode:
    node_id: str
    type: str
    status: str
    role: str  # gate | subject | upstream | downstream | other


ROLE_LABELS = {
    "gate": "this review gate",
    "subject": "output under review",
    "upstream": "upstream",
    "downstream": "waits for this gate",
    "other": "other branch",
}


def review_graph(*, task: ReviewTask) -> list[list[GraphNode]]:
    """The workflow's nodes in layers (a node's layer is one past its deepest dependency), each
    with its state in this run and its relation to the gate."""
    plan = task.run.version.plan
    states = dict(NodeRun.objects.filter(run_id=task.run_id).values_list("node_id", "status"))
    upstream = plan.ancestors.get(task.node_id, frozenset())
    depth: dict[str, int] = {}
    layers: list[list[GraphNode]] = []
    for node_id in plan.order:  # topological: dependencies first
        depth[node_id] = 1 + max((depth[d] for d in plan.deps[node_id]), default=-1)
        if depth[node_id] == len(layers):
            layers.append([])
        layers[depth[node_id]].append(GraphNode(node_id, plan.node(node_id).type, states.get(node_id, ""), _role(task, node_id, upstream, plan)))
    return layers


def _role(task: ReviewTask, node_id: str, upstream: frozenset[str], plan: Any) -> str:
    if node_id == task.node_id:
        return "gate"
    if node_id == task.subject_node_id:
        return "subject"
    if node_id in upstream:
        return "upstream"
    return "downstream" if task.node_id in plan.ancestors[node_id] else "other"


def review_calls(*, task: ReviewTask) -> list[ProviderCall]:
    """The model calls behind the upstream outputs, as frozen in the task's context."""
    ids = [pk for pk in task.context.get("calls", []) if isinstance(pk, int)]
    return list(ProviderCall.objects.filter(pk__in=ids, run_id=task.run_id).select_related("node_run").order_by("id"))


def review_decisions(*, task: ReviewTask) -> list[ReviewDecision]:
    return list(task.decisions.select_related("reviewer").order_by("ordinal"))


def review_audit(*, task: ReviewTask) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(review_id=task.pk).order_by("seq"))


def review_for_page(*, task: ReviewTask) -> ReviewTask:
    """The task again, with what its page prints about it loaded in a few queries."""
    overdue = ExpressionWrapper(Q(status=ReviewStatus.PENDING, due_at__lt=timezone.now()), output_field=BooleanField())
    return (
        ReviewTask.objects.select_related("run__workflow", "run__version", "decided_by")
        .prefetch_related("assigned_users", "assigned_groups")
        .annotate(overdue=overdue)
        .get(pk=task.pk)
    )
