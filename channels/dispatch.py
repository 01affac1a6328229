"""Sending queued messages: claim, render, record, send, record again.

Record-then-send: a message row exists (queued) before any provider call, and is moved to
`sending` with a lease when claimed. A worker that dies mid-send leaves the row `sending`;
once the lease runs out, `messages_reconcile` asks the provider whether it went out before
anything is sent again, so a crash never becomes a duplicate reminder.

One worker sends a batch concurrently: provider calls wait on the network, so threads
multiply throughput, while all database work happens in a few bulk statements around them.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from cases.bulk import bulk_copy, bulk_update_arrays, copy_available
from cases.models import Actor, Case, CaseEvent
from channels.contact_rules import channel_refusal, channels_in_order
from channels.models import Message, MessageStatus, MessageTemplate, SequenceStep, StepVariant
from channels.providers import provider_for
from channels.providers.base import (
    OutgoingMessage,
    Provider,
    ProviderError,
    SendResult,
    WhatsAppTemplate,
)
from channels.rendering import RenderedMessage, TemplateProblem, message_render
from miniapp.services import links_issue

logger = logging.getLogger(__name__)

# Longer than a job's timeout (Q_CLUSTER timeout, 120 s): a batch still being sent is never
# taken for an abandoned one.
LEASE = dt.timedelta(seconds=150)
BACKOFF_BASE_SECONDS = 30
BACKOFF_CAP_SECONDS = 30 * 60
CONTACTABLE_STATES = ("received", "outreach", "engaged", "verified")
# Failures after which the provider may or may not have the message, and how long to wait
# before asking it.
AMBIGUOUS_FAILURES = ("timeout", "network")
RECHECK_AFTER = dt.timedelta(seconds=60)


@dataclass
class DispatchReport:
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    cancelled: int = 0
    fallbacks: int = 0
    reconciled: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "claimed": self.claimed,
            "sent": self.sent,
            "retried": self.retried,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "fallbacks": self.fallbacks,
            "reconciled": dict(self.reconciled),
        }


def _event(message: Message, kind: str, **data: Any) -> CaseEvent:
    # Never the address or the text: the ledger says what was sent, not to whom in clear.
    payload = {
        "message": message.key,
        "channel": message.channel,
        "purpose": message.purpose,
        **data,
    }
    if message.step_position is not None:
        payload["step"] = message.step_position
    if message.variant:
        payload["variant"] = message.variant
    if message.template_name:
        payload["template"] = message.template_name
    return CaseEvent(
        case_id=message.case_id,
        kind=kind,
        actor=Actor.SYSTEM,
        data=payload,
        created_at=timezone.now(),
    )


def backoff_delay(attempt: int) -> dt.timedelta:
    """Exponential backoff with full jitter (AWS Architecture Blog, 2015): retries from many
    messages spread out instead of hitting a recovering provider together."""
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, attempt - 1))
    return dt.timedelta(seconds=random.uniform(1, ceiling))  # jitter, not a secret


# --- claiming -------------------------------------------------------------------------------


def messages_claim(*, limit: int, now: dt.datetime) -> list[int]:
    with transaction.atomic():
        ids = list(
            Message.objects.filter(status=MessageStatus.QUEUED, not_before__lte=now)
            .order_by("not_before", "pk")
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)[:limit]
        )
        if ids:
            Message.objects.filter(pk__in=ids, status=MessageStatus.QUEUED).update(
                status=MessageStatus.SENDING,
                claimed_at=now,
                lease_until=now + LEASE,
                attempts=F("attempts") + 1,
            )
    return ids


# --- preparing ------------------------------------------------------------------------------


@dataclass
class Prepared:
    message: Message
    outgoing: OutgoingMessage
    provider: Provider


class _Templates:
    """Templates for one batch, loaded once per workflow instead of once per message."""

    def __init__(self) -> None:
        self._by_key: dict[tuple, MessageTemplate] = {}
        self._loaded: set[str] = set()

    def get(self, message: Message) -> MessageTemplate | None:
        if message.workflow_key not in self._loaded:
            for template in MessageTemplate.objects.filter(workflow_key=message.workflow_key):
                key = (template.workflow_key, template.name, template.channel, template.locale)
                self._by_key[key] = template
            self._loaded.add(message.workflow_key)
        return self._by_key.get(
            (message.workflow_key, message.template_name, message.channel, message.locale)
        )


def _whatsapp_window_open(customer_id: int) -> bool:
    from channels.inbound import whatsapp_window_open

    return whatsapp_window_open(customer_id=customer_id)


def _unsubscribe_url(customer) -> str:
    from channels.consent import unsubscribe_url

    return unsubscribe_url(customer=customer, channel="email")


def _status_callback_url(channel: str) -> str:
    if channel == "sms":
        return f"{settings.PUBLIC_BASE_URL}/channels/twilio/status/"
    return ""


def _why_not_send(message: Message) -> str:
    if message.purpose in ("code", "link"):
        # A one-time code or a renewed link is sent while the customer waits, or not at
        # all: the stored text has the secret masked, so there is nothing to resend.
        return f"{message.purpose}_not_resent"
    case = message.case
    if message.purpose == "step" and case.state not in CONTACTABLE_STATES:
        return f"case_{case.state}"
    if message.purpose == "step":
        refusal = channel_refusal(message.customer, message.channel)
        if refusal:
            return refusal
    return ""


def _prepare(
    messages: list[Message], report: DispatchReport, events: list[CaseEvent]
) -> tuple[list[Prepared], list[Message]]:
    """Render each message with a fresh link, or cancel it if it may no longer be sent.
    Returns what to send and what failed for good before sending (no template)."""
    templates = _Templates()
    sendable: list[Message] = []
    for message in messages:
        reason = _why_not_send(message)
        if reason:
            message.status = MessageStatus.CANCELLED
            message.error = reason
            events.append(_event(message, "message_cancelled", reason=reason))
            report.cancelled += 1
        else:
            sendable.append(message)
    # One fresh link per message, issued in bulk: the raw token lives only in the message.
    links = iter(links_issue(cases=[m.case for m in sendable if m.purpose == "step"]))
    prepared: list[Prepared] = []
    failed: list[Message] = []
    providers: dict[str, Provider] = {}
    for message in sendable:
        link = next(links) if message.purpose == "step" else None
        if message.channel not in providers:
            providers[message.channel] = provider_for(message.channel)
        provider = providers[message.channel]
        message.provider = provider.key
        unsubscribe = (
            _unsubscribe_url(message.customer)
            if message.channel == "email" and message.purpose == "step"
            else ""
        )
        if message.purpose != "step":
            body = message.body_masked
            rendered = RenderedMessage(
                subject=message.subject, body=body, body_masked=body, body_sha256=""
            )
            whatsapp_template = None
        else:
            template = templates.get(message)
            try:
                if template is None:
                    raise TemplateProblem("the template was deleted")
                rendered = message_render(
                    template=template,
                    case=message.case,
                    link=link.url,
                    unsubscribe_url=unsubscribe,
                )
            except TemplateProblem as exc:
                message.status = MessageStatus.FAILED
                message.error = str(exc)[:500]
                events.append(_event(message, "message_failed", error=message.error))
                failed.append(message)
                continue
            whatsapp_template = None
            if message.channel == "whatsapp" and not _whatsapp_window_open(message.customer_id):
                # Meta's 24-hour rule: outside the customer-service window only an approved
                # template may be sent. Decided from recorded inbound messages, not by trying.
                if not template.whatsapp_template_name:
                    message.status = MessageStatus.FAILED
                    message.error = "outside the 24-hour window and no approved template"
                    events.append(_event(message, "message_failed", error=message.error))
                    failed.append(message)
                    continue
                whatsapp_template = WhatsAppTemplate(
                    name=template.whatsapp_template_name,
                    language=template.whatsapp_language or "en",
                    parameters=list(rendered.whatsapp_parameters),
                )
                message.whatsapp_template = template.whatsapp_template_name
        message.subject = rendered.subject
        message.body_masked = rendered.body_masked
        message.body_sha256 = rendered.body_sha256 or ""
        message.encoding = rendered.encoding
        message.segments = rendered.segments
        outgoing = OutgoingMessage(
            key=message.key,
            channel=message.channel,
            to=message.to,
            body=rendered.body,
            subject=rendered.subject,
            whatsapp_template=whatsapp_template,
            status_callback_url=_status_callback_url(message.channel),
            unsubscribe_url=unsubscribe,
        )
        prepared.append(Prepared(message, outgoing, provider))
    return prepared, failed


# --- sending --------------------------------------------------------------------------------


def _send_one(item: Prepared) -> SendResult | ProviderError:
    try:
        return item.provider.send(item.outgoing)
    except ProviderError as exc:
        return exc
    except Exception as exc:  # a provider bug must not lose the batch's bookkeeping
        logger.exception("provider %s raised", item.provider.key)
        return ProviderError(f"{type(exc).__name__} in provider", permanent=False)


_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _send_pool(width: int) -> ThreadPoolExecutor:
    """One long-lived pool per width. Its threads outlive the batch, and with them the
    HTTP client config/http.py keeps per thread and its keep-alive connections: a pool per
    batch built a new client in every thread of every batch, about 30 ms each (httpx loads
    the CA bundle), more than the batch's sends took."""
    with _pools_lock:
        pool = _pools.get(width)
        if pool is None:
            pool = _pools[width] = ThreadPoolExecutor(
                max_workers=width, thread_name_prefix="dispatch-send"
            )
        return pool


