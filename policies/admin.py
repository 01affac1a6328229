"""The operations staff's admin for workflows: edit a draft's whole blueprint, see what stops
it from launching, preview and dry-run it, and take it through four-eyes approval.

Every state change is one call to a service in policies/services.py. This module decides
who may press which button and shows the results as pages staff can read."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models
from django.forms.fields import InvalidJSONInput
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from policies.blueprint import BlueprintError, workflow_launch_gaps
from policies.catalogue import ACTIONS, EVIDENCE_KINDS, EXCEPTION_TYPES, IdentityLevel
from policies.contracts import COMMON_KEYS, ContractError, contract_compile
from policies.models import ExceptionRoute, ForkRule, Workflow, WorkflowAction, WorkflowApproval
from policies.rules import _type_name, sample_contexts
from policies.services import (
    ApprovalError,
    workflow_approve,
    workflow_authors,
    workflow_dry_run,
    workflow_new_version,
    workflow_pause,
    workflow_preview,
    workflow_reject,
    workflow_request_activation,
    workflow_resume,
)

DRAFT = Workflow.Status.DRAFT
PENDING = WorkflowApproval.Decision.PENDING
IDENTITY_LABELS = dict(IdentityLevel.CHOICES)


def _workflow_perm(request: HttpRequest, action: str) -> bool:
    """Model-level permission on workflows; the blueprint rows share it, because a
    blueprint is changed and approved as one thing."""
    return request.user.has_perm(f"policies.{get_permission_codename(action, Workflow._meta)}")


def _can_approve(request: HttpRequest) -> bool:
    return request.user.has_perm("policies.approve_workflow")


def _editable(workflow: Workflow | None) -> bool:
    """Only drafts change; a live version changes by becoming a new draft version."""
    return workflow is None or workflow.status == DRAFT


# --- forms -----------------------------------------------------------------------------------


class IndentedJSONField(forms.JSONField):
    """JSON shown indented, so a contract reads one field per block instead of one line."""

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, InvalidJSONInput):
            return value
        return json.dumps(value, ensure_ascii=False, indent=2, cls=self.encoder)


def _json_textarea(rows: int) -> dict[str, Any]:
    return {
        "form_class": IndentedJSONField,
        "widget": forms.Textarea(attrs={"rows": rows, "cols": 90, "class": "vLargeTextField"}),
    }


class WorkflowForm(forms.ModelForm):
    class Meta:
        model = Workflow
        fields = (
            "key",
            "name",
            "completion_definition",
            "writeback_target",
            "retention_days",
            "contract",
            "pilot_mode",
            "pilot_allow_list",
            "pilot_percentage",
            "pilot_daily_cap",
            "pilot_fallback",
        )

    def clean_key(self) -> str:
        key = self.cleaned_data["key"]
        if self.instance._state.adding and Workflow.objects.filter(key=key).exists():
            raise ValidationError(
                "A workflow with this key exists; open its latest version and use "
                "“Create new draft version”."
            )
        return key


class WorkflowActionForm(forms.ModelForm):
    evidence = forms.MultipleChoiceField(
        choices=list(EVIDENCE_KINDS.items()),
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="What is recorded when the customer takes this action.",
    )

    class Meta:
        model = WorkflowAction
        fields = (
            "action",
            "position",
            "recommended",
            "eligible_when",
            "identity_level",
            "params",
            "evidence",
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "identity_level" in self.fields:
            # Left empty, WorkflowAction.clean takes the catalogue's level for the action.
            self.fields["identity_level"].required = False
            self.fields["identity_level"].help_text = "Empty: the action's catalogue default."

    def clean_evidence(self) -> list[str]:
        # Keep the row's own order, so an unrelated edit does not show up in the approval
        # summary as an evidence change.
        chosen = self.cleaned_data["evidence"]
        kept = [kind for kind in self.instance.evidence or [] if kind in chosen]
        return kept + [kind for kind in chosen if kind not in kept]


class SampleTriggerForm(forms.Form):
    trigger = IndentedJSONField(
        label="Sample trigger",
        widget=forms.Textarea(attrs={"rows": 24, "cols": 90, "class": "vLargeTextField"}),
        help_text="JSON with customer and data, as a source system sends it; workflow and "
        "event_id may be left out.",
    )

    def clean_trigger(self) -> dict[str, Any]:
        trigger = self.cleaned_data["trigger"]
        if not isinstance(trigger, dict):
            raise ValidationError("Paste one JSON object with customer and data.")
        return trigger


# --- what the pages show ---------------------------------------------------------------------


def action_catalogue() -> list[dict[str, Any]]:
    """Each action's bounds and evidence, for the help block beside the action rows."""
    return [
        {
            "key": spec.key,
            "label": spec.label,
            "identity_level": IDENTITY_LABELS[spec.identity_level],
            "params": [
                {
                    "name": param.name,
                    "gives": _type_name(param.kind),
                    "help": param.help,
                    "required": param.required,
                    "default": param.default,
                }
                for param in spec.params
            ],
            "evidence": [(kind, EVIDENCE_KINDS[kind]) for kind in spec.evidence],
        }
        for spec in ACTIONS.values()
    ]


