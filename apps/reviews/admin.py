"""Reviews in the admin, read-only: decisions are made in the review console, never here."""

from __future__ import annotations

from django.contrib import admin

from apps.audit.admin import ReadOnlyAdminMixin

from .models import ReviewDecision, ReviewTask


class ReviewDecisionInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = ReviewDecision
    fields = ("ordinal", "decision", "reviewer", "by_escalation", "comment", "client_address", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


@admin.register(ReviewTask)
class ReviewTaskAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "run", "node_id", "status", "approvals", "approvals_required", "due_at", "escalated_at", "decided_by", "decided_at", "created_at")
    list_filter = ("status", ("escalated_at", admin.EmptyFieldListFilter), "node_id")
    search_fields = ("run__id", "node_id", "subject_hash")
    list_select_related = ("run", "decided_by")
    inlines = [ReviewDecisionInline]


@admin.register(ReviewDecision)
class ReviewDecisionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("task", "ordinal", "decision", "reviewer", "by_escalation", "client_address", "created_at")
    list_filter = ("decision", "by_escalation", "task__status")
    search_fields = ("task__run__id", "reviewer__username", "comment")
    list_select_related = ("task", "reviewer")