class _Sending:
    """A batch's sends, started; `results()` waits for them, in the batch's order."""

    def __init__(self, items: list[Prepared]):
        self.items = items
        self._done: dict[int, SendResult | ProviderError] = {}
        self._futures: dict[int, Future] = {}
        threaded = [i for i in items if getattr(i.provider, "thread_safe", True)]
        # The outbox writes to the database: it sends here, in the worker's own thread.
        for item in items:
            if not getattr(item.provider, "thread_safe", True):
                self._done[id(item)] = _send_one(item)
        width = settings.OUTREACH_SEND_CONCURRENCY
        if min(width, len(threaded)) <= 1:
            for item in threaded:
                self._done[id(item)] = _send_one(item)
        else:
            pool = _send_pool(width)
            self._futures = {id(item): pool.submit(_send_one, item) for item in threaded}

    def results(self) -> list[SendResult | ProviderError]:
        for key, future in self._futures.items():
            self._done[key] = future.result()
        return [self._done[id(item)] for item in self.items]


def _send_all(items: list[Prepared]) -> list[SendResult | ProviderError]:
    return _Sending(items).results()


# --- recording ------------------------------------------------------------------------------


def message_fallback(message: Message, events: list[CaseEvent] | None = None) -> bool:
    """After a permanent failure (at send time, or a later "undelivered" receipt), queue the
    same step on the next permitted channel not yet tried. Without `events` to collect into,
    the event is written now and a dispatch is enqueued once the transaction commits."""
    collected: list[CaseEvent] = [] if events is None else events
    queued = _fallback(message, collected)
    if events is None and collected:
        CaseEvent.objects.bulk_create(collected)
        from channels.jobs import dispatch_enqueue

        transaction.on_commit(dispatch_enqueue)
    return queued