def _sample_within_rules(spec: dict[str, Any], value: Any) -> Any:
    """Move a type's sample value inside the field's own rules (min, max, lengths)."""
    kind = spec["type"]
    if kind in ("integer", "decimal"):
        number = int if kind == "integer" else float
        if "gt" in spec and value <= float(spec["gt"]):
            value = float(spec["gt"]) + 1
        if "min" in spec and value < float(spec["min"]):
            value = float(spec["min"])
        if "lt" in spec and value >= float(spec["lt"]):
            value = float(spec["lt"]) - 1
        if "max" in spec and value > float(spec["max"]):
            value = float(spec["max"])
        return number(value)
    if kind == "date":
        return min(max(value, spec.get("min", value)), spec.get("max", value))
    if kind == "string":
        return value.ljust(spec.get("min_length", 0), "x")[: spec.get("max_length", len(value))]
    if kind == "list":
        wanted = max(1, spec.get("min_items", 1))
        pool = list(spec.get("choices") or [f"sample {n + 1}" for n in range(wanted)])
        return pool[:wanted]
    return value


def sample_trigger(workflow: Workflow) -> dict[str, Any]:
    """A trigger that passes this version's contract, to start a preview from."""
    try:
        contract_compile(workflow.contract)
        contract = workflow.contract
    except ContractError:
        contract = []
    data = sample_contexts(contract)[0]["data"]
    return {
        "customer": {
            "external_id": "preview-customer",
            "name": "Sample Customer",
            "timezone": "Europe/London",
            "locale": "en-GB",
            "flags": [],
            "consent": {"sms": True, "email": True},
        },
        "segment": "retail",
        "data": {spec["name"]: _sample_within_rules(spec, data[spec["name"]]) for spec in contract},
    }


AMOUNT_BOUNDS = {"amount", "min_amount", "max_amount", "total_amount"}


def _bound_lines(name: str, value: Any, currency: str) -> list[str]:
    if name == "plans":
        return [
            f"{plan['instalments']} {plan['frequency']} payments of "
            f"{plan['instalment_amount']} {currency} (last {plan['final_amount']}), "
            f"first due {plan['first_due']}"
            for plan in value
        ]
    if isinstance(value, bool):
        return ["yes" if value else "no"]
    if isinstance(value, list):
        return [", ".join(map(str, value))]
    if name in AMOUNT_BOUNDS and currency:
        return [f"{value} {currency}"]
    return [str(value)]


