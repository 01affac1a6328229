"""The outbox: the demo's phone and mailbox. Messages are kept in the database (OutboxEntry)
with their working links, so a newcomer can open what the customer would receive. The one
provider that writes to the database, which is why it runs in the worker's own thread."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from channels.models import OutboxEntry
from channels.providers.base import OutgoingMessage, Provider, SendResult


class OutboxProvider(Provider):
    key: ClassVar[str] = "outbox"
    can_reconcile: ClassVar[bool] = True
    thread_safe: ClassVar[bool] = False

    def send(self, message: OutgoingMessage) -> SendResult:
        # Keyed by the message key: a repeated send finds the entry instead of adding one.
        entry, _ = OutboxEntry.objects.get_or_create(
            message_key=message.key,
            defaults={
                "channel": self.channel,
                "to": message.to,
                "subject": message.subject,
                "body": _as_received(message),
            },
        )
        return SendResult(provider_message_id=f"outbox-{entry.pk}")

    def find_sent(
        self, message: OutgoingMessage, *, body_sha256: str, since: datetime
    ) -> str | None:
        entry_id = (
            OutboxEntry.objects.filter(message_key=message.key).values_list("pk", flat=True).first()
        )
        return f"outbox-{entry_id}" if entry_id is not None else None


def _as_received(message: OutgoingMessage) -> str:
    # A WhatsApp template's wording lives at Meta; the demo phone shows which template went
    # out and its parameters, the link among them.
    template = message.whatsapp_template
    if template is None:
        return message.body
    return f"[WhatsApp template {template.name} ({template.language})]\n" + "\n".join(
        template.parameters
    )


class OutboxSmsProvider(OutboxProvider):
    channel: ClassVar[str] = "sms"


class OutboxEmailProvider(OutboxProvider):
    channel: ClassVar[str] = "email"


class OutboxWhatsAppProvider(OutboxProvider):
    channel: ClassVar[str] = "whatsapp"
