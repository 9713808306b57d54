"""Reviews in the admin: read-only, and a page that verifies the audit chain.

Decisions are made in the review console, never here; the audit trail is append-only, so the
admin can neither add, change nor delete any of it.
"""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from .audit import audit_verify
from .models import AuditEntry, ReviewDecision, ReviewTask


class ReadOnlyAdmin(admin.ModelAdmin):
    """Written by the review services only; the admin shows it."""

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class ReviewDecisionInline(admin.TabularInline):
    model = ReviewDecision
    fields = ("ordinal", "decision", "reviewer", "by_escalation", "comment", "client_address", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(ReviewTask)
class ReviewTaskAdmin(ReadOnlyAdmin):
    list_display = ("id", "run", "node_id", "status", "approvals", "approvals_required", "due_at", "escalated_at", "decided_by", "decided_at", "created_at")
    list_filter = ("status", ("escalated_at", admin.EmptyFieldListFilter), "node_id")
    search_fields = ("run__id", "node_id", "subject_hash")
    list_select_related = ("run", "decided_by")
    inlines = [ReviewDecisionInline]


@admin.register(ReviewDecision)
class ReviewDecisionAdmin(ReadOnlyAdmin):
    list_display = ("task", "ordinal", "decision", "reviewer", "by_escalation", "client_address", "created_at")
    list_filter = ("decision", "by_escalation", "task__status")
    search_fields = ("task__run__id", "reviewer__username", "comment")
    list_select_related = ("task", "reviewer")


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    # review_id, not review: an entry outlives its review (a deleted run takes its reviews along).
    list_display = ("seq", "at", "event", "actor", "review_id", "run_id", "decision", "client_address", "short_hash")
    list_filter = ("event", "decision")
    search_fields = ("actor", "comment")
    fields = (
        *("seq", "at", "event", "actor", "actor_id", "client_address", "review_id", "run_id"),
        *("decision", "comment", "before_json", "after_json", "prev_hash", "hash"),
    )
    readonly_fields = fields
    ordering = ("-seq",)
    change_list_template = "admin/reviews/auditentry/change_list.html"

    @admin.display(description="hash")
    def short_hash(self, entry: AuditEntry) -> str:
        return entry.hash[:12]

    def get_urls(self) -> list[URLPattern]:
        verify = path("verify/", self.admin_site.admin_view(self.verify_chain_view), name="reviews_auditentry_verify")
        return [verify, *super().get_urls()]

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        extra = {"verify_url": reverse("admin:reviews_auditentry_verify"), **(extra_context or {})}
        return super().changelist_view(request, extra_context=extra)

    def verify_chain_view(self, request: HttpRequest) -> TemplateResponse:
        """Recompute the whole chain and name the first broken entry, with a link to it."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        report = audit_verify()
        broken = AuditEntry.objects.filter(seq=report.broken_seq).values_list("pk", flat=True).first() if not report.ok else None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Verify audit chain",
            "report": report,
            "broken_url": reverse("admin:reviews_auditentry_change", args=[broken]) if broken else "",
        }
        return TemplateResponse(request, "admin/reviews/auditentry/verify_chain.html", context)
