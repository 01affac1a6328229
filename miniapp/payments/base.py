"""Payment providers behind one small interface, chosen by the PAYMENT_PROVIDER setting.

A provider hosts the card step itself (a hosted page or a tokenised form on its own
domain), so a card number never reaches our server: we keep the provider's reference and
the card's last four digits (PCI DSS 3.3/3.4). A provider class only talks to its
provider; the database is written by miniapp/payments/services.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar

# Actions completed on the payment provider's hosted page rather than on our forms.
PROVIDER_ACTIONS = ("pay_now", "update_payment_method")


class PaymentError(Exception):
    """Base of what a provider raises; the message is fit to show a customer."""


class PaymentUnavailable(PaymentError):
    """The provider did not answer, or answered with a failure of its own (retry later)."""


class PaymentRefused(PaymentError):
    """A session id, result or webhook that does not hold up (tampered, unknown, malformed)."""


class WebhookRefused(PaymentError):
    """A webhook that is not from the provider: `status` is the HTTP answer to give."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


class PaymentStatus:
    SUCCEEDED = "succeeded"
    DECLINED = "declined"
    CANCELLED = "cancelled"
    PENDING = "pending"  # still open at the provider, or a bank transfer not yet settled


@dataclass(frozen=True)
class PaymentStart:
    redirect_url: str
    session_id: str


@dataclass(frozen=True)
class PaymentResult:
    provider: str
    session_id: str
    case_id: str
    action: str
    status: str
    provider_reference: str = ""
    last4: str = ""
    amount: Decimal | None = None
    currency: str = ""
    decline_code: str = ""


@dataclass(frozen=True)
class WebhookEvent:
    """A verified provider event about one of our payment sessions."""

    event_id: str
    kind: str
    session_id: str
    case_id: str


class PaymentProvider:
    key: ClassVar[str]

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
        """Open a hosted session: pay `amount` (pay_now) or save a card (amount None)."""
        raise NotImplementedError

    def complete(self, *, session_id: str) -> PaymentResult:
        """What became of a session, as the provider tells it (never as the browser does)."""
        raise NotImplementedError

    def webhook(self, *, body: bytes, headers: Mapping[str, str]) -> WebhookEvent | None:
        """Verify and read a webhook; None for events we do not act on."""
        raise WebhookRefused(404, f"The {self.key} provider sends no webhooks.")


PROVIDERS: dict[str, type[PaymentProvider]] = {}


def register(cls: type[PaymentProvider]) -> type[PaymentProvider]:
    PROVIDERS[cls.key] = cls
    return cls


def provider_for(key: str | None = None) -> PaymentProvider:
    """The provider named `key`, or the configured one (PAYMENT_PROVIDER)."""
    from django.conf import settings

    # Imported for their registration; each module registers its class.
    from miniapp.payments import demo, stripe  # noqa: F401

    name = key or settings.PAYMENT_PROVIDER
    try:
        return PROVIDERS[name]()
    except KeyError as exc:
        raise PaymentRefused(f"Unknown payment provider {name!r}.") from exc