def offer_display(workflow: Workflow, result: dict[str, Any]) -> dict[str, Any]:
    """workflow_preview's answer, shaped for the page."""
    offer = result["offer"]
    currency = offer.get("currency", "")
    fired = set(result["forks"])
    return {
        "policy": offer["policy"],
        "today": offer["today"],
        "actions": [
            {
                "label": item["label"],
                "recommended": item["recommended"],
                "identity_level": IDENTITY_LABELS.get(item["identity_level"], ""),
                "bounds": [
                    (name.replace("_", " ").capitalize(), _bound_lines(name, value, currency))
                    for name, value in item["bounds"].items()
                ],
                "evidence": [EVIDENCE_KINDS.get(kind, kind) for kind in item["evidence"]],
            }
            for item in offer["actions"]
        ],
        "excluded": [
            {
                "label": ACTIONS[item["action"]].label,
                "rule": "the action's bounds" if item["rule"] == "bounds" else item["rule"],
                "reason": item["reason"],
            }
            for item in offer["excluded"]
        ],
        "forks": [row for row in workflow.fork_rules.all() if row.name in fired],
    }


def dry_run_display(workflow: Workflow, result: dict[str, Any]) -> dict[str, Any]:
    total = result["cases"]

    def share(count: int) -> str:
        return f"{count / total:.0%}" if total else "—"

    offered = [
        (row.get_action_display(), result["offered"].get(row.action, 0))
        for row in workflow.actions.all()
    ]
    offered.append(("Nothing to offer", result["offered"].get("(nothing)", 0)))
    forked = [
        (row.name, row.get_route_display(), result["forked"].get(row.name, 0))
        for row in workflow.fork_rules.all()
    ]
    return {
        "cases": total,
        "offered": [(label, count, share(count)) for label, count in offered],
        "forked": [(name, route, count, share(count)) for name, route, count in forked],
        "not_forked": total - sum(result["forked"].values()),
    }


SECTION_LABELS = {
    "key": "Key",
    "name": "Name",
    "completion_definition": "Completion definition",
    "writeback_target": "Writeback target",
    "retention_days": "Retention (days after closing)",
    "contract": "Trigger data contract",
    "actions": "Actions",
    "fork_rules": "Fork rules",
    "exception_routes": "Exception routes",
    "pilot": "Pilot",
}
# How the items of a list section are told apart from one version to the next.
ITEM_KEYS = {"contract": "name", "actions": "action", "fork_rules": "name"}
ITEM_LABELS = {
    "actions": {key: spec.label for key, spec in ACTIONS.items()},
    "exception_routes": dict(EXCEPTION_TYPES),
}


def _plain(value: Any) -> str:
    """A spec value as a line of text: approvers read rules, not JSON."""
    if value is None or value == "" or value == [] or value == {}:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return "; ".join(f"{key}: {_plain(item)}" for key, item in value.items())
    if isinstance(value, list):
        return ", ".join(
            f"({_plain(item)})" if isinstance(item, dict) else str(item) for item in value
        )
    return str(value)


def _items(section: str, value: Any) -> dict[str, Any] | None:
    if isinstance(value, dict):
        return value
    key = ITEM_KEYS.get(section)
    if key and isinstance(value, list) and all(isinstance(item, dict) for item in value):
        return {str(item.get(key, index)): item for index, item in enumerate(value)}
    return None


