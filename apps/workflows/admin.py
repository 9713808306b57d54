from django.contrib import admin
from django.http import HttpRequest

from .models import Workflow, WorkflowVersion

EDITOR_URL = "/workflows/new/"  # the workflow editor (console); a workflow is only ever created from a definition


class WorkflowVersionInline(admin.TabularInline):
    model = WorkflowVersion
    fields = ("number", "content_hash", "created_at", "created_by")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    """No "Add workflow" here: a workflow without a definition has nothing to run. The list links
    to the editor instead; the published pointer moves only through a publish (audited)."""

    list_display = ("name", "description", "published_version", "published_by", "published_at", "updated_at")
    list_select_related = ("published_version", "published_by")
    search_fields = ("name", "description")
    readonly_fields = ("published_version", "published_by", "published_at", "created_by")
    inlines = [WorkflowVersionInline]
    change_list_template = "admin/workflows/workflow/change_list.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        return super().changelist_view(request, extra_context={"editor_url": EDITOR_URL, **(extra_context or {})})


@admin.register(WorkflowVersion)
class WorkflowVersionAdmin(admin.ModelAdmin):
    """Versions are immutable: visible here, created only through a definition."""

    list_display = ("workflow", "number", "content_hash", "created_at", "created_by")
    list_filter = ("workflow",)
    readonly_fields = ("workflow", "number", "content_hash", "definition", "created_at", "created_by")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
