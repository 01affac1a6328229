"""Payments in the mini-app: open the provider's hosted step, and turn what the provider
says became of it into an outcome (paid, card saved), an exception route (declined) or
nothing (cancelled, still pending).

The timeline holds the state: `payment_started` ties a provider session to its case and
action, `consent_given` holds the consent shown for it, `payment_declined` /
`payment_cancelled` count attempts. The return page and the provider's webhook may both
report one payment, in either order: the outcome's submission key is the session, so they
give one outcome.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction

from cases.models import OPEN_STATES, Actor, Case, CaseEvent
from cases.services import IllegalTransition, case_record_event, case_transition
from miniapp.payments.base import (
    PROVIDER_ACTIONS,
    PaymentProvider,
    PaymentRefused,
    PaymentResult,
    PaymentStart,
    PaymentStatus,
    WebhookEvent,
    provider_for,
)
from policies.catalogue import ACTIONS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PaymentCompletion:
    """What a provider's report led to: submitted, declined, cancelled, pending or
    unmatched (paid, but the case could not take the outcome: an agent follows up)."""

    kind: str
    outcome: Any = None
    route: str = ""
    alternative: str = ""


def _events(case: Case, kind: str, session_id: str | None = None):
    events = CaseEvent.objects.filter(case=case, kind=kind)
    return events.filter(data__session=session_id) if session_id is not None else events


def payment_attempt(*, case: Case) -> int:
    """1 for the first try; each declined or cancelled try adds one."""
    return (
        1
        + CaseEvent.objects.filter(
            case=case, kind__in=("payment_declined", "payment_cancelled")
        ).count()
    )


def payment_start(
    *,
    case: Case,
    action: str,
    amount: Decimal | None,
    evidence: dict[str, Any],
    return_url: str,
) -> PaymentStart:
    """Open the configured provider's hosted step for `action` and record it, with the
    consent the customer gave for it. Raises PaymentUnavailable if the provider fails."""
    if action not in PROVIDER_ACTIONS:
        raise PaymentRefused(f"{action!r} is not paid through a payment provider.")
    provider = provider_for()
    attempt = payment_attempt(case=case)
    currency = (case.offer or {}).get("currency") or case.data.get("currency", "")
    started = provider.start(
        case_id=str(case.pk),
        action=action,
        amount=amount,
        currency=currency,
        description=f"{settings.BRAND_NAME}: {ACTIONS[action].label}",
        return_url=return_url,
        idempotency_key=f"closeloop-{case.pk}-{action}-{attempt}-{amount or 'card'}",
    )
    with transaction.atomic():
        case_record_event(
            case=case,
            kind="consent_given",
            actor=Actor.CUSTOMER,
            data={"action": action, "session": started.session_id, **evidence},
        )
        if not _events(case, "payment_started", started.session_id).exists():
            case_record_event(
                case=case,
                kind="payment_started",
                actor=Actor.CUSTOMER,
                data={
                    "provider": provider.key,
                    "session": started.session_id,
                    "action": action,
                    "amount": None if amount is None else str(amount),
                    "currency": currency,
                    "attempt": attempt,
                },
            )
    return started


def payment_complete(*, case: Case, result: PaymentResult, via: str) -> PaymentCompletion:
    """Act on what the provider says became of one of this case's sessions. Raises
    PaymentRefused when the session was not started for this case (a replayed or
    borrowed session id)."""
    started = _events(case, "payment_started", result.session_id).first()
    if (
        started is None
        or result.case_id != str(case.pk)
        or started.data.get("provider") != result.provider
        or started.data.get("action") != result.action
    ):
        raise PaymentRefused("This payment does not belong to this request.")
    case = Case.objects.select_related("workflow").get(pk=case.pk)
    if result.status == PaymentStatus.SUCCEEDED:
        return _succeeded(case, started, result, via)
    if result.status == PaymentStatus.DECLINED:
        return _declined(case, result)
    if result.status == PaymentStatus.CANCELLED:
        if not _events(case, "payment_cancelled", result.session_id).exists():
            case_record_event(
                case=case,
                kind="payment_cancelled",
                actor=Actor.CUSTOMER,
                data={"session": result.session_id, "action": result.action},
            )
        return PaymentCompletion("cancelled")
    return PaymentCompletion("pending")


def payment_cancel(*, case: Case, action: str) -> None:
    """The customer came back from the provider's page without paying."""
    case_record_event(
        case=case, kind="payment_cancelled", actor=Actor.CUSTOMER, data={"action": action}
    )


