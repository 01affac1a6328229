"""Staff admin: the read-only audit trail, the authenticator devices (reset only), and the
throttled login form."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django_otp.plugins.otp_totp.admin import TOTPDeviceAdmin
from django_otp.plugins.otp_totp.models import TOTPDevice

from staff.forms import StaffLoginForm
from staff.models import AuditEntry
from staff.services import totp_reset

# The admin's login page refuses, before checking the password, once the failures for a
# username or an address have used their budget.
admin.site.login_form = StaffLoginForm


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """Append-only: nobody adds, changes or deletes an entry, Administrators included."""

    list_display = ("created_at", "kind", "action", "username", "target", "ip_address")
    list_filter = (
        "kind",
        "action",
        ("user", admin.RelatedOnlyFieldListFilter),
        "created_at",
    )
    search_fields = ("username", "action", "target_repr", "=target_id")
    date_hierarchy = "created_at"
    show_full_result_count = False  # no COUNT(*) over years of entries on every page
    fields = (
        "created_at",
        "kind",
        "action",
        "user",
        "username",
        "target",
        "changes_table",
        "detail",
        "ip_address",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        export = reverse("api:events-export")
        return super().changelist_view(
            request,
            {
                **(extra_context or {}),
                "export_ndjson": f"{export}?stream=audit&format=ndjson",
                "export_csv": f"{export}?stream=audit&format=csv",
            },
        )

    @admin.display(description="Target")
    def target(self, obj: AuditEntry) -> str:
        if not obj.target_type:
            return "—"
        return f"{obj.target_repr} ({obj.target_type} {obj.target_id})"

    @admin.display(description="Changes (before → after)")
    def changes_table(self, obj: AuditEntry) -> str:
        if not obj.changes:
            return "—"
        rows = format_html_join(
            "",
            "<tr><th>{}</th><td>{}</td><td>{}</td></tr>",
            (
                (name, *(change if isinstance(change, list) else ["", change]))
                for name, change in obj.changes.items()
            ),
        )
        return format_html(
            "<table><tr><th>Field</th><th>Before</th><th>After</th></tr>{}</table>", rows
        )


admin.site.unregister(TOTPDevice)


@admin.register(TOTPDevice)
class StaffDeviceAdmin(TOTPDeviceAdmin):
    """People enrol their own authenticator after signing in; the one thing done here is a
    reset (a lost phone), after which they enrol again. No adding a device for someone
    else, whose key would then be known to two people."""

    actions = ["reset_two_factor"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the reset action deletes, and records who did it

    def has_reset_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("otp_totp.delete_totpdevice")

    @admin.action(
        description="Reset two-factor sign-in (they set it up again at next sign-in)",
        permissions=["reset"],
    )
    def reset_two_factor(self, request: HttpRequest, queryset) -> None:
        people = {device.user for device in queryset.select_related("user")}
        for person in people:
            totp_reset(user=person, by=request.user, request=request)
        self.message_user(
            request,
            f"Reset two-factor sign-in for {len(people)} person(s).",
            messages.SUCCESS,
        )
