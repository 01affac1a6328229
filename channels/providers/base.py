"""The provider interface: one small class per provider, chosen by settings.

A provider turns one OutgoingMessage into one provider call. It never touches the database:
channels/dispatch.py records every outcome (the healthchecks pattern), so a provider class
stays a thin translation of our message into the provider's API.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar


@dataclass(frozen=True)
class WhatsAppTemplate:
    """An approved WhatsApp template: outside the 24-hour customer-service window only these
    may be sent (Meta's rule)."""

    name: str
    language: str
    parameters: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class OutgoingMessage:
    key: str  # our per-message idempotency key; unique and stable across retries
    channel: str  # sms, email, whatsapp
    to: str  # E.164 phone or email address
    body: str  # the full text as the customer will read it (SMS, email text, WhatsApp text)
    subject: str = ""
    html_body: str = ""
    # Set for WhatsApp outside the 24-hour window: send this template instead of `body`.
    whatsapp_template: WhatsAppTemplate | None = None
    status_callback_url: str = ""
    unsubscribe_url: str = ""


@dataclass(frozen=True)
class SendResult:
    provider_message_id: str
    status: str = "sent"  # the provider's first status, mapped: queued, sent, delivered
    raw_status: str = ""


class ProviderError(Exception):
    """A send that did not happen. `permanent` failures (invalid number, unsubscribed at the
    provider, rejected template) fall back to the next permitted channel; the rest are retried
    with backoff."""

    def __init__(self, detail: str, *, permanent: bool = False, code: str = ""):
        self.detail = detail
        self.permanent = permanent
        self.code = code
        super().__init__(detail)


class Provider:
    """Send one message; optionally say whether a message was already sent (reconciliation
    after a crash between the provider call and our database update)."""

    key: ClassVar[str]
    channel: ClassVar[str]
    # Whether find_sent() can answer; without it, an interrupted send is never repeated.
    can_reconcile: ClassVar[bool] = False
    # Whether send() may run in the dispatcher's threads. Network providers may; the outbox,
    # which writes to the database, runs in the worker's own thread.
    thread_safe: ClassVar[bool] = True
    # The settings an instance is built from: provider_for() builds a new instance when any
    # of them changes.
    settings_used: ClassVar[tuple[str, ...]] = ()

    def send(self, message: OutgoingMessage) -> SendResult:
        raise NotImplementedError

    def find_sent(
        self, message: OutgoingMessage, *, body_sha256: str, since: datetime
    ) -> str | None:
        """The provider's id for this message if it was sent, else None."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"provider": self.key, "channel": self.channel}
