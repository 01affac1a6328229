from django.contrib import admin

from metrics.models import UnitCost


@admin.register(UnitCost)
class UnitCostAdmin(admin.ModelAdmin):
    """One row of unit costs (see metrics.services.unit_cost_get)."""

    list_display = (
        "currency",
        "sms_message",
        "email_message",
        "whatsapp_message",
        "agent_minute",
        "agent_minutes_per_case",
        "updated_at",
    )

    def has_add_permission(self, request):
        return not UnitCost.objects.exists()

    def has_delete_permission(self, request, obj=None):
        return False
