"""Staff admin for writeback: targets (with their breaker and a reset action), outcomes
(read-only, with operations and attempts, and a re-drive action) and reconciliation
reports. Every button calls a service; nothing here writes rows itself."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db import transaction
from django.utils.html import format_html, format_html_join

from cases.models import CaseEvent
from cases.services import IllegalTransition
from staff.services import audit_record
from writeback.breaker import breaker_reset
from writeback.models import Breaker, Operation, Outcome, ReconciliationReport, WritebackTarget
from writeback.services import OutcomeRefused, outcome_retry, writeback_reconcile


class ReadOnlyMixin:
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(WritebackTarget)
class WritebackTargetAdmin(admin.ModelAdmin):
    list_display = ("key", "name", "kind", "base_url_shown", "auth_kind", "breaker_state")
    readonly_fields = ("breaker_state", "breaker_failures", "breaker_opened_at")
    actions = ["reset_breaker"]
    fieldsets = (
        (None, {"fields": ("key", "name", "kind", "base_url", "drop_folder")}),
        ("Authentication", {"fields": ("auth_kind", "secret_env", "basic_username")}),
        (
            "Answers and retries",
            {
                "fields": (
                    "timeout_seconds",
                    "success_statuses",
                    "retryable_statuses",
                    "permanent_statuses",
                    "max_attempts",
                    "backoff_base_seconds",
                    "backoff_cap_seconds",
                )
            },
        ),
        (
            "Circuit breaker",
            {
                "fields": (
                    "breaker_threshold",
                    "breaker_cooldown_seconds",
                    "breaker_state",
                    "breaker_failures",
                    "breaker_opened_at",
                )
            },
        ),
        ("Operations per action", {"fields": ("operations",)}),
    )

    def _breaker(self, obj: WritebackTarget) -> Breaker | None:
        return Breaker.objects.filter(target=obj).first() if obj.pk else None

    @admin.display(description="Base URL")
    def base_url_shown(self, obj: WritebackTarget) -> str:
        return obj.base_url or "CORE_API_URL setting"

    @admin.display(description="Breaker")
    def breaker_state(self, obj: WritebackTarget) -> str:
        breaker = self._breaker(obj)
        return breaker.get_state_display() if breaker else Breaker.State.CLOSED.label

    @admin.display(description="Consecutive failures")
    def breaker_failures(self, obj: WritebackTarget) -> int:
        breaker = self._breaker(obj)
        return breaker.consecutive_failures if breaker else 0

    @admin.display(description="Opened at")
    def breaker_opened_at(self, obj: WritebackTarget):
        breaker = self._breaker(obj)
        return breaker.opened_at if breaker else None

    @admin.action(
        description="Reset the circuit breaker (the target is back)", permissions=["change"]
    )
    def reset_breaker(self, request, queryset) -> None:
        for target in queryset:
            breaker_reset(target=target)
        self.message_user(request, f"Reset {queryset.count()} breaker(s).", messages.SUCCESS)


class OperationInline(ReadOnlyMixin, admin.TabularInline):
    model = Operation
    fields = (
        "position",
        "key",
        "status",
        "attempts",
        "target_reference",
        "last_status",
        "last_error",
        "confirmed_at",
    )
    readonly_fields = fields
    extra = 0


@admin.register(Outcome)
class OutcomeAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("id", "case", "action", "target", "state", "attempts", "created_at")
    list_filter = ("state", "target", "action")
    search_fields = ("=id", "=case__id")
    list_select_related = ("case", "target")
    inlines = [OperationInline]
    actions = ["redrive"]
    fields = (
        "id",
        "case",
        "target",
        "action",
        "actor",
        "state",
        "attempts",
        "next_attempt_at",
        "lease_until",
        "last_error",
        "created_at",
        "confirmed_at",
        "attempt_list",
    )
    readonly_fields = fields

    @admin.display(description="Attempts (from the case timeline)")
    def attempt_list(self, obj: Outcome) -> str:
        events = CaseEvent.objects.filter(
            case_id=obj.case_id, kind="writeback_attempt", data__outcome=str(obj.pk)
        ).order_by("created_at", "id")
        rows = format_html_join(
            "",
            "<tr>" + "<td>{}</td>" * 5 + "<td>{} ms</td><td>{}</td></tr>",
            (
                (
                    e.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                    e.data.get("operation"),
                    e.data.get("step"),
                    e.data.get("result"),
                    e.data.get("status") or "—",
                    e.data.get("latency_ms"),
                    e.data.get("error_kind") or "",
                )
                for e in events
            ),
        )
        return format_html(
            "<table><tr><th>When</th><th>Operation</th><th>Step</th><th>Result</th>"
            "<th>Status</th><th>Latency</th><th>Error</th></tr>{}</table>",
            rows,
        )

    def has_redrive_permission(self, request) -> bool:
        # Outcomes are never edited here; "change" on them means re-driving one.
        return request.user.has_perm("writeback.change_outcome")

    @admin.action(description="Re-drive the selected failed outcomes", permissions=["redrive"])
    def redrive(self, request, queryset) -> None:
        done = 0
        for outcome in queryset:
            try:
                with transaction.atomic():
                    outcome_retry(outcome=outcome, user=request.user)
                    audit_record(
                        user=request.user,
                        action="redrive",
                        target=outcome.case,
                        detail={"outcome": str(outcome.pk)},
                        request=request,
                    )
                done += 1
            except (OutcomeRefused, IllegalTransition) as exc:
                self.message_user(request, f"{outcome.pk}: {exc}", messages.WARNING)
        if done:
            self.message_user(request, f"Re-driving {done} outcome(s).", messages.SUCCESS)


@admin.register(ReconciliationReport)
class ReconciliationReportAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = (
        "created_at",
        "source",
        "dry_run",
        "pending",
        "unacknowledged",
        "failed",
        "redriven",
        "confirmed",
        "still_open",
    )
    readonly_fields = [f.name for f in ReconciliationReport._meta.fields]
    actions = ["run_now"]

    def has_run_permission(self, request) -> bool:
        # Reports are written only by a run; "add" on them means starting one.
        return request.user.has_perm("writeback.add_reconciliationreport")

    @admin.action(description="Run a reconciliation now", permissions=["run"])
    def run_now(self, request, queryset) -> None:
        report = writeback_reconcile(source="admin")
        self.message_user(
            request,
            f"Re-drove {report.redriven}; {report.still_open} outcome(s) still open.",
            messages.SUCCESS,
        )