def _succeeded(
    case: Case, started: CaseEvent, result: PaymentResult, via: str
) -> PaymentCompletion:
    from writeback.services import OutcomeRefused, outcome_submit

    values: dict[str, Any] = {
        "provider": result.provider,
        "provider_reference": result.provider_reference,
        "card_last4": result.last4,
    }
    if result.action == "pay_now":
        values |= {"amount": str(result.amount), "currency": result.currency}
    consent = _events(case, "consent_given", result.session_id).order_by("-pk").first()
    evidence = {
        **{k: v for k, v in (consent.data if consent else {}).items() if k != "session"},
        "payment": {"provider": result.provider, "session": result.session_id, "via": via},
    }
    try:
        outcome = outcome_submit(
            case=case,
            action=result.action,
            values=values,
            evidence=evidence,
            submission_key=f"payment:{result.session_id}",
        )
    except (OutcomeRefused, IllegalTransition) as exc:
        _unmatched(case, result, str(exc))
        return PaymentCompletion("unmatched")
    return PaymentCompletion("submitted", outcome=outcome)


def _unmatched(case: Case, result: PaymentResult, reason: str) -> None:
    """Paid (or a card saved) on a case that can no longer take the outcome — a second
    tab's payment, or a case an agent took over meanwhile. Staff must see it: the money
    moved."""
    if _events(case, "payment_unmatched", result.session_id).exists():
        return
    logger.warning("payment on case %s could not be recorded as an outcome", case.pk)
    with transaction.atomic():
        case_record_event(
            case=case,
            kind="payment_unmatched",
            actor=Actor.SYSTEM,
            data={
                "session": result.session_id,
                "provider": result.provider,
                "provider_reference": result.provider_reference,
                "action": result.action,
                "amount": None if result.amount is None else str(result.amount),
                "reason": reason[:300],
            },
        )
        if case.state in OPEN_STATES:
            case_transition(
                case=case,
                transition="escalate",
                data={"reason": "payment_unmatched", "priority": 90},
            )


def _declined(case: Case, result: PaymentResult) -> PaymentCompletion:
    from policies.blueprint import blueprint_for
    from policies.services import case_route_exception

    earlier = _events(case, "payment_declined", result.session_id).first()
    if earlier is None:
        attempt = _events(case, "payment_declined").count() + 1
        route = "none"
        with transaction.atomic():
            if case.state in OPEN_STATES:
                route = case_route_exception(
                    case=case,
                    exception_type="payment_declined",
                    detail={"action": result.action, "provider": result.provider},
                    attempt=attempt,
                )
            case_record_event(
                case=case,
                kind="payment_declined",
                actor=Actor.SYSTEM,
                data={
                    "session": result.session_id,
                    "provider": result.provider,
                    "action": result.action,
                    "attempt": attempt,
                    "decline_code": result.decline_code,
                    "route": route,
                },
            )
    else:
        route = earlier.data.get("route", "none")
    alternative = ""
    if route == "offer_alternative":
        declined_route = blueprint_for(case.workflow).routes.get("payment_declined")
        alternative = declined_route.alternative_action if declined_route else ""
    return PaymentCompletion("declined", route=route, alternative=alternative)


# --- webhooks -----------------------------------------------------------------------------


def payment_webhook_handle(*, provider: PaymentProvider, event: WebhookEvent) -> str:
    """Act on a verified provider event once (providers deliver at least once): returns
    duplicate, ignored (not one of our cases) or what the payment led to."""
    try:
        case = Case.objects.get(pk=uuid.UUID(event.case_id))
    except (ValueError, Case.DoesNotExist):
        return "ignored"
    if CaseEvent.objects.filter(
        case=case, kind="payment_webhook", data__event=event.event_id
    ).exists():
        return "duplicate"
    result = provider.complete(session_id=event.session_id)
    try:
        completion = payment_complete(case=case, result=result, via="webhook")
    except PaymentRefused:
        return "ignored"  # a session of the provider account that we did not start
    case_record_event(
        case=case,
        kind="payment_webhook",
        actor=Actor.SYSTEM,
        data={
            "provider": provider.key,
            "event": event.event_id,
            "type": event.kind,
            "session": event.session_id,
            "result": completion.kind,
        },
    )
    return completion.kind
