"""The exceptions queue (the Task changelist) and the offer approvals. The queue reads open
tasks only, through the partial index task_queue_order, with everything it shows joined
in: a page costs the same few queries with ten tasks or a million cases behind them."""

from __future__ import annotations

import uuid
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from agents import services
from agents.models import OfferProposal, Task, TaskKind, TaskStatus
from agents.selectors import overdue_q, queue_tasks, task_times
from policies.models import Workflow


class QueueActionForm(ActionForm):
    """The changelist's action bar, with the person to assign to."""

    assignee = forms.ModelChoiceField(queryset=None, required=False, label="Assign to")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["assignee"].queryset = services.assignable_users()


class AssigneeFilter(admin.SimpleListFilter):
    title = "assignee"
    parameter_name = "assignee"

    def lookups(self, request, model_admin):
        return [
            ("mine", "Mine"),
            ("unassigned", "Unassigned"),
            *((str(u.pk), u.username) for u in services.assignable_users().only("pk", "username")),
        ]

    def queryset(self, request, queryset):
        value = self.value()
        if value == "mine":
            return queryset.filter(assignee=request.user)
        if value == "unassigned":
            return queryset.filter(assignee__isnull=True)
        if value and value.isdigit():
            return queryset.filter(assignee_id=int(value))
        return queryset


class WorkflowFilter(admin.SimpleListFilter):
    title = "workflow"
    parameter_name = "workflow"

    def lookups(self, request, model_admin):
        keys = Workflow.objects.order_by("key").values_list("key", flat=True).distinct()
        return [(key, key) for key in keys]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(case__workflow__key=self.value())
        return queryset


class ReasonFilter(admin.SimpleListFilter):
    title = "reason"
    parameter_name = "reason"

    def lookups(self, request, model_admin):
        # Reasons of open tasks: the partial index bounds this to the queue's size.
        reasons = (
            Task.objects.filter(status=TaskStatus.OPEN, kind=TaskKind.EXCEPTION)
            .order_by("reason")
            .values_list("reason", flat=True)
            .distinct()[:50]
        )
        return [(reason, reason.replace("_", " ")) for reason in reasons]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(reason=self.value())
        return queryset


