"""Stripe: hosted Checkout for pay now (mode=payment) and for a card update (mode=setup).

Completion is read from Stripe, never from the browser: the signed webhook
(checkout.session.completed) and the return page both retrieve the session with its
payment method expanded, which is where the reference and the card's last four come from.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django.conf import settings

from config.http import HttpAnswer, HttpFailure, http_request
from miniapp.payments.base import (
    PaymentProvider,
    PaymentRefused,
    PaymentResult,
    PaymentStart,
    PaymentStatus,
    PaymentUnavailable,
    WebhookEvent,
    WebhookRefused,
    register,
)

logger = logging.getLogger(__name__)

# Stripe's ids are well under 90 characters; "payment:<id>" must fit a submission key (100).
SESSION_ID = re.compile(r"^cs_[A-Za-z0-9_]{1,88}$")
# Stripe's own tolerance in its libraries: a signed event older than this is a replay.
WEBHOOK_TOLERANCE_SECONDS = 300
TIMEOUT_SECONDS = 10.0
SESSION_EVENTS = {
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
}
# Stripe amounts are in the currency's smallest unit; these currencies have none below
# the unit, and these three have thousandths (https://docs.stripe.com/currencies).
ZERO_DECIMAL = {
    "BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA",
    "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF",
}  # fmt: skip
THREE_DECIMAL = {"BHD", "JOD", "KWD", "OMR", "TND"}


def _exponent(currency: str) -> int:
    code = currency.upper()
    return 0 if code in ZERO_DECIMAL else 3 if code in THREE_DECIMAL else 2


def minor_units(amount: Decimal, currency: str) -> int:
    scaled = amount.scaleb(_exponent(currency))
    if scaled != scaled.to_integral_value():
        raise PaymentRefused(f"{amount} {currency} cannot be charged in whole minor units.")
    return int(scaled)


def major_units(amount: int, currency: str) -> Decimal:
    return Decimal(amount).scaleb(-_exponent(currency))


def webhook_signature(secret: str, timestamp: int, body: bytes) -> str:
    """Stripe's v1 scheme: HMAC-SHA256 of "{t}.{payload}" keyed by the endpoint secret."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