def _fallback(message: Message, events: list[CaseEvent]) -> bool:
    if message.purpose != "step" or message.case.state not in CONTACTABLE_STATES:
        return False
    case = message.case
    step = SequenceStep.objects.filter(
        sequence__workflow_key=message.workflow_key, position=message.step_position
    ).first()
    if step is None or not step.fallback:
        return False
    base_key = f"{case.pk}:step{message.step_position}"
    tried = set(
        Message.objects.filter(case=case, key__startswith=base_key).values_list(
            "channel", flat=True
        )
    )
    tried.add(message.channel)
    from channels.services import message_queue_step

    variant = StepVariant(label=message.variant, template_name=message.template_name)
    for channel in channels_in_order(message.customer, step.channel):
        if channel in tried or channel_refusal(message.customer, channel):
            continue
        queued = message_queue_step(
            case=case,
            step=step,
            variant=variant,
            channel=channel,
            not_before=timezone.now(),
            key_suffix=f":{channel}",
        )
        if queued is not None:
            events.append(_event(message, "message_fallback", to_channel=channel))
            return True
    return False


_STATUSES = frozenset(MessageStatus.values)


def _record(
    items: list[Prepared],
    results: list[SendResult | ProviderError],
    report: DispatchReport,
    events: list[CaseEvent],
    now: dt.datetime,
) -> list[Message]:
    failed_for_good: list[Message] = []
    first_sent: set[Any] = set()
    for item, result in zip(items, results, strict=True):
        message = item.message
        message.lease_until = None
        if isinstance(result, SendResult):
            message.status = result.status if result.status in _STATUSES else "sent"
            message.provider_message_id = result.provider_message_id[:120]
            message.sent_at = now
            message.error = ""
            events.append(
                _event(
                    message,
                    "message_sent",
                    provider=item.provider.key,
                    segments=message.segments or None,
                    whatsapp_template=message.whatsapp_template or None,
                )
            )
            if message.purpose == "step":
                first_sent.add(message.case_id)
            report.sent += 1
            continue
        message.error = result.detail[:500]
        retry = (
            not result.permanent
            and message.attempts < settings.OUTREACH_SEND_MAX_ATTEMPTS
            and message.purpose not in ("code", "link")
        )
        if retry and result.code in AMBIGUOUS_FAILURES and item.provider.can_reconcile:
            # No answer is not "not sent": the provider may have accepted it. Leave the row
            # `sending` with a short lease, so reconciliation asks the provider before any
            # second attempt.
            message.status = MessageStatus.SENDING
            message.lease_until = now + RECHECK_AFTER
            events.append(
                _event(message, "message_retry", error=message.error, reason="checking_first")
            )
            report.retried += 1
        elif retry:
            message.status = MessageStatus.QUEUED
            message.not_before = now + backoff_delay(message.attempts)
            events.append(
                _event(
                    message,
                    "message_retry",
                    error=message.error,
                    attempt=message.attempts,
                    next_attempt_at=message.not_before.isoformat(),
                )
            )
            report.retried += 1
        else:
            message.status = MessageStatus.FAILED
            events.append(
                _event(
                    message,
                    "message_failed",
                    error=message.error,
                    code=result.code or None,
                    permanent=result.permanent,
                    attempts=message.attempts,
                )
            )
            failed_for_good.append(message)
    if first_sent:
        Case.objects.filter(pk__in=first_sent, first_sent_at__isnull=True).update(first_sent_at=now)
    return failed_for_good


