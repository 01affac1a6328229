from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseBadRequest
from django.urls import path, reverse
from django.utils.html import format_html

from cases.evidence import evidence_bundle_download, evidence_response
from cases.models import ApiClient, Case, CaseEvent, Customer
from cases.services import api_client_create, api_client_revoke, api_client_set_rate_limit
from channels.admin import contact_ledger_html, demo_phone_link
from miniapp.ratelimit import rate_parse


class ApiClientForm(forms.ModelForm):
    class Meta:
        model = ApiClient
        fields = ("name", "rate_limit")

    def clean_rate_limit(self) -> str:
        value = self.cleaned_data["rate_limit"].strip()
        try:
            rate_parse(value)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from exc
        return value


@admin.register(ApiClient)
class ApiClientAdmin(admin.ModelAdmin):
    form = ApiClientForm
    list_display = ("name", "key_prefix", "rate_limit", "created_at", "last_used_at", "revoked_at")
    search_fields = ("name",)
    actions = ["revoke_keys"]

    def get_fields(self, request, obj=None):
        return (
            ("name", "rate_limit")
            if obj is None
            else ("name", "key_prefix", "rate_limit", "created_at", "last_used_at", "revoked_at")
        )

    def get_readonly_fields(self, request, obj=None):
        return (
            ()
            if obj is None
            else ("name", "key_prefix", "created_at", "last_used_at", "revoked_at")
        )

    def save_model(self, request, obj, form, change):
        if change:
            api_client_set_rate_limit(client=obj, rate_limit=form.cleaned_data["rate_limit"])
            return
        client, raw_key = api_client_create(name=form.cleaned_data["name"])
        api_client_set_rate_limit(client=client, rate_limit=form.cleaned_data["rate_limit"])
        obj.pk = client.pk
        self.message_user(
            request,
            format_html(
                "API key for {}: <code>{}</code> — copy it now; it is shown only once.",
                client.name,
                raw_key,
            ),
            messages.WARNING,
        )

    def has_delete_permission(self, request, obj=None):
        return False  # revoke instead: cases keep a reference to the client that sent them

    @admin.action(description="Revoke selected API keys", permissions=["change"])
    def revoke_keys(self, request, queryset):
        for client in queryset:
            api_client_revoke(client=client)
        self.message_user(request, f"Revoked {queryset.count()} key(s).")


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = (
        "external_id",
        "name",
        "api_client",
        "preferred_channel",
        "timezone",
        "updated_at",
    )
    list_filter = ("api_client", "preferred_channel")
    search_fields = ("external_id", "name", "email", "phone")
    list_select_related = ("api_client",)
    exclude = ("known_fact_salt", "date_of_birth_hash", "postcode_hash", "account_last4_hash")
    readonly_fields = (
        "api_client",
        "external_id",
        "created_at",
        "updated_at",
        "known_facts_on_file",
        "contact_ledger",
        "demo_phone",
    )

    @admin.display(description="Known facts on file")
    def known_facts_on_file(self, obj):
        names = [
            label
            for label, digest in (
                ("date of birth", obj.date_of_birth_hash),
                ("postcode", obj.postcode_hash),
                ("account last 4", obj.account_last4_hash),
            )
            if digest
        ]
        return ", ".join(names) or "none"

    @admin.display(description="Contact ledger")
    def contact_ledger(self, obj):
        return contact_ledger_html(customer=obj) if obj.pk else "—"

    @admin.display(description="Demo phone")
    def demo_phone(self, obj):
        return demo_phone_link(obj) if obj.pk else "—"


class CaseEventInline(admin.TabularInline):
    model = CaseEvent
    fields = ("created_at", "kind", "actor", "data", "chain_position", "hash")
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ("created_at", "id")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Case)
class CaseAdmin(admin.ModelAdmin):
    list_display = ("id", "workflow", "customer", "state", "outcome", "triggered_at")
    list_filter = ("state", "outcome", "workflow__key")
    search_fields = ("event_id", "customer__external_id", "customer__name")
    list_select_related = ("workflow", "customer")
    date_hierarchy = "triggered_at"
    inlines = [CaseEventInline]
    readonly_fields = ["agent_page", *(f.name for f in Case._meta.fields), "contact_ledger"]
    show_full_result_count = False  # COUNT(*) over a million cases on every page is waste

    @admin.display(description="Agent's page")
    def agent_page(self, obj):
        url = reverse("agents-case", args=[obj.pk])
        return format_html('<a href="{}">Timeline in words, and the actions</a>', url)

    @admin.display(description="Contact ledger (every case of this customer)")
    def contact_ledger(self, obj):
        return contact_ledger_html(customer=obj.customer, case=obj)

    def get_urls(self):
        evidence = path(
            "<path:object_id>/evidence/",
            self.admin_site.admin_view(self.evidence_view),
            name="cases_case_evidence",
        )
        return [evidence, *super().get_urls()]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "can_view_evidence": request.user.has_perm("cases.view_evidence"),
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def evidence_view(self, request, object_id):
        """The case's evidence bundle: the print-friendly page, or `?format=json`."""
        if not request.user.has_perm("cases.view_evidence"):
            raise PermissionDenied
        case = self.get_object(request, unquote(object_id))
        if case is None:
            raise Http404("No such case.")
        fmt = request.GET.get("format", "html")
        if fmt not in ("html", "json"):
            return HttpResponseBadRequest("format must be html or json.")
        bundle = evidence_bundle_download(case=case, fmt=fmt, user=request.user)
        return evidence_response(bundle=bundle, fmt=fmt)

    def has_add_permission(self, request):
        return False  # cases come from triggers

    def has_delete_permission(self, request, obj=None):
        return False