def _changed(label: str, old: Any, new: Any) -> list[tuple[str, str, str]]:
    """One row per changed key, down through mappings (an action's params, a route)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            row
            for key in dict.fromkeys([*old, *new])
            if old.get(key) != new.get(key)
            for row in _changed(f"{label} › {key.replace('_', ' ')}", old.get(key), new.get(key))
        ]
    return [(label, _plain(old), _plain(new))]


def _section_rows(section: str, before: Any, after: Any) -> list[tuple[str, str, str]]:
    old_items, new_items = _items(section, before), _items(section, after)
    if old_items is None or new_items is None:
        return [("", _plain(before), _plain(after))]
    labels = ITEM_LABELS.get(section, {})
    rows = []
    for name in dict.fromkeys([*old_items, *new_items]):
        old, new = old_items.get(name), new_items.get(name)
        label = labels.get(name, name)
        if old is None or new is None:
            rows.append(
                (
                    label,
                    "(not there)" if old is None else _plain(old),
                    "(removed)" if new is None else _plain(new),
                )
            )
        elif old != new:
            rows.extend(_changed(label, old, new))
    if set(old_items) == set(new_items) and list(old_items) != list(new_items):
        order = (
            [labels.get(name, name) for name in old_items],
            [labels.get(name, name) for name in new_items],
        )
        rows.append(("Order", ", ".join(order[0]), ", ".join(order[1])))
    return rows


def summary_sections(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """An approval request's summary (section → before/after) as rows of plain text."""
    return [
        {
            "label": SECTION_LABELS.get(section, section),
            "rows": _section_rows(section, change.get("before"), change.get("after")),
        }
        for section, change in summary.items()
        if isinstance(change, dict)
    ]


# --- workflow versions -----------------------------------------------------------------------


class BlueprintInline:
    """Rows of a workflow's blueprint: editable only while their version is a draft, under
    the workflow's own permissions. `obj` is the workflow being shown."""

    extra = 0

    def has_view_permission(self, request: HttpRequest, obj: Workflow | None = None) -> bool:
        return _workflow_perm(request, "view") or _workflow_perm(request, "change")

    def has_add_permission(self, request: HttpRequest, obj: Workflow | None) -> bool:
        return _editable(obj) and _workflow_perm(request, "change")

    def has_change_permission(self, request: HttpRequest, obj: Workflow | None = None) -> bool:
        return _editable(obj) and _workflow_perm(request, "change")

    def has_delete_permission(self, request: HttpRequest, obj: Workflow | None = None) -> bool:
        return _editable(obj) and _workflow_perm(request, "change")


class WorkflowActionInline(BlueprintInline, admin.StackedInline):
    model = WorkflowAction
    form = WorkflowActionForm
    verbose_name = "action"
    template = "admin/policies/workflow/action_inline.html"
    fields = (
        ("action", "position", "recommended"),
        "eligible_when",
        "identity_level",
        "params",
        "evidence",
    )
    formfield_overrides = {
        models.JSONField: _json_textarea(rows=5),
        models.TextField: {"widget": forms.Textarea(attrs={"rows": 2, "cols": 90})},
    }


class ForkRuleInline(BlueprintInline, admin.TabularInline):
    model = ForkRule
    fields = ("position", "name", "when", "route", "priority", "reason")
    formfield_overrides = {models.TextField: {"widget": forms.Textarea(attrs={"rows": 2})}}


class ExceptionRouteInline(BlueprintInline, admin.TabularInline):
    model = ExceptionRoute
    fields = (
        "exception_type",
        "outcome",
        "max_retries",
        "alternative_action",
        "priority",
        "priority_rule",
        "close_reason",
    )
    formfield_overrides = {models.TextField: {"widget": forms.Textarea(attrs={"rows": 2})}}


