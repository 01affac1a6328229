"""Staff admin for webhooks: endpoints per API client (with their signing secret and a
rotate action) and deliveries (read-only, with every attempt, and a redeliver action).
Creating an endpoint, rotating its secret and redelivering call services; editing an
endpoint's URL, filter or active flag is a plain form save."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils.html import format_html

from hooks.models import EVENT_TYPE_CHOICES, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from hooks.services import (
    RedeliveryRefused,
    delivery_redeliver,
    webhook_endpoint_create,
    webhook_endpoint_rotate_secret,
    webhook_events_clean,
)


class WebhookEndpointForm(forms.ModelForm):
    url = forms.URLField(
        max_length=500, assume_scheme="https", help_text="Where deliveries are POSTed."
    )
    events = forms.MultipleChoiceField(
        choices=EVENT_TYPE_CHOICES,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Leave all unticked to receive every state change.",
    )

    class Meta:
        model = WebhookEndpoint
        fields = ("api_client", "url", "description", "active", "events")

    def clean_url(self) -> str:
        url = self.cleaned_data["url"]
        if not url.lower().startswith(("https://", "http://")):
            raise forms.ValidationError("The URL must start with https:// (or http://).")
        return url

    def clean_events(self) -> list[str]:
        try:
            return webhook_events_clean(self.cleaned_data["events"])
        except ValidationError as exc:
            raise forms.ValidationError(exc.message_dict["events"]) from exc


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    form = WebhookEndpointForm
    list_display = ("url", "api_client", "active", "events_shown", "created_at")
    list_filter = ("active", "api_client")
    search_fields = ("url", "description", "api_client__name")
    list_select_related = ("api_client",)
    actions = ["rotate_secret"]

    def get_fields(self, request, obj=None):
        fields = ["api_client", "url", "description", "active", "events"]
        return fields if obj is None else [*fields, "secret", "created_at", "updated_at"]

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else ("api_client", "secret", "created_at", "updated_at")

    @admin.display(description="Events")
    def events_shown(self, obj: WebhookEndpoint) -> str:
        return ", ".join(obj.events) or "all"

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        data = form.cleaned_data
        endpoint = webhook_endpoint_create(
            client=data["api_client"],
            url=data["url"],
            events=data["events"],
            description=data["description"],
            active=data["active"],
        )
        obj.pk = endpoint.pk
        self.message_user(
            request,
            "Endpoint created. Give its signing secret (on this page) to the client; it "
            "verifies every delivery with it (docs/webhooks.md).",
            messages.SUCCESS,
        )

    def has_delete_permission(self, request, obj=None):
        return False  # deactivate instead: deliveries keep their history

    @admin.action(description="Rotate the signing secret", permissions=["change"])
    def rotate_secret(self, request, queryset) -> None:
        for endpoint in queryset:
            webhook_endpoint_rotate_secret(endpoint=endpoint)
        self.message_user(
            request,
            f"Rotated {queryset.count()} secret(s); deliveries are signed with the new one "
            "from now on.",
            messages.WARNING,
        )


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    fields = ("started_at", "status_code", "error", "duration_ms")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "event_type",
        "endpoint",
        "case_link",
        "state",
        "attempts",
        "last_status_code",
        "last_duration_ms",
        "created_at",
    )
    # No filter on event_type: it would read DISTINCT over every delivery on each page.
    list_filter = ("state", "endpoint")
    search_fields = ("=id", "=case__id")
    list_select_related = ("endpoint", "endpoint__api_client")
    inlines = [WebhookAttemptInline]
    actions = ["redeliver"]
    fields = (
        "id",
        "endpoint",
        "case_link",
        "event_type",
        "state",
        "attempts",
        "next_attempt_at",
        "last_status_code",
        "last_error",
        "last_duration_ms",
        "created_at",
        "delivered_at",
        "payload",
    )
    readonly_fields = fields
    show_full_result_count = False

    @admin.display(description="Case")
    def case_link(self, obj: WebhookDelivery) -> str:
        # The id alone: loading the case for its name would read its trigger JSON per row.
        url = reverse("admin:cases_case_change", args=[obj.case_id])
        return format_html('<a href="{}">{}</a>', url, obj.case_id)

    def has_add_permission(self, request):
        return False  # deliveries come from case transitions

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_redeliver_permission(self, request) -> bool:
        return request.user.has_perm("hooks.redeliver_webhookdelivery")

    @admin.action(description="Redeliver the selected deliveries", permissions=["redeliver"])
    def redeliver(self, request, queryset) -> None:
        done = 0
        for delivery in queryset:
            try:
                delivery_redeliver(delivery=delivery)
                done += 1
            except RedeliveryRefused as exc:
                self.message_user(request, f"{delivery.pk}: {exc}", messages.WARNING)
        if done:
            self.message_user(request, f"Redelivering {done} delivery(ies).", messages.SUCCESS)
