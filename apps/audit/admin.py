"""The audit trail in the admin: read-only (it is append-only), filtered by event or workflow, and
a page that verifies the chain."""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from .audit import audit_verify
from .models import AuditEntry


class ReadOnlyAdminMixin:
    """For records only services write (the audit trail, reviews and their decisions): the admin
    shows them and changes nothing, deletion included. Mixed into a ModelAdmin or an inline."""

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    # review_id, not review: an entry outlives its review (a deleted run takes its reviews along).
    list_display = ("seq", "at", "event", "actor", "workflow_name", "review_id", "run_id", "decision", "client_address", "short_hash")
    list_filter = ("event", "decision", "workflow_name")
    search_fields = ("actor", "comment", "workflow_name")
    fields = (
        *("seq", "at", "event", "actor", "actor_id", "client_address", "workflow_name", "review_id", "run_id"),
        *("decision", "comment", "before_json", "after_json", "prev_hash", "hash"),
    )
    readonly_fields = fields
    ordering = ("-seq",)
    change_list_template = "admin/audit/auditentry/change_list.html"

    @admin.display(description="hash")
    def short_hash(self, entry: AuditEntry) -> str:
        return entry.hash[:12]

    def get_urls(self) -> list[URLPattern]:
        verify = path("verify/", self.admin_site.admin_view(self.verify_chain_view), name="audit_auditentry_verify")
        return [verify, *super().get_urls()]

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        extra = {"verify_url": reverse("admin:audit_auditentry_verify"), **(extra_context or {})}
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
            "broken_url": reverse("admin:audit_auditentry_change", args=[broken]) if broken else "",
        }
        return TemplateResponse(request, "admin/audit/auditentry/verify_chain.html", context)
