"""What customers send us: replies (opt-out and opt-in keywords, HELP, free text) and the
providers' delivery receipts for what we sent.

A reply is evidence: its text is kept on the InboundMessage row and on the case's timeline,
where agents need it, and never written to the application log.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from cases.models import OPEN_STATES, Actor, Case, Channel, Customer
from cases.services import IllegalTransition, case_record_event, case_transition
from channels.consent import OPEN_CASE_STATES, consent_restore, consent_revoke
from channels.contact_rules import channel_address
from channels.models import InboundMessage, Message, MessageStatus
from privacy.crypto import text_seal

logger = logging.getLogger(__name__)

Kind = InboundMessage.Kind

# Carrier keywords (CTIA Messaging Principles; Twilio's default opt-out keywords), matched on
# the whole message only: "stop by the branch?" is a question, not an opt-out.
KEYWORDS: dict[str, str] = {
    **dict.fromkeys(
        ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"),
        Kind.OPT_OUT,
    ),
    # Only these two opt back in: "YES" answers too many other questions.
    **dict.fromkeys(("START", "UNSTOP"), Kind.OPT_IN),
    **dict.fromkeys(("HELP", "INFO"), Kind.HELP),
}

# Consumers may revoke consent "by any reasonable means" (TCPA revocation rule, FCC 24-24,
# 2024; Reg F 12 CFR 1006.6(e) for debt collection), not only by keyword. Replies that read
# like a revocation are honoured at once and sent to an agent to confirm. Each pattern is one
# way people say it; add a pattern rather than widening one.
_CONTACT_VERB = r"(?:text|txt|message|msg|contact|call|ring|phone|e-?mail|write to|bother)"
OPT_OUT_PATTERNS = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"\b(?:stop|quit|cease)\s+(?:\w+\s+)?(?:texting|messaging|contacting|calling|"
        r"emailing|e-mailing|sending|writing|bothering)\b",
        r"\bstop\s+(?:all\s+)?(?:these|the|your|this)\s+(?:messages|texts|emails|calls)\b",
        r"\b(?:don[’']?t|do\s+not|never)\s+" + _CONTACT_VERB + r"\s+(?:me|us)\b",
        r"\b(?:remove|delete|take)\s+(?:me|my\s+(?:number|details|email))\s+(?:from|off)\b",
        r"\bleave\s+me\s+alone\b",
        r"\bunsubscribe\b",
        r"\bopt\s*-?\s*(?:me\s+)?out\b",
        r"\bno\s+more\s+(?:messages|texts|emails|calls|contact)\b",
    )
]

# Words that mean the customer may be in difficulty or unhappy: an agent should answer them
# first (FCA Consumer Duty and CONC 7: customers in financial difficulty; complaint handling).
HARDSHIP_PATTERNS = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"\bcan[’']?t\s+(?:afford|pay)\b",
        r"\bcan\s*not\s+(?:afford|pay)\b",
        r"\bunable\s+to\s+pay\b",
        r"\bhardship\b",
        r"\bstruggl",
        r"\blost\s+my\s+(?:job|income|home)\b",
        r"\b(?:unemployed|redundan)",
        r"\bbereave",
        r"\bpassed\s+away\b",
        r"\b(?:ill|illness|hospital|cancer|disabled|disability)\b",
        r"\bcomplain",
        r"\bunfair\b",
        r"\bharass",
        r"\bombudsman\b",
        r"\bhelp\b",
    )
]
_QUESTION_START = re.compile(
    r"^\s*(?:what|when|why|how|who|where|which|can|could|is|are|do|does|did|will|would|"
    r"should|may)\b",
    re.IGNORECASE,
)
# Everything that is not a letter or digit, at either end: "Stop.", " stop! ", "«STOP»".
_EDGES = re.compile(r"^[\W_]+|[\W_]+$")

PRIORITY_OPT_OUT_CONFIRMATION = 70
PRIORITY_HARDSHIP = 60
PRIORITY_QUESTION = 40
WHATSAPP_WINDOW = dt.timedelta(hours=24)


def inbound_classify(text: str) -> str:
    """The kind of a reply: a keyword, a free-text opt-out, or other free text."""
    text = text or ""
    word = _EDGES.sub("", text).upper()
    if word in KEYWORDS:
        return KEYWORDS[word]
    if any(pattern.search(text) for pattern in OPT_OUT_PATTERNS):
        return Kind.OPT_OUT_FREE_TEXT
    return Kind.FREE_TEXT


def _attention_priority(text: str) -> int | None:
    """How urgently an agent should read a free-text reply; None if it needs no answer."""
    if any(pattern.search(text) for pattern in HARDSHIP_PATTERNS):
        return PRIORITY_HARDSHIP
    if "?" in text or _QUESTION_START.search(text):
        return PRIORITY_QUESTION
    return None


def help_text() -> str:
    return (
        f"{settings.BRAND_NAME}: we message you about your account and payments. "
        "Reply STOP to opt out, START to opt back in."
    )


def _reply_text(kind: str) -> str:
    if kind == Kind.HELP:
        return help_text()
    if kind == Kind.OPT_OUT:
        return (
            f"{settings.BRAND_NAME}: you will get no more messages here. "
            "Reply START to opt back in."
        )
    if kind == Kind.OPT_IN:
        return f"{settings.BRAND_NAME}: you will get our messages again. Reply STOP to opt out."
    return ""


def sender_normalise(sender: str) -> str:
    """E.164 from what providers send: Twilio's "whatsapp:+447…", Meta's bare "447…"."""
    value = (sender or "").strip()
    if value.lower().startswith("whatsapp:"):
        value = value[len("whatsapp:") :]
    value = re.sub(r"[\s().-]", "", value)
    if value.isdigit():
        value = "+" + value
    return value


def _customers_for(channel: str, sender: str) -> list[Customer]:
    if not sender:
        return []
    if channel == Channel.WHATSAPP:
        # WhatsApp goes to the phone number when no separate WhatsApp number is on file.
        match = Q(whatsapp=sender) | (Q(whatsapp="") & Q(phone=sender))
    elif channel == Channel.SMS:
        match = Q(phone=sender)
    else:
        match = Q(email__iexact=sender)
    return list(Customer.objects.filter(match).order_by("pk"))


def _latest_open_case(customer: Customer) -> Case | None:
    return (
        Case.objects.filter(customer=customer, state__in=OPEN_CASE_STATES)
        .select_related("workflow")
        .order_by("-triggered_at")
        .first()
    )


@dataclass
class InboundResult:
    """What a reply did. `reply_text` is what to answer (TwiML on Twilio, a queued reply
    message on WhatsApp); empty means say nothing."""

    kind: str
    duplicate: bool = False
    reply_text: str = ""
    inbound: InboundMessage | None = None
    customer_ids: list[int] = field(default_factory=list)
    case_ids: list[Any] = field(default_factory=list)
    escalated_case_ids: list[Any] = field(default_factory=list)
    consent_changed: bool = False


def _escalate_or_note(case: Case, *, reason: str, priority: int, text: str) -> bool:
    """Put the case in the agents' queue; a case already with an agent (or past the point
    of escalation) gets a timeline note instead, so nothing is lost."""
    # The customer's own words: sealed (encrypted) in the timeline, which keeps them as
    # written (privacy/crypto.py).
    data = {"reason": reason, "priority": priority, "text": text_seal(text)}
    if case.state in OPEN_STATES:
        try:
            case_transition(case=case, transition="escalate", actor=Actor.CUSTOMER, data=data)
            return True
        except IllegalTransition:
            pass  # another process moved the case first: note it instead
    case_record_event(
        case=case,
        kind="agent_review_requested",
        actor=Actor.CUSTOMER,
        data={"reason": reason, "priority": priority},
    )
    return False


def inbound_receive(
    *, channel: str, provider: str, provider_message_id: str, sender: str, body: str
) -> InboundResult:
    """Store a customer's reply once and act on it for every customer with that number.

    Several source systems (API clients) may know the same person under their own customer
    record; a STOP from that number is that person's "no" to all of them.
    """
    kind = inbound_classify(body)
    sender = sender_normalise(sender)
    customers = _customers_for(channel, sender)
    targets = [(customer, _latest_open_case(customer)) for customer in customers]
    # The row stored points at the most recent open case, if any.
    with_case = [t for t in targets if t[1] is not None]
    primary_customer, primary_case = (
        max(with_case, key=lambda t: t[1].triggered_at)
        if with_case
        else (targets[0] if targets else (None, None))
    )
    result = InboundResult(kind=kind)
    with transaction.atomic():
        try:
            with transaction.atomic():
                inbound = InboundMessage.objects.create(
                    channel=channel,
                    provider=provider,
                    provider_message_id=provider_message_id,
                    sender=sender,
                    customer=primary_customer,
                    case=primary_case,
                    body=body,
                    kind=kind,
                )
        except IntegrityError:
            result.duplicate = True
            return result
        result.inbound = inbound
        result.reply_text = _reply_text(kind)
        for customer, case in targets:
            result.customer_ids.append(customer.pk)
            if case is not None:
                result.case_ids.append(case.pk)
                case_record_event(
                    case=case,
                    kind="inbound_message",
                    actor=Actor.CUSTOMER,
                    data={"channel": channel, "kind": kind, "text": text_seal(body)},
                )
            if kind in (Kind.OPT_OUT, Kind.OPT_OUT_FREE_TEXT):
                source = (
                    "free_text_reply" if kind == Kind.OPT_OUT_FREE_TEXT else f"{channel}_reply_stop"
                )
                result.consent_changed |= consent_revoke(
                    customer=customer, channel=channel, source=source, detail=kind
                )
            elif kind == Kind.OPT_IN:
                result.consent_changed |= consent_restore(
                    customer=customer, channel=channel, source=f"{channel}_reply_start"
                )
            if case is None:
                continue
            if kind == Kind.OPT_OUT_FREE_TEXT:
                reason, priority = "opt_out_confirmation", PRIORITY_OPT_OUT_CONFIRMATION
            elif kind == Kind.FREE_TEXT and (priority := _attention_priority(body)) is not None:
                reason = "customer_reply"
            else:
                continue
            if _escalate_or_note(case, reason=reason, priority=priority, text=body):
                result.escalated_case_ids.append(case.pk)
    logger.info(
        "inbound %s via %s: kind=%s customers=%d escalated=%d",
        channel,
        provider,
        kind,
        len(result.customer_ids),
        len(result.escalated_case_ids),
    )
    return result


def message_queue_reply(*, inbound: InboundMessage, text: str) -> Message | None:
    """Queue our answer to a reply (HELP, the STOP/START confirmation) for the dispatcher,
    which sends `purpose="reply"` rows as they are. One per inbound message; None when the
    sender has no case to hang it on (a Message belongs to a case)."""
    if not text or inbound.case_id is None or inbound.customer_id is None:
        return None
    message, _ = Message.objects.get_or_create(
        key=f"reply:{inbound.provider_message_id}"[:120],
        defaults={
            "case_id": inbound.case_id,
            "customer_id": inbound.customer_id,
            "workflow_key": inbound.case.workflow.key,
            "channel": inbound.channel,
            "purpose": "reply",
            "to": inbound.sender,
            "body_masked": text,
            "status": MessageStatus.QUEUED,
        },
    )
    return message


def whatsapp_window_open(
    customer: Customer | None = None,
    *,
    customer_id: int | None = None,
    now: dt.datetime | None = None,
) -> bool:
    """Meta's customer-service window: free-form WhatsApp text is allowed for 24 hours after
    the customer last wrote to us; outside it only approved templates."""
    if customer is None:
        customer = Customer.objects.filter(pk=customer_id).first()
        if customer is None:
            return False
    since = (now or timezone.now()) - WHATSAPP_WINDOW
    match = Q(customer_id=customer.pk)
    address = channel_address(customer, Channel.WHATSAPP)
    if address:
        match |= Q(sender=address)
    return InboundMessage.objects.filter(
        match, channel=Channel.WHATSAPP, received_at__gte=since
    ).exists()


# --- delivery receipts ----------------------------------------------------------------------

# Provider statuses in our terms. A provider's own "queued"/"sending" means it has the
# message: for us that is sent. Our QUEUED and SENDING mean "not yet handed over" and are
# what the dispatcher claims, so a callback must never put a message back into them.
STATUS_MAP: dict[str, dict[str, str]] = {
    "twilio": {
        "accepted": MessageStatus.SENT,
        "scheduled": MessageStatus.SENT,
        "queued": MessageStatus.SENT,
        "sending": MessageStatus.SENT,
        "sent": MessageStatus.SENT,
        "delivered": MessageStatus.DELIVERED,
        "undelivered": MessageStatus.UNDELIVERED,
        "failed": MessageStatus.FAILED,
        "read": MessageStatus.READ,
    },
    "cloud_api": {
        "sent": MessageStatus.SENT,
        "delivered": MessageStatus.DELIVERED,
        "read": MessageStatus.READ,
        "failed": MessageStatus.FAILED,
    },
}

# Callbacks arrive out of order; a status only ever moves up this ladder. A delivery receipt
# outranks a failure (the handset has it), so "failed" after "delivered" is ignored, while a
# late "delivered" after "failed" corrects it. An unconfirmed message (a crash mid-send) is
# proven sent by any receipt; a cancelled one was never sent and takes none.
STATUS_RANK: dict[str, int] = {
    MessageStatus.QUEUED: 0,
    MessageStatus.SENDING: 1,
    MessageStatus.UNCONFIRMED: 1,
    MessageStatus.SENT: 2,
    MessageStatus.UNDELIVERED: 3,
    MessageStatus.FAILED: 3,
    MessageStatus.DELIVERED: 4,
    MessageStatus.READ: 5,
}


def message_status_update(
    *,
    provider: str,
    provider_message_id: str,
    status: str,
    error_code: str = "",
    at: dt.datetime | None = None,
    message_key: str = "",
) -> Message | None:
    """Apply a provider's delivery receipt. Returns the message if its status moved; None
    for an unknown message, an unknown status, or a receipt older than what we know.
    `message_key` (our key, echoed back by WhatsApp) finds a message whose provider id we
    have not stored."""
    ours = STATUS_MAP.get(provider, {}).get((status or "").lower())
    if ours is None:
        logger.info("status callback from %s with unmapped status %r ignored", provider, status)
        return None
    if not provider_message_id and not message_key:
        return None
    at = at or timezone.now()
    lookup = Q()
    if provider_message_id:
        lookup |= Q(provider_message_id=provider_message_id)
    if message_key:
        lookup |= Q(key=message_key)
    with transaction.atomic():
        message = Message.objects.select_for_update().filter(lookup).order_by("pk").first()
        if message is None:
            logger.info("status callback from %s for an unknown message ignored", provider)
            return None
        current = STATUS_RANK.get(message.status)
        if current is None or STATUS_RANK[ours] <= current:
            return None
        fields = ["status", "updated_at"]
        message.status = ours
        if provider_message_id and not message.provider_message_id:
            message.provider_message_id = provider_message_id[:120]
            fields.append("provider_message_id")
        if not message.sent_at and ours != MessageStatus.FAILED:
            message.sent_at = at
            fields.append("sent_at")
        if ours in (MessageStatus.DELIVERED, MessageStatus.READ) and not message.delivered_at:
            message.delivered_at = at
            fields.append("delivered_at")
        if ours == MessageStatus.READ and not message.read_at:
            message.read_at = at
            fields.append("read_at")
        if ours in (MessageStatus.FAILED, MessageStatus.UNDELIVERED):
            message.error = f"{provider} reported {status}" + (
                f" (error {error_code})" if error_code else ""
            )
            fields.append("error")
        message.save(update_fields=fields)
        case_record_event(
            case=message.case,
            kind="message_status",
            actor=Actor.SYSTEM,
            data={
                "message": message.key,
                "channel": message.channel,
                "status": ours,
                "error_code": str(error_code) if error_code else None,
            },
        )
        if ours in (MessageStatus.FAILED, MessageStatus.UNDELIVERED):
            # Undeliverable after the provider accepted it: try the step's next channel,
            # exactly as for a failure at send time.
            from channels.dispatch import message_fallback

            message_fallback(message)
    return message