class WorkflowApprovalInline(admin.TabularInline):
    """The version's approval history, read-only: who asked, who decided, when and why."""

    model = WorkflowApproval
    verbose_name_plural = "Approval requests"
    fields = ("requested_by", "requested_at", "decision", "decided_by", "decided_at", "note")
    readonly_fields = fields
    show_change_link = True
    can_delete = False
    extra = 0

    def has_add_permission(self, request: HttpRequest, obj: Workflow | None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Workflow | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Workflow | None = None) -> bool:
        return False


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    form = WorkflowForm
    list_display = ("key", "version", "name", "status", "activated_at")
    list_filter = ("status",)
    search_fields = ("key", "name")
    inlines = [WorkflowActionInline, ForkRuleInline, ExceptionRouteInline, WorkflowApprovalInline]
    formfield_overrides = {models.JSONField: _json_textarea(rows=14)}

    class Media:
        css = {"all": ("policies/admin.css",)}

    # -- permissions: drafts change, everything else is read-only and kept

    def has_change_permission(self, request: HttpRequest, obj: Workflow | None = None) -> bool:
        return super().has_change_permission(request, obj) and _editable(obj)

    def has_delete_permission(self, request: HttpRequest, obj: Workflow | None = None) -> bool:
        # A draft that was ever sent for approval keeps its approval record, so it stays.
        if obj is not None and (not _editable(obj) or obj.approvals.exists()):
            return False
        return super().has_delete_permission(request, obj)

    def get_actions(self, request: HttpRequest) -> dict:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    # -- the form

    def get_fieldsets(self, request: HttpRequest, obj: Workflow | None = None) -> list:
        editable = self.has_change_permission(request, obj) or obj is None
        fieldsets = [
            (
                None,
                {
                    "fields": [
                        "key",
                        "version",
                        "name",
                        "status",
                        "completion_definition",
                        "writeback_target",
                        "retention_days",
                    ]
                },
            ),
            ("Trigger data contract", {"fields": ["contract" if editable else "contract_fields"]}),
            (
                "Pilot",
                {
                    "fields": [
                        "pilot_mode",
                        "pilot_allow_list",
                        "pilot_percentage",
                        "pilot_daily_cap",
                        "pilot_fallback",
                    ]
                },
            ),
        ]
        if obj is not None:
            fieldsets.append(
                ("Record", {"fields": ["created_by", "created_at", "updated_at", "activated_at"]})
            )
        return fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: Workflow | None = None) -> list:
        fields = [
            "version",
            "status",
            "contract_fields",
            "created_by",
            "created_at",
            "updated_at",
            "activated_at",
        ]
        return fields if obj is None else ["key", *fields]

    @admin.display(description="Fields")
    def contract_fields(self, obj: Workflow) -> str:
        rows = [
            {
                "name": spec.get("name"),
                "type": spec.get("type"),
                "required": spec.get("required", True),
                "rules": _plain({k: v for k, v in spec.items() if k not in COMMON_KEYS}),
                "description": spec.get("description") or spec.get("label") or "",
            }
            for spec in obj.contract
            if isinstance(spec, dict)
        ]
        return render_to_string("admin/policies/workflow/contract_fields.html", {"fields": rows})

    def save_model(self, request: HttpRequest, obj: Workflow, form, change: bool) -> None:
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)
        obj.editors.add(request.user)

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        pending = WorkflowApproval.objects.filter(decision=PENDING).count()
        return super().changelist_view(
            request, {**(extra_context or {}), "pending_approvals": pending}
        )

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context=None):
        context = {**(extra_context or {}), "action_catalogue": action_catalogue()}
        return super().add_view(request, form_url, context)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None
    ):
        context = {**(extra_context or {}), "action_catalogue": action_catalogue()}
        # Read fresh: on a POST with errors the form's instance holds the unsaved input.
        workflow = self.get_object(request, object_id)
        if workflow is not None:
            context.update(
                launch_gaps=workflow_launch_gaps(workflow),
                can_change_workflow=_workflow_perm(request, "change"),
                pending_approval=workflow.approvals.filter(decision=PENDING).first(),
            )
        return super().change_view(request, object_id, form_url, context)

    # -- buttons and pages of one version

    def get_urls(self) -> list:
        def route(name: str, view, *, post_only: bool = False):
            if post_only:
                view = require_POST(view)
            return path(
                f"<path:object_id>/{name.replace('_', '-')}/",
                self.admin_site.admin_view(view),
                name=f"policies_workflow_{name}",
            )

        return [
            route("preview", self.preview_view),
            route("dry_run", self.dry_run_view),
            route("new_version", self.new_version_view, post_only=True),
            route("request_activation", self.request_activation_view, post_only=True),
            route("pause", self.pause_view, post_only=True),
            route("resume", self.resume_view, post_only=True),
            *super().get_urls(),
        ]

    def _workflow(self, request: HttpRequest, object_id: str, permission: str) -> Workflow:
        allowed = (
            self.has_view_permission(request)
            if permission == "view"
            else _workflow_perm(request, "change")
        )
        if not allowed:
            raise PermissionDenied
        workflow = self.get_object(request, object_id)
        if workflow is None:
            raise Http404("No such workflow version.")
        return workflow

    def _back_to(self, workflow: Workflow) -> HttpResponse:
        return redirect(reverse("admin:policies_workflow_change", args=[workflow.pk]))

    def _page(
        self, request: HttpRequest, workflow: Workflow, template: str, **context
    ) -> HttpResponse:
        return TemplateResponse(
            request,
            f"admin/policies/workflow/{template}",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "original": workflow,
                "subtitle": str(workflow),
                **context,
            },
        )

    def preview_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        workflow = self._workflow(request, object_id, "view")
        form = SampleTriggerForm(
            request.POST if request.method == "POST" else None,
            initial={"trigger": sample_trigger(workflow)},
        )
        context: dict[str, Any] = {"title": "Preview the offer", "form": form}
        if form.is_bound and form.is_valid():
            try:
                result = workflow_preview(workflow=workflow, trigger=form.cleaned_data["trigger"])
            except BlueprintError as exc:
                context["problems"] = exc.problems
            else:
                if "errors" in result:
                    context["trigger_errors"] = sorted(result["errors"].items())
                else:
                    context["offer"] = offer_display(workflow, result)
        return self._page(request, workflow, "preview.html", **context)

    def dry_run_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        workflow = self._workflow(request, object_id, "view")
        context: dict[str, Any] = {"title": "Dry run over recent cases"}
        try:
            context["result"] = dry_run_display(workflow, workflow_dry_run(workflow=workflow))
        except BlueprintError as exc:
            context["problems"] = exc.problems
        return self._page(request, workflow, "dry_run.html", **context)

    def new_version_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        workflow = self._workflow(request, object_id, "change")
        try:
            draft = workflow_new_version(workflow=workflow, user=request.user)
        except ValidationError as exc:
            self.message_user(
                request, "This version cannot be copied: " + " ".join(exc.messages), messages.ERROR
            )
            return self._back_to(workflow)
        self.log_change(request, workflow, f"Create new draft version: v{draft.version}.")
        self.message_user(
            request,
            f"You are editing draft version {draft.version}. It takes triggers only once it is "
            "approved; running cases keep the version they started with.",
            messages.SUCCESS,
        )
        return self._back_to(draft)

    def request_activation_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        workflow = self._workflow(request, object_id, "change")
        try:
            approval = workflow_request_activation(workflow=workflow, user=request.user)
        except ApprovalError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return self._back_to(workflow)
        self.log_change(request, workflow, "Requested activation.")
        self.message_user(
            request,
            format_html(
                'Version {} is <a href="{}">awaiting approval</a> by a second person with the '
                "approver role.",
                workflow.version,
                reverse("admin:policies_workflowapproval_change", args=[approval.pk]),
            ),
            messages.SUCCESS,
        )
        return self._back_to(workflow)

    def pause_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._switch(request, object_id, workflow_pause, "Paused")

    def resume_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._switch(request, object_id, workflow_resume, "Resumed")

    def _switch(self, request: HttpRequest, object_id: str, service, done: str) -> HttpResponse:
        workflow = self._workflow(request, object_id, "change")
        try:
            service(workflow=workflow)
        except ApprovalError as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            self.log_change(request, workflow, f"{done}.")
            self.message_user(request, f"{done} {workflow}.", messages.SUCCESS)
        return self._back_to(workflow)