# What _prepare sets (the rendered message, or why it will not be sent) and what _record
# sets (the provider's answer): each save writes only its own.
_PREPARED_FIELDS = (
    "status",
    "error",
    "provider",
    "subject",
    "body_masked",
    "body_sha256",
    "encoding",
    "segments",
    "whatsapp_template",
    "updated_at",
)
_RECORDED_FIELDS = (
    "status",
    "error",
    "provider_message_id",
    "not_before",
    "lease_until",
    "sent_at",
    "updated_at",
)


def _save(messages: list[Message], fields: tuple[str, ...] = _PREPARED_FIELDS) -> None:
    now = timezone.now()
    for message in messages:
        message.updated_at = now
    if connection.vendor == "postgresql":
        for start in range(0, len(messages), 500):
            bulk_update_arrays(messages[start : start + 500], fields)
    else:
        Message.objects.bulk_update(messages, fields, batch_size=500)


def _messages_load(ids: list[int]) -> list[Message]:
    """The claimed messages, with the case, workflow and customer that rendering reads."""
    messages = list(
        Message.objects.filter(pk__in=ids, status=MessageStatus.SENDING)
        .select_related("case__customer")
        # The trigger as received and the offer are never read when sending; decoding
        # their JSON was the largest share of loading a batch.
        .defer("case__payload", "case__offer")
        # A batch spans a few workflows: one instance each instead of one per message.
        .prefetch_related("case__workflow")
        .order_by("pk")
    )
    for message in messages:
        # message_queue_step addresses the case's own customer: one instance for both.
        if message.customer_id == message.case.customer_id:
            message.customer = message.case.customer
    return messages