@register
class StripeProvider(PaymentProvider):
    key = "stripe"

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {settings.STRIPE_SECRET_KEY}", **kwargs.pop("headers")}
        try:
            answer: HttpAnswer = http_request(
                method,
                f"{settings.STRIPE_API_BASE}{path}",
                headers=headers,
                timeout=TIMEOUT_SECONDS,
                **kwargs,
            )
        except HttpFailure as exc:
            logger.warning("stripe %s %s: %s", method, path.split("?")[0], exc.kind)
            raise PaymentUnavailable("The payment service is not answering.") from exc
        body = answer.json()
        if answer.status != 200 or not isinstance(body, dict):
            error = (body or {}).get("error", {}) if isinstance(body, dict) else {}
            # Stripe's error type and code say what went wrong without personal data.
            logger.warning(
                "stripe %s %s answered %s: %s %s",
                method,
                path.split("?")[0],
                answer.status,
                error.get("type", ""),
                error.get("code", ""),
            )
            raise PaymentUnavailable("The payment service could not take this request.")
        return body

    def start(
        self,
        *,
        case_id: str,
        action: str,
        amount: Decimal | None,
        currency: str,
        description: str,
        return_url: str,
        idempotency_key: str,
    ) -> PaymentStart:
        separator = "&" if "?" in return_url else "?"
        form: dict[str, Any] = {
            # Stripe fills {CHECKOUT_SESSION_ID} in itself; it must reach it unencoded.
            "success_url": (
                f"{return_url}{separator}provider=stripe&session_id={{CHECKOUT_SESSION_ID}}"
            ),
            "cancel_url": f"{return_url}{separator}provider=stripe&cancelled=1",
            "client_reference_id": case_id,
            "metadata[case]": case_id,
            "metadata[action]": action,
            "payment_method_types[0]": "card",
        }
        if amount is None:
            form |= {
                "mode": "setup",
                "currency": currency.lower(),
                "setup_intent_data[metadata][case]": case_id,
            }
        else:
            form |= {
                "mode": "payment",
                "line_items[0][quantity]": "1",
                "line_items[0][price_data][currency]": currency.lower(),
                "line_items[0][price_data][unit_amount]": str(minor_units(amount, currency)),
                "line_items[0][price_data][product_data][name]": description,
                "payment_intent_data[metadata][case]": case_id,
            }
        session = self._call(
            "POST",
            "/v1/checkout/sessions",
            data=form,
            # One key per case and attempt: a double tap or a retried request opens the
            # same Checkout session instead of a second one.
            headers={"Idempotency-Key": idempotency_key},
        )
        if not session.get("id") or not session.get("url"):
            raise PaymentUnavailable("The payment service answered without a payment page.")
        return PaymentStart(redirect_url=session["url"], session_id=session["id"])

    def complete(self, *, session_id: str) -> PaymentResult:
        if not SESSION_ID.match(session_id or ""):
            raise PaymentRefused("This is not a Stripe Checkout session id.")
        query = urlencode(
            [
                ("expand[]", "payment_intent.payment_method"),
                ("expand[]", "setup_intent.payment_method"),
            ]
        )
        session = self._call("GET", f"/v1/checkout/sessions/{session_id}?{query}", headers={})
        return _result(session)

    def webhook(self, *, body: bytes, headers: Mapping[str, str]) -> WebhookEvent | None:
        secret = settings.STRIPE_WEBHOOK_SECRET
        if not secret:
            raise WebhookRefused(
                403, "STRIPE_WEBHOOK_SECRET is not set; events cannot be verified."
            )
        header = headers.get("Stripe-Signature", "")
        timestamp, signatures = None, []
        for item in header.split(","):
            name, _, value = item.strip().partition("=")
            if name == "t" and value.isdigit():
                timestamp = int(value)
            elif name == "v1" and value:
                signatures.append(value)
        if timestamp is None or not signatures:
            raise WebhookRefused(400, "Stripe-Signature must carry t=<timestamp> and v1=<hmac>.")
        if abs(time.time() - timestamp) > WEBHOOK_TOLERANCE_SECONDS:
            raise WebhookRefused(403, "The signature's timestamp is outside the 300 s tolerance.")
        expected = webhook_signature(secret, timestamp, body)
        # Several v1 entries while Stripe rolls the endpoint secret: any may match.
        if not any(hmac.compare_digest(expected, given) for given in signatures):
            raise WebhookRefused(403, "The signature does not match.")
        try:
            event = json.loads(body)
            kind, event_id = event["type"], event["id"]
            session = event["data"]["object"]
        except (ValueError, KeyError, TypeError) as exc:
            raise WebhookRefused(400, "The event is not a Stripe event object.") from exc
        if kind not in SESSION_EVENTS:
            return None
        case_id = session.get("client_reference_id") or (session.get("metadata") or {}).get("case")
        if not case_id or not session.get("id"):
            return None  # a Checkout session of the account that is not ours
        return WebhookEvent(
            event_id=str(event_id), kind=kind, session_id=str(session["id"]), case_id=str(case_id)
        )


def _payment_method(intent: Any) -> tuple[str, str]:
    """(payment method id, card last4) from an expanded intent."""
    method = intent.get("payment_method") if isinstance(intent, dict) else None
    if not isinstance(method, dict):
        return (method or "", "") if isinstance(method, str) else ("", "")
    return method.get("id", ""), (method.get("card") or {}).get("last4", "")


def _result(session: dict[str, Any]) -> PaymentResult:
    metadata = session.get("metadata") or {}
    currency = (session.get("currency") or "").upper()
    common = {
        "provider": StripeProvider.key,
        "session_id": session.get("id", ""),
        "case_id": session.get("client_reference_id") or metadata.get("case", ""),
        "action": metadata.get("action", ""),
        "currency": currency,
    }
    status = session.get("status")
    if status == "expired":
        return PaymentResult(**common, status=PaymentStatus.CANCELLED)
    if status != "complete":
        return PaymentResult(**common, status=PaymentStatus.PENDING)
    if session.get("mode") == "setup":
        intent = session.get("setup_intent")
        method_id, last4 = _payment_method(intent)
        # The saved card's payment method is the token a bank charges later.
        return PaymentResult(
            **common, status=PaymentStatus.SUCCEEDED, provider_reference=method_id, last4=last4
        )
    intent = session.get("payment_intent")
    intent = intent if isinstance(intent, dict) else {"id": intent or ""}
    _, last4 = _payment_method(intent)
    amount = session.get("amount_total")
    paid = session.get("payment_status") in ("paid", "no_payment_required")
    declined = not paid and intent.get("status") in ("requires_payment_method", "canceled")
    return PaymentResult(
        **common,
        status=PaymentStatus.SUCCEEDED
        if paid
        else PaymentStatus.DECLINED
        if declined
        else PaymentStatus.PENDING,
        provider_reference=intent.get("id", ""),
        last4=last4,
        amount=None if amount is None else major_units(int(amount), currency),
        decline_code=((intent.get("last_payment_error") or {}).get("code") or "")[:64],
    )
