from django.contrib import admin

from .models import BreakerTransition, CircuitBreakerState, ModelPrice


class ReadOnlyAdmin(admin.ModelAdmin):
    """Breaker state is written by the breaker only; the admin shows it."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(CircuitBreakerState)
class CircuitBreakerStateAdmin(ReadOnlyAdmin):
    list_display = ("provider", "model", "state", "failures", "opened_at", "probe_started_at", "updated_at")
    list_filter = ("state", "provider")
    search_fields = ("provider", "model")


@admin.register(BreakerTransition)
class BreakerTransitionAdmin(ReadOnlyAdmin):
    list_display = ("at", "provider", "model", "from_state", "to_state", "reason")
    list_filter = ("to_state", "provider")
    search_fields = ("provider", "model", "reason")
    date_hierarchy = "at"

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    """The model registry and price table; a change applies to calls within a few seconds."""

    list_display = ("model", "provider", "input_per_million", "output_per_million", "currency", "active", "updated_at")
    list_editable = ("input_per_million", "output_per_million", "active")
    list_filter = ("provider", "active")
    search_fields = ("model", "provider", "notes")