def _events_insert(events: list[CaseEvent]) -> None:
    # COPY on PostgreSQL, as the trigger ingest writes its events (cases/bulk.py says why).
    if copy_available():
        bulk_copy(events)
    else:
        CaseEvent.objects.bulk_create(events)


@dataclass
class _Batch:
    report: DispatchReport
    prepared: list[Prepared]
    failed: list[Message]


def _batch_begin(*, limit: int | None = None, now: dt.datetime | None = None) -> _Batch:
    """Claim a batch, render it, and commit what is about to be sent."""
    now = now or timezone.now()
    report = DispatchReport()
    ids = messages_claim(limit=limit or settings.OUTREACH_DISPATCH_BATCH, now=now)
    report.claimed = len(ids)
    if not ids:
        return _Batch(report, [], [])
    messages = _messages_load(ids)
    events: list[CaseEvent] = []
    with transaction.atomic():
        prepared, failed = _prepare(messages, report, events)
        # Record-then-send: what we are about to send (masked) is committed first.
        _save(messages)
        _events_insert(events)
    return _Batch(report, prepared, failed)


def _batch_finish(batch: _Batch, results: list[SendResult | ProviderError]) -> DispatchReport:
    """Record the provider's answers, retries and fallbacks."""
    report = batch.report
    events: list[CaseEvent] = []
    sent_at = timezone.now()
    with transaction.atomic():
        failed = batch.failed + _record(batch.prepared, results, report, events, sent_at)
        _save([item.message for item in batch.prepared], _RECORDED_FIELDS)
        for message in failed:
            report.failed += 1
            if message_fallback(message, events):
                report.fallbacks += 1
        _events_insert(events)
    return report


def messages_dispatch(
    *, limit: int | None = None, now: dt.datetime | None = None
) -> DispatchReport:
    """Send one batch of due messages. Safe to run in several workers at once."""
    batch = _batch_begin(limit=limit, now=now)
    if not batch.report.claimed:
        return batch.report
    return _batch_finish(batch, _send_all(batch.prepared))


def messages_reconcile(*, now: dt.datetime | None = None) -> Counter:
    """Messages left `sending` by a worker that died: ask the provider before resending."""
    now = now or timezone.now()
    outcomes: Counter = Counter()
    stuck = Message.objects.filter(
        status=MessageStatus.SENDING, lease_until__lt=now
    ).select_related("case", "customer")[:1000]
    for message in stuck:
        with transaction.atomic():
            locked = (
                Message.objects.select_for_update(skip_locked=True)
                .filter(pk=message.pk, status=MessageStatus.SENDING, lease_until__lt=now)
                .first()
            )
            if locked is None:
                continue
            outcome = _reconcile_one(message)
            outcomes[outcome] += 1
    return outcomes