class BreachedFilter(admin.SimpleListFilter):
    title = "SLA"
    parameter_name = "breached"

    def lookups(self, request, model_admin):
        return [("yes", "Breached / overdue"), ("no", "Within SLA")]

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "yes":
            return queryset.filter(overdue_q(now))
        if self.value() == "no":
            return queryset.exclude(overdue_q(now))
        return queryset


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = (
        "case_page",
        "kind",
        "reason_text",
        "workflow",
        "customer",
        "age",
        "priority",
        "due",
        "assignee_name",
        "claim_to_action",
        "handle_time",
    )
    list_display_links = None
    list_filter = ("kind", ReasonFilter, WorkflowFilter, AssigneeFilter, BreachedFilter)
    search_fields = ("case__customer__external_id", "case__customer__name", "case__event_id")
    search_help_text = "Customer external id or name, case id, or the source's event id."
    show_full_result_count = False
    # Facet counts are a COUNT per filter choice on every page: not over a large queue.
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 50
    actions = ["claim", "assign", "unassign"]
    action_form = QueueActionForm

    class Media:
        css = {"all": ("agents/admin.css",)}

    def get_queryset(self, request: HttpRequest) -> QuerySet[Task]:
        return queue_tasks()

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str):
        """A case id is matched exactly; external ids and event ids exactly; names by
        their start. No %term% scan over a million customers."""
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            return queryset.filter(case_id=uuid.UUID(term)), False
        except ValueError:
            pass
        return (
            queryset.filter(
                Q(case__customer__external_id=term)
                | Q(case__event_id=term)
                | Q(case__customer__name__istartswith=term)
            ),
            False,
        )

    # -- permissions: the queue is read by viewers, worked by agents; tasks change only
    # through the services.

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_view_permission(request, obj) or request.user.has_perm(
            services.WORK_QUEUE
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_work_queue_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(services.WORK_QUEUE)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        task = Task.objects.filter(pk=object_id).only("case_id").first()
        if task is None or not self.has_view_permission(request):
            raise PermissionDenied
        from django.shortcuts import redirect

        return redirect("agents-case", case_id=task.case_id)

    # -- columns

    @admin.display(description="Case")
    def case_page(self, task: Task) -> str:
        url = reverse("agents-case", args=[task.case_id])
        return format_html('<a href="{}">{}</a>', url, str(task.case_id)[:13] + "…")

    @admin.display(description="Reason", ordering="reason")
    def reason_text(self, task: Task) -> str:
        return task.reason.replace("_", " ")

    @admin.display(description="Workflow")
    def workflow(self, task: Task) -> str:
        return f"{task.case.workflow.key} v{task.case.workflow.version}"

    @admin.display(description="Customer")
    def customer(self, task: Task) -> str:
        customer = task.case.customer
        return (
            f"{customer.name} ({customer.external_id})" if customer.name else customer.external_id
        )

    @admin.display(description="Age")
    def age(self, task: Task) -> str:
        return task_times(task)["age"]

    @admin.display(description="Due", ordering="due_at")
    def due(self, task: Task) -> str:
        local = timezone.localtime(task.due_at)
        text = f"{local:%d %b %H:%M}"
        if task.kind == TaskKind.CALLBACK and task.window_end:
            text += f"–{timezone.localtime(task.window_end):%H:%M}"
        if task.is_overdue():
            label = "overdue" if task.kind == TaskKind.CALLBACK else "SLA breached"
            return format_html('<span class="agents-overdue">{} · {}</span>', text, label)
        return text

    @admin.display(description="Assignee")
    def assignee_name(self, task: Task) -> str:
        return task.assignee.username if task.assignee else "—"

    @admin.display(description="Claim → action")
    def claim_to_action(self, task: Task) -> str:
        return task_times(task)["claim_to_action"]

    @admin.display(description="Handle time")
    def handle_time(self, task: Task) -> str:
        return task_times(task)["handle"]

    # -- actions

    def _each(self, request, queryset, run) -> None:
        done, refused = 0, []
        for task in queryset:
            try:
                run(task)
                done += 1
            except services.ActionRefused as exc:
                refused.append(f"case {task.case_id}: {exc}")
        if done:
            self.message_user(request, f"{done} task(s) updated.")
        for problem in refused:
            self.message_user(request, problem, messages.ERROR)

    @admin.action(description="Claim selected tasks", permissions=["work_queue"])
    def claim(self, request, queryset):
        self._each(request, queryset, lambda t: services.task_claim(task=t, user=request.user))

    @admin.action(description="Assign selected tasks to…", permissions=["work_queue"])
    def assign(self, request, queryset):
        try:
            assignee = QueueActionForm().fields["assignee"].clean(request.POST.get("assignee"))
        except ValidationError:
            assignee = None
        if assignee is None:
            self.message_user(request, "Choose who to assign to.", messages.ERROR)
            return
        self._each(
            request,
            queryset,
            lambda t: services.task_assign(task=t, user=request.user, assignee=assignee),
        )

    @admin.action(description="Unassign selected tasks", permissions=["work_queue"])
    def unassign(self, request, queryset):
        self._each(request, queryset, lambda t: services.task_unassign(task=t, user=request.user))


class DecisionForm(ActionForm):
    note = forms.CharField(required=False, label="Note", max_length=500)


@admin.register(OfferProposal)
class OfferProposalAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "case_page",
        "action",
        "amount",
        "currency",
        "out_of_policy",
        "reason",
        "proposed_by",
        "status",
        "decided_by",
    )
    list_filter = ("status", "out_of_policy")
    list_select_related = ("proposed_by", "decided_by")
    show_full_result_count = False
    readonly_fields = [f.name for f in OfferProposal._meta.fields]
    actions = ["approve", "decline"]
    action_form = DecisionForm

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_view_permission(request, obj) or request.user.has_perm(
            services.APPROVE_OFFER
        )

    def has_approve_offer_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(services.APPROVE_OFFER)

    @admin.display(description="Case")
    def case_page(self, proposal: OfferProposal) -> str:
        url = reverse("agents-case", args=[proposal.case_id])
        return format_html('<a href="{}">{}</a>', url, str(proposal.case_id)[:13] + "…")

    def _decide(self, request, queryset, decide) -> None:
        note = request.POST.get("note", "")
        for proposal in queryset:
            try:
                decide(proposal, note)
                self.message_user(request, f"Offer for case {proposal.case_id}: done.")
            except services.ActionRefused as exc:
                self.message_user(request, f"Case {proposal.case_id}: {exc}", messages.ERROR)

    @admin.action(description="Approve and send selected offers", permissions=["approve_offer"])
    def approve(self, request, queryset):
        self._decide(
            request,
            queryset,
            lambda p, note: services.offer_approve(proposal=p, user=request.user, note=note),
        )

    @admin.action(
        description="Decline selected offers (give a note)", permissions=["approve_offer"]
    )
    def decline(self, request, queryset):
        self._decide(
            request,
            queryset,
            lambda p, note: services.offer_decline(proposal=p, user=request.user, note=note),
        )
