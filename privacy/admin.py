"""The data-protection ledger in the admin: read-only, like the timeline it sits beside."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from privacy.models import PrivacyRecord


@admin.register(PrivacyRecord)
class PrivacyRecordAdmin(admin.ModelAdmin):
    list_display = ("created_at", "action", "customer_ref", "source", "cases", "requested_by")
    list_filter = ("action", "source", "created_at")
    # Staff find an erasure by the reference of the request, or by the customer's reference
    # (`manage.py customer ref EXTERNAL_ID` prints it).
    search_fields = ("=customer_ref", "reference", "requested_by")
    date_hierarchy = "created_at"
    fields = (
        "created_at",
        "action",
        "customer_ref",
        "source",
        "requested_by",
        "reference",
        "cases",
        "details",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
