from django.contrib import admin

from policies.models import Workflow


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    list_display = ("key", "version", "name", "status", "updated_at")
    list_filter = ("status",)
    search_fields = ("key", "name")
    readonly_fields = ("created_at", "updated_at")
