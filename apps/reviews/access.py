"""Who may read and decide a review. Assigned users and members of assigned groups decide, and
admins; operators read every review; anyone else does not learn that a review exists."""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from apps.workflows.roles import OPERATORS, is_admin, user_groups

from .models import ReviewTask


def assigned_filter(user: Any) -> Q:
    """Reviews assigned to ``user``, directly or through one of their groups."""
    return Q(assigned_users=user) | Q(assigned_groups__name__in=user_groups(user))


def can_read_all(user: Any) -> bool:
    return is_admin(user) or OPERATORS in user_groups(user)


def visible_reviews(user: Any) -> QuerySet[ReviewTask]:
    """The reviews ``user`` may see: all of them for admins and operators, else their assignments."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return ReviewTask.objects.none()
    if can_read_all(user):
        return ReviewTask.objects.all()
    return ReviewTask.objects.filter(pk__in=ReviewTask.objects.filter(assigned_filter(user)).values("pk"))


def can_decide(user: Any, task: ReviewTask) -> bool:
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    if is_admin(user):
        return True
    if task.assigned_users.filter(pk=user.pk).exists():
        return True
    return task.assigned_groups.filter(name__in=user_groups(user)).exists()


def can_view(user: Any, task: ReviewTask) -> bool:
    return can_read_all(user) or can_decide(user, task)
