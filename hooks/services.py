"""Webhook services: endpoints (create, rotate the secret), the delivery owed for a case
transition, and a redelivery. Sending is in hooks/delivery.py."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django_q.tasks import async_task

from cases.models import ApiClient, Case, CaseEvent
from hooks.models import EVENT_TYPES, WebhookDelivery, WebhookEndpoint

SECRET_PREFIX = "whsec_"  # noqa: S105 (a label that tells secrets apart, not one)


def _secret_new() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def webhook_events_clean(events: Iterable[str]) -> list[str]:
    """The event filter as stored: known types only, each once, in a stable order."""
    events = list(events)
    unknown = sorted(set(events) - set(EVENT_TYPES))
    if unknown:
        raise ValidationError(
            {"events": f"Unknown event type(s): {', '.join(unknown)}. Known: case.<state>."}
        )
    return [event for event in EVENT_TYPES if event in events]


def webhook_endpoint_create(
    *,
    client: ApiClient,
    url: str,
    events: Iterable[str] = (),
    description: str = "",
    active: bool = True,
) -> WebhookEndpoint:
    endpoint = WebhookEndpoint(
        api_client=client,
        url=url,
        events=webhook_events_clean(events),
        description=description,
        active=active,
        secret=_secret_new(),
    )
    endpoint.full_clean()
    endpoint.save()
    return endpoint


def webhook_endpoint_rotate_secret(*, endpoint: WebhookEndpoint) -> str:
    """A new signing secret, used from the next attempt on (queued deliveries included)."""
    endpoint.secret = _secret_new()
    endpoint.save(update_fields=["secret", "updated_at"])
    return endpoint.secret


def delivery_enqueue(delivery_id: Any) -> None:
    async_task(
        "hooks.jobs.delivery_send_job", str(delivery_id), task_name="webhook", group="webhook"
    )


def webhooks_for_transition(
    *, case: Case, event: CaseEvent, previous_state: str, transition: str
) -> list[WebhookDelivery]:
    """Record the deliveries one committed transition owes its client's endpoints; their
    jobs are enqueued once the transaction commits. Called by cases.services.case_transition
    inside its transaction, so a transition that rolls back owes nothing.

    Only state changes are sent: a case's creation (`received`) is the client's own trigger,
    answered by the API with the case id already."""
    event_type = f"case.{case.state}"
    endpoints = [
        endpoint
        for endpoint in WebhookEndpoint.objects.filter(
            api_client_id=case.api_client_id, active=True
        )
        if endpoint.wants(event_type)
    ]
    if not endpoints:
        return []
    workflow = case.workflow
    deliveries = []
    for endpoint in endpoints:
        delivery = WebhookDelivery(endpoint=endpoint, case_id=case.pk, case_event=event)
        delivery.event_type = event_type
        delivery.payload = {
            "delivery_id": str(delivery.id),
            "type": event_type,
            "case_id": str(case.pk),
            "event_id": case.event_id,
            "workflow": workflow.key,
            "workflow_version": workflow.version,
            "transition": transition,
            "from_state": previous_state,
            "to_state": case.state,
            "outcome": case.outcome,
            "occurred_at": event.created_at.isoformat(),
        }
        deliveries.append(delivery)
    # Called twice for one event, the (endpoint, case_event) constraint keeps one delivery;
    # the second call's job finds no row of its id and does nothing.
    WebhookDelivery.objects.bulk_create(deliveries, ignore_conflicts=True)
    ids = [delivery.pk for delivery in deliveries]
    transaction.on_commit(lambda: [delivery_enqueue(delivery_id) for delivery_id in ids])
    return deliveries


class RedeliveryRefused(ValueError):
    """A redelivery that cannot start now; the message says why."""


def delivery_redeliver(*, delivery: WebhookDelivery) -> WebhookDelivery:
    """Send a delivery again (failed, or delivered but lost by the receiver), with a fresh
    attempt budget and the same delivery id, so a receiver that had it can tell."""
    now = timezone.now()
    with transaction.atomic():
        locked = WebhookDelivery.objects.select_for_update().get(pk=delivery.pk)
        if locked.state == WebhookDelivery.State.SENDING and (
            locked.lease_until and locked.lease_until > now
        ):
            raise RedeliveryRefused("A worker is sending it right now; wait for its answer.")
        locked.state = WebhookDelivery.State.PENDING
        locked.attempts = 0
        locked.next_attempt_at = now
        locked.lease_until = None
        locked.save(
            update_fields=["state", "attempts", "next_attempt_at", "lease_until", "updated_at"]
        )
        transaction.on_commit(lambda: delivery_enqueue(locked.pk))
    return locked
