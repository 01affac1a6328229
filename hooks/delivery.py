"""Sending webhook deliveries: claim one, POST it signed, record the attempt, then mark it
delivered, schedule a retry (exponential backoff with full jitter) or give up.

Never inside a database transaction while the receiver is called: the claim is a short
committed write with a lease, so a worker that dies mid-send leaves a claim that expires and
another worker sends it again. Receivers de-duplicate on the delivery id (docs/webhooks.md).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from config.http import HttpFailure, http_request
from hooks.models import WebhookAttempt, WebhookDelivery
from hooks.signing import SIGNATURE_HEADER, signature_header
from writeback.outbox import backoff_delay

logger = logging.getLogger(__name__)

State = WebhookDelivery.State


def _claimable(now, *, due_only: bool) -> Q:
    pending = Q(state=State.PENDING)
    if due_only:
        pending &= Q(next_attempt_at__lte=now)
    return pending | Q(state=State.SENDING, lease_until__lt=now)


def delivery_claim(*, delivery_id: Any, due_only: bool = False) -> WebhookDelivery | None:
    """Take a delivery for sending, or None if another worker holds it or it is done."""
    now = timezone.now()
    claim = {
        "attempts": F("attempts") + 1,
        "state": State.SENDING,
        "lease_until": now + timedelta(seconds=settings.WEBHOOK_LEASE_SECONDS),
        "claim_token": secrets.token_hex(8),
    }
    rows = WebhookDelivery.objects.filter(_claimable(now, due_only=due_only), pk=delivery_id)
    if connection.vendor == "postgresql":
        with transaction.atomic():
            # SKIP LOCKED: a worker never waits behind another's claim, it moves on.
            if rows.select_for_update(skip_locked=True).values_list("pk").first() is None:
                return None
            WebhookDelivery.objects.filter(pk=delivery_id).update(**claim)
    elif rows.update(**claim) == 0:
        return None
    return WebhookDelivery.objects.select_related("endpoint").get(
        pk=delivery_id, claim_token=claim["claim_token"]
    )


def delivery_body(delivery: WebhookDelivery) -> bytes:
    """The exact bytes signed and sent; the same on every attempt."""
    return json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()


def delivery_send(*, delivery_id: Any, due_only: bool = False) -> str:
    """Send one delivery if nobody else holds it. Returns what happened: delivered, retry,
    failed, lost (our lease was taken over) or not_claimed."""
    delivery = delivery_claim(delivery_id=delivery_id, due_only=due_only)
    if delivery is None:
        return "not_claimed"
    endpoint = delivery.endpoint
    body = delivery_body(delivery)
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: signature_header(secret=endpoint.secret, body=body),
        "X-Closeloop-Delivery": str(delivery.pk),
        "X-Closeloop-Event": delivery.event_type,
    }
    started = timezone.now()
    status_code, error = None, ""
    try:
        answer = http_request(
            "POST",
            endpoint.url,
            headers=headers,
            content=body,
            timeout=settings.WEBHOOK_TIMEOUT_SECONDS,
        )
        status_code, duration_ms = answer.status, answer.elapsed_ms
        if not 200 <= answer.status < 300:
            error = f"HTTP {answer.status}"
    except HttpFailure as exc:
        duration_ms = exc.elapsed_ms
        error = str(exc)[:300]
    mine = WebhookDelivery.objects.filter(pk=delivery.pk, claim_token=delivery.claim_token)
    fields: dict[str, Any] = {
        "lease_until": None,
        "last_status_code": status_code,
        "last_error": error,
        "last_duration_ms": duration_ms,
        "updated_at": timezone.now(),
    }
    if not error:
        result = "delivered"
        fields.update(state=State.DELIVERED, delivered_at=timezone.now())
    elif delivery.attempts < settings.WEBHOOK_MAX_ATTEMPTS:
        result = "retry"
        delay = backoff_delay(
            attempts=delivery.attempts,
            base=settings.WEBHOOK_BACKOFF_BASE_SECONDS,
            cap=settings.WEBHOOK_BACKOFF_CAP_SECONDS,
        )
        fields.update(
            state=State.PENDING, next_attempt_at=timezone.now() + timedelta(seconds=delay)
        )
    else:
        result = "failed"
        fields["state"] = State.FAILED
    with transaction.atomic():
        WebhookAttempt.objects.create(
            delivery=delivery,
            started_at=started,
            status_code=status_code,
            error=error,
            duration_ms=duration_ms,
        )
        if not mine.update(**fields):
            result = "lost"
    if result in ("failed", "lost"):
        logger.warning(
            "webhook %s to endpoint %s %s after %d attempt(s): %s",
            delivery.pk,
            endpoint.pk,
            result,
            delivery.attempts,
            error,
        )
    return result


def deliveries_send_due(
    *, limit: int | None = None, budget_seconds: float | None = None
) -> dict[str, int]:
    """The every-minute sweep: retries whose backoff is over and claims whose worker died,
    oldest first, side by side (each mostly waits on the receiver), until the time budget
    is spent. Inside a transaction (a test's) other threads could not see its rows, so the
    deliveries then go one after another."""
    limit = limit or settings.WEBHOOK_SWEEP_BATCH
    budget = budget_seconds if budget_seconds is not None else settings.WEBHOOK_SWEEP_SECONDS
    deadline = time.monotonic() + budget
    ids = list(
        WebhookDelivery.objects.filter(_claimable(timezone.now(), due_only=True))
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )

    def send(delivery_id: Any) -> str:
        if time.monotonic() > deadline:
            return "deferred"  # left for the next sweep
        return delivery_send(delivery_id=delivery_id, due_only=True)

    results: Counter = Counter()
    threads = min(settings.WEBHOOK_CONCURRENCY, len(ids))
    if threads <= 1 or connection.in_atomic_block:
        results.update(send(delivery_id) for delivery_id in ids)
    else:

        def send_on_own_connection(delivery_id: Any) -> str:
            try:
                return send(delivery_id)
            finally:
                connection.close()

        with ThreadPoolExecutor(max_workers=threads) as pool:
            results.update(pool.map(send_on_own_connection, ids))
    results.pop("deferred", None)
    return dict(results)