def _reconcile_one(message: Message) -> str:
    provider = provider_for(message.channel)
    since = message.claimed_at or message.created_at
    found: str | None = None
    if provider.can_reconcile and message.body_sha256:
        outgoing = OutgoingMessage(key=message.key, channel=message.channel, to=message.to, body="")
        try:
            found = provider.find_sent(outgoing, body_sha256=message.body_sha256, since=since)
        except ProviderError:
            return "provider_unavailable"  # try again on the next pass
    update: dict[str, Any] = {"lease_until": None, "updated_at": timezone.now()}
    if found:
        update.update(status=MessageStatus.SENT, provider_message_id=found, sent_at=since)
        kind, data = "message_sent", {"reconciled": True, "provider": provider.key}
        outcome = "found_sent"
    elif provider.can_reconcile or not message.body_sha256:
        # The provider says it never went out (or we never got as far as rendering it).
        update.update(status=MessageStatus.QUEUED, not_before=timezone.now())
        kind, data = "message_retry", {"reason": "interrupted_not_sent"}
        outcome = "requeued"
    else:
        update.update(status=MessageStatus.UNCONFIRMED, error="interrupted; provider cannot say")
        kind, data = "message_unconfirmed", {"reason": "interrupted_provider_cannot_confirm"}
        outcome = "unconfirmed"
    Message.objects.filter(pk=message.pk).update(**update)
    CaseEvent.objects.create(**_event_fields(message, kind, data))
    return outcome


def _event_fields(message: Message, kind: str, data: dict[str, Any]) -> dict[str, Any]:
    event = _event(message, kind, **data)
    return {"case_id": event.case_id, "kind": kind, "actor": event.actor, "data": event.data}


def dispatch_until_idle(
    *, budget_seconds: float = 90.0, clock: Callable[[], float] | None = None
) -> DispatchReport:
    """Send batches until nothing is due or the time budget is spent (jobs have a timeout).

    Batches overlap: the next batch is claimed, rendered and committed, and its sends
    started, while the previous batch's sends are still in flight; the previous batch is
    recorded after that. One batch after another, a worker waited on the provider about
    half its time (docs/performance.md). When nothing more is due, or the budget is spent,
    the batch in flight is still recorded, and one more claim picks up any fallbacks that
    its recording queued."""
    import time

    clock = clock or time.monotonic
    deadline = clock() + budget_seconds
    total = DispatchReport()
    in_flight: tuple[_Batch, _Sending] | None = None
    while True:
        batch = _batch_begin() if clock() < deadline else None
        if batch is not None and not batch.report.claimed:
            batch = None
        started = (batch, _Sending(batch.prepared)) if batch is not None else None
        if in_flight is not None:
            previous, sending = in_flight
            report = _batch_finish(previous, sending.results())
            for name in ("claimed", "sent", "retried", "failed", "cancelled", "fallbacks"):
                setattr(total, name, getattr(total, name) + getattr(report, name))
        elif started is None:
            return total
        in_flight = started


def message_send_now(
    *, case: Case, channel: str, to: str, key: str, body: str, body_masked: str, purpose: str
) -> Message:
    """Send one message while the customer waits (a one-time code), recorded like any
    other: the row first, then the provider call, then the result and its event. A failure
    is final: the customer asks again instead of getting a stale code later."""
    now = timezone.now()
    message = Message.objects.create(
        key=key,
        case=case,
        customer=case.customer,
        workflow_key=case.workflow.key,
        channel=channel,
        purpose=purpose,
        to=to,
        body_masked=body_masked,
        status=MessageStatus.SENDING,
        attempts=1,
        claimed_at=now,
        lease_until=now + LEASE,
    )
    provider = provider_for(channel)
    message.provider = provider.key
    item = Prepared(message, OutgoingMessage(key=key, channel=channel, to=to, body=body), provider)
    report, events = DispatchReport(), []
    with transaction.atomic():
        _record([item], _send_all([item]), report, events, timezone.now())
        _save([message])
        CaseEvent.objects.bulk_create(events)
    return message