# --- approval requests -----------------------------------------------------------------------


@admin.register(WorkflowApproval)
class WorkflowApprovalAdmin(admin.ModelAdmin):
    """Four-eyes requests. Nothing here is edited or deleted: a decision is made with the
    Approve and Reject buttons, and the record of who asked and who decided is kept."""

    list_display = (
        "workflow",
        "requested_by",
        "requested_at",
        "what_changed_short",
        "decision",
        "decided_by",
        "decided_at",
    )
    list_filter = ("decision", "workflow__key")
    list_select_related = ("workflow", "requested_by", "decided_by")
    fields = (
        "workflow",
        "requested_by",
        "requested_at",
        "what_changed",
        "decision",
        "decided_by",
        "decided_at",
        "note",
    )
    readonly_fields = fields

    class Media:
        css = {"all": ("policies/admin.css",)}

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # a request is made with "Request activation" on a draft

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.display(description="What changed")
    def what_changed_short(self, obj: WorkflowApproval) -> str:
        if obj.summary.get("new_workflow"):
            return "New workflow"
        return ", ".join(section["label"] for section in summary_sections(obj.summary)) or "—"

    @admin.display(description="What changed against the active version")
    def what_changed(self, obj: WorkflowApproval) -> str:
        return render_to_string(
            "admin/policies/workflowapproval/summary.html",
            {
                "new_workflow": bool(obj.summary.get("new_workflow")),
                "sections": summary_sections(obj.summary),
                "workflow_url": reverse("admin:policies_workflow_change", args=[obj.workflow_id]),
            },
        )

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None
    ):
        context = dict(extra_context or {})
        approval = self.get_object(request, object_id)
        if approval is not None:
            authors = workflow_authors(workflow=approval.workflow) | {approval.requested_by_id}
            context.update(
                can_approve=_can_approve(request),
                can_reject=self._may_reject(request, approval),
                is_author=request.user.pk in authors,
            )
        return super().change_view(request, object_id, form_url, context)

    @staticmethod
    def _may_reject(request: HttpRequest, approval: WorkflowApproval) -> bool:
        # An approver rejects; the requester may withdraw their own request.
        return _can_approve(request) or request.user.pk == approval.requested_by_id

    def get_urls(self) -> list:
        return [
            path(
                "<path:object_id>/approve/",
                self.admin_site.admin_view(require_POST(self.approve_view)),
                name="policies_workflowapproval_approve",
            ),
            path(
                "<path:object_id>/reject/",
                self.admin_site.admin_view(require_POST(self.reject_view)),
                name="policies_workflowapproval_reject",
            ),
            *super().get_urls(),
        ]

    def _approval(self, request: HttpRequest, object_id: str) -> WorkflowApproval:
        if not self.has_view_permission(request):
            raise PermissionDenied
        approval = self.get_object(request, object_id)
        if approval is None:
            raise Http404("No such approval request.")
        return approval

    def _back_to(self, approval: WorkflowApproval) -> HttpResponse:
        return redirect(reverse("admin:policies_workflowapproval_change", args=[approval.pk]))

    def approve_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        approval = self._approval(request, object_id)
        if not _can_approve(request):
            raise PermissionDenied
        try:
            workflow = workflow_approve(
                approval=approval, user=request.user, note=request.POST.get("note", "")
            )
        except ApprovalError as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            self.message_user(
                request,
                f"Approved: {workflow} now takes triggers; the version before it is retired "
                "and its running cases keep it.",
                messages.SUCCESS,
            )
        return self._back_to(approval)

    def reject_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        approval = self._approval(request, object_id)
        if not self._may_reject(request, approval):
            raise PermissionDenied
        try:
            workflow_reject(approval=approval, user=request.user, note=request.POST.get("note", ""))
        except ApprovalError as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            self.message_user(
                request,
                f"Rejected: {approval.workflow} is a draft again and can be changed.",
                messages.SUCCESS,
            )
        return self._back_to(approval)
