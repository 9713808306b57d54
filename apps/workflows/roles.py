"""Who may do what. Roles are Django groups; superusers are admins.

- admins edit workflows and do everything operators do;
- operators start, cancel and retry runs;
- reviewers read workflows and runs (and decide review gates, with the review app);
- any other user may sign in but sees nothing.
"""

from __future__ import annotations

from typing import Any

ADMINS, OPERATORS, REVIEWERS = "admins", "operators", "reviewers"
ROLE_GROUPS = (ADMINS, OPERATORS, REVIEWERS)


def _groups(user: Any) -> set[str]:
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return set()
    cached = getattr(user, "_dagwright_groups", None)
    if cached is None:
        cached = set(user.groups.values_list("name", flat=True))
        user._dagwright_groups = cached
    return cached


def user_groups(user: Any) -> set[str]:
    """The names of the user's groups (cached on the user object for the request)."""
    return _groups(user)


def is_admin(user: Any) -> bool:
    return bool(getattr(user, "is_authenticated", False) and user.is_active and user.is_superuser) or ADMINS in _groups(user)


def can_edit_workflows(user: Any) -> bool:
    return is_admin(user)


def can_start_runs(user: Any) -> bool:
    return is_admin(user) or OPERATORS in _groups(user)


def can_view(user: Any) -> bool:
    return is_admin(user) or bool(_groups(user) & {OPERATORS, REVIEWERS})
