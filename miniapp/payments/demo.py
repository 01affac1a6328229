"""The demo payment provider: a fake hosted page served by us at /payments/demo/<session>/
with "Pay with demo card •••• 4242" and "Decline" buttons and no card inputs at all, so
the demo shows the hosted-step pattern without our server ever receiving card data.

It keeps no state: the session and its result travel signed (Django's signing, keyed by
SECRET_KEY), the way a real provider's own records would, so a browser cannot turn a
declined payment into a paid one or change an amount.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from django.core import signing
from django.urls import reverse

from miniapp.payments.base import (
    PaymentProvider,
    PaymentRefused,
    PaymentResult,
    PaymentStart,
    PaymentStatus,
    register,
)

SESSION_SALT = "miniapp.payments.demo.session"
RESULT_SALT = "miniapp.payments.demo.result"
# A hosted session stays usable for a day, as Stripe's Checkout sessions do.
SESSION_MAX_AGE = 24 * 60 * 60
DEMO_CARD_LAST4 = "4242"


def _digest(value: str) -> str:
    # Letters only (hex digits shifted to a–p): ids must never hold a run of digits that
    # the card-number guard on outcomes (writeback.services) could take for a card.
    return "".join(
        chr(ord("a") + int(c, 16)) for c in hashlib.sha256(value.encode()).hexdigest()[:24]
    )


@register
class DemoProvider(PaymentProvider):
    key = "demo"

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
        # Derived from the idempotency key: a double tap opens the same session, as an
        # idempotent request to a real provider does.
        session_id = f"demo_cs_{_digest(idempotency_key)}"
        signed = signing.dumps(
            {
                "session": session_id,
                "case": case_id,
                "action": action,
                "amount": None if amount is None else str(amount),
                "currency": currency,
                "description": description,
                "return_url": return_url,
            },
            salt=SESSION_SALT,
            compress=True,
        )
        return PaymentStart(
            redirect_url=reverse("payments:demo-page", kwargs={"session": signed}),
            session_id=session_id,
        )

    # --- the provider's side: its hosted page -------------------------------------------------

    def session(self, signed: str) -> dict[str, Any]:
        """The session behind a hosted-page URL (PaymentRefused if tampered or stale)."""
        try:
            return signing.loads(signed, salt=SESSION_SALT, max_age=SESSION_MAX_AGE)
        except signing.BadSignature as exc:
            raise PaymentRefused("This payment page has expired or is not valid.") from exc

    def finish(self, signed: str, *, approve: bool) -> str:
        """The customer pressed Pay or Decline: the URL the provider sends them back to."""
        session = self.session(signed)
        prefix = "demo_pi" if session["amount"] is not None else "demo_pm"
        result = signing.dumps(
            {
                "session": session["session"],
                "case": session["case"],
                "action": session["action"],
                "status": PaymentStatus.SUCCEEDED if approve else PaymentStatus.DECLINED,
                "reference": f"{prefix}_{_digest(session['session'])}" if approve else "",
                "last4": DEMO_CARD_LAST4,
                "amount": session["amount"],
                "currency": session["currency"],
            },
            salt=RESULT_SALT,
            compress=True,
        )
        separator = "&" if "?" in session["return_url"] else "?"
        return f"{session['return_url']}{separator}provider=demo&session_id={quote(result)}"

    # --- our side -----------------------------------------------------------------------------

    def complete(self, *, session_id: str) -> PaymentResult:
        try:
            result = signing.loads(session_id, salt=RESULT_SALT, max_age=SESSION_MAX_AGE)
        except signing.BadSignature as exc:
            raise PaymentRefused("This payment result is not valid.") from exc
        declined = result["status"] == PaymentStatus.DECLINED
        return PaymentResult(
            provider=self.key,
            session_id=result["session"],
            case_id=result["case"],
            action=result["action"],
            status=result["status"],
            provider_reference=result["reference"],
            last4=result["last4"],
            amount=None if result["amount"] is None else Decimal(result["amount"]),
            currency=result["currency"],
            decline_code="card_declined" if declined else "",
        )
