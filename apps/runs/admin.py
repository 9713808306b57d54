from django.contrib import admin

from .models import NodeRun, OutboxMessage, ProviderCall, Run, RunEvent


class ReadOnlyAdmin(admin.ModelAdmin):
    """Run state is written by the engine only; the admin shows it."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class NodeRunInline(admin.TabularInline):
    model = NodeRun
    fields = ("node_id", "node_type", "status", "attempt", "model", "tokens_in", "tokens_out", "cost", "started_at", "finished_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Run)
class RunAdmin(ReadOnlyAdmin):
    list_display = ("id", "workflow", "version", "status", "started_by", "tokens_in", "tokens_out", "cost", "created_at", "finished_at")
    list_filter = ("status", "workflow")
    search_fields = ("id", "idempotency_key")
    list_select_related = ("workflow", "version", "started_by")
    inlines = [NodeRunInline]


@admin.register(NodeRun)
class NodeRunAdmin(ReadOnlyAdmin):
    list_display = ("run", "node_id", "node_type", "status", "attempt", "model", "cost", "started_at", "finished_at")
    list_filter = ("status", "node_type")
    search_fields = ("run__id", "node_id", "input_hash")


@admin.register(ProviderCall)
class ProviderCallAdmin(ReadOnlyAdmin):
    list_display = ("id", "run", "node_run", "attempt", "provider", "model", "tokens_in", "tokens_out", "cost", "latency_ms", "error_class")
    list_filter = ("provider", "model", "error_class")
    search_fields = ("run__id",)


@admin.register(RunEvent)
class RunEventAdmin(ReadOnlyAdmin):
    list_display = ("id", "run", "kind", "node_id", "attempt", "created_at")
    list_filter = ("kind",)
    search_fields = ("run__id", "node_id")

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(OutboxMessage)
class OutboxMessageAdmin(ReadOnlyAdmin):
    list_display = ("id", "topic", "run", "node_id", "idempotency_key", "created_at")
    list_filter = ("topic",)
    search_fields = ("run__id", "idempotency_key", "topic")
