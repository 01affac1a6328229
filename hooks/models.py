"""Outbound webhooks: where an API client wants to hear about its cases (endpoints), and the
outbox of what we owe it (deliveries, each with its attempts).

A delivery is written in the same transaction as the case transition it reports, so a
transition that commits always has its delivery and one that rolls back never does
(hooks/services.py); a job sends it once that commits (hooks/delivery.py).
"""

from __future__ import annotations

from django.db import models
from django.utils.timezone import now

from cases.models import CaseState, uuid7

# What an endpoint may subscribe to: the state a case moved into, as "case.<state>".
EVENT_TYPES = [f"case.{state}" for state in CaseState.values]
EVENT_TYPE_CHOICES = [
    (f"case.{value}", f"case.{value} — {label}") for value, label in CaseState.choices
]


class WebhookEndpoint(models.Model):
    """A URL of an API client's that is told when its cases change state."""

    api_client = models.ForeignKey(
        "cases.ApiClient", on_delete=models.PROTECT, related_name="webhook_endpoints"
    )
    url = models.URLField(max_length=500, help_text="Where deliveries are POSTed (https://…).")
    description = models.CharField(max_length=200, blank=True)
    # Stored as given: it signs every delivery, so it cannot be kept as a hash like API keys.
    secret = models.CharField(max_length=100, editable=False)
    active = models.BooleanField(
        default=True, help_text="Inactive endpoints get no new deliveries; queued ones still go."
    )
    events = models.JSONField(
        default=list,
        blank=True,
        help_text='Event types to send, e.g. ["case.resolved", "case.escalated"]; empty: all.',
    )
    created_at = models.DateTimeField(default=now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["api_client", "url"]
        indexes = [models.Index(fields=["api_client", "active"], name="webhook_endpoint_client")]

    def __str__(self) -> str:
        return f"{self.api_client}: {self.url}"

    def wants(self, event_type: str) -> bool:
        return not self.events or event_type in self.events


class WebhookDelivery(models.Model):
    """One event owed to one endpoint: the outbox row. Its id is the delivery id receivers
    de-duplicate on; a redelivery keeps it."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending (claimed by a worker)"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed (gave up)"

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    case = models.ForeignKey("cases.Case", on_delete=models.PROTECT, related_name="+")
    # The transition's own timeline entry: one delivery per endpoint and transition, however
    # often the enqueue runs.
    case_event = models.ForeignKey("cases.CaseEvent", on_delete=models.PROTECT, related_name="+")
    event_type = models.CharField(max_length=64)
    payload = models.JSONField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveSmallIntegerField(
        default=0, help_text="Attempts since it was queued (or last redelivered)."
    )
    next_attempt_at = models.DateTimeField(default=now)
    lease_until = models.DateTimeField(null=True, blank=True)
    claim_token = models.CharField(max_length=32, blank=True, editable=False)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)
    last_duration_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=now)
    delivered_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "webhook deliveries"
        ordering = ["-created_at"]
        permissions = [("redeliver_webhookdelivery", "Can send a webhook delivery again")]
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "case_event"], name="webhook_delivery_once_per_event"
            )
        ]
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="webhook_delivery_due")]

    def __str__(self) -> str:
        return f"{self.event_type} to {self.endpoint.url} ({self.state})"


class WebhookAttempt(models.Model):
    """One POST of a delivery and what came back, for staff in the admin."""

    delivery = models.ForeignKey(
        WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log"
    )
    started_at = models.DateTimeField(default=now)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["started_at", "id"]

    def __str__(self) -> str:
        return f"{self.status_code or self.error} at {self.started_at:%Y-%m-%d %H:%M:%S}"
