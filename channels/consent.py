"""Consent changes the customer makes themselves: STOP/START replies, the email unsubscribe
link. A revocation takes effect at once: queued messages on that channel are cancelled here,
and the dispatcher re-checks consent right before every send, so nothing already claimed
goes out either.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from cases.models import Actor, Case, CaseEvent, CaseState, Channel, Customer
from channels.models import Message, MessageStatus

# Cases still in progress for the customer: each gets the consent change on its timeline, so
# an agent working an escalated case sees it too.
OPEN_CASE_STATES = (
    CaseState.RECEIVED,
    CaseState.OUTREACH,
    CaseState.ENGAGED,
    CaseState.VERIFIED,
    CaseState.ESCALATED,
    CaseState.ACTION_SUBMITTED,
)

UNSUBSCRIBE_SALT = "channels.unsubscribe"
# An unsubscribe link must keep working long after the email was sent (CAN-SPAM: at least
# 30 days; people unsubscribe from old mail), so a year, not the case link's days.
UNSUBSCRIBE_MAX_AGE = dt.timedelta(days=365)


def _consent_set(
    *, customer: Customer, channel: str, value: bool, source: str, detail: str
) -> bool:
    if channel not in Channel.values:
        raise ValueError(f"Unknown channel {channel!r}; expected one of {Channel.values}.")
    now = timezone.now()
    with transaction.atomic():
        # Locked so a STOP and a trigger's consent update cannot interleave and lose one.
        locked = Customer.objects.select_for_update().get(pk=customer.pk)
        current = locked.consent.get(channel)
        if isinstance(current, dict) and current.get("value") is value:
            customer.consent = locked.consent
            return False
        entry: dict[str, Any] = {
            "value": value,
            "timestamp": now.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
            "source": source,
        }
        if detail:
            entry["detail"] = detail
        locked.consent = {**locked.consent, channel: entry}
        locked.updated_at = now
        locked.save(update_fields=["consent", "updated_at"])
        customer.consent = locked.consent

        events: list[CaseEvent] = []
        if not value:
            # Replies (the opt-out confirmation itself) are not outreach and stay queued.
            cancelled = list(
                Message.objects.select_for_update()
                .filter(customer=locked, channel=channel, status=MessageStatus.QUEUED)
                .exclude(purpose="reply")
            )
            if cancelled:
                Message.objects.filter(pk__in=[m.pk for m in cancelled]).update(
                    status=MessageStatus.CANCELLED, error="opted out", updated_at=now
                )
            events += [
                CaseEvent(
                    case_id=message.case_id,
                    kind="message_cancelled",
                    actor=Actor.SYSTEM,
                    data={
                        "message": message.key,
                        "channel": channel,
                        "purpose": message.purpose,
                        "reason": "opted_out",
                    },
                    created_at=now,
                )
                for message in cancelled
            ]
        kind = "consent_restored" if value else "consent_revoked"
        data: dict[str, Any] = {"channel": channel, "source": source}
        if detail:
            data["detail"] = detail
        open_cases = Case.objects.filter(customer=locked, state__in=OPEN_CASE_STATES)
        events += [
            CaseEvent(case_id=case_id, kind=kind, actor=Actor.CUSTOMER, data=data, created_at=now)
            for case_id in open_cases.values_list("pk", flat=True)
        ]
        CaseEvent.objects.bulk_create(events)
    return True


def consent_revoke(*, customer: Customer, channel: str, source: str, detail: str = "") -> bool:
    """Record the customer's "no" on a channel and cancel what is queued there. Returns
    False (and changes nothing) if consent was already revoked. `detail` is ours (e.g. the
    keyword matched), never the customer's text."""
    return _consent_set(
        customer=customer, channel=channel, value=False, source=source, detail=detail
    )


def consent_restore(*, customer: Customer, channel: str, source: str, detail: str = "") -> bool:
    """Record the customer's "yes" again (START). Returns False if consent was already given.
    Cancelled messages stay cancelled: the sequence decides what to send next."""
    return _consent_set(
        customer=customer, channel=channel, value=True, source=source, detail=detail
    )


# --- the email unsubscribe link -----------------------------------------------------------


def unsubscribe_token(*, customer: Customer, channel: str = Channel.EMAIL) -> str:
    return signing.dumps([customer.pk, channel], salt=UNSUBSCRIBE_SALT, compress=True)


def unsubscribe_url(*, customer: Customer, channel: str = Channel.EMAIL) -> str:
    """The absolute link for an email's footer and its List-Unsubscribe header (RFC 8058)."""
    path = reverse(
        "channels:unsubscribe",
        kwargs={"token": unsubscribe_token(customer=customer, channel=channel)},
    )
    return f"{settings.PUBLIC_BASE_URL}{path}"


def unsubscribe_resolve(token: str) -> tuple[Customer, str] | None:
    """The customer and channel a token was issued for; None if forged, expired or stale."""
    try:
        customer_id, channel = signing.loads(
            token, salt=UNSUBSCRIBE_SALT, max_age=UNSUBSCRIBE_MAX_AGE
        )
    except (signing.BadSignature, ValueError, TypeError):
        return None
    if channel not in Channel.values:
        return None
    customer = Customer.objects.filter(pk=customer_id).first()
    return (customer, channel) if customer else None
