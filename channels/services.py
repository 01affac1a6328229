"""The sequence engine: which step is due for a case, on which channel, and when.

A case's outreach is a CaseOutreach row. The advance job takes rows whose next step is
due, applies the contact rules, and queues a Message (record-then-send: the dispatcher in
channels/dispatch.py sends it). Every skip and deferral is a CaseEvent with its reason, so
the case page answers "why did (or didn't) this customer get a message?".
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from cases.models import Actor, Case, CaseEvent
from cases.services import IllegalTransition, case_record_event, case_transition
from channels.contact_rules import (
    channel_address,
    channel_refusal,
    channels_in_order,
    contact_window_open_at,
    customer_zone,
    frequency_cap_frees_at,
)
from channels.models import (
    CaseOutreach,
    Message,
    MessageStatus,
    Sequence,
    SequenceChannel,
    SequenceStep,
    StepVariant,
)
from channels.rendering import template_for

CONTACTABLE_STATES = ("received", "outreach", "engaged", "verified")
DEFAULT_SEND_AT = dt.time(10, 0)


# --- starting outreach ----------------------------------------------------------------------


def outreach_begin(*, case: Case | Any) -> CaseOutreach | None:
    """Start a prepared case's sequence (idempotent). A case whose workflow has no active
    sequence goes to an agent: it would otherwise wait silently until it expired."""
    case_id = case.pk if isinstance(case, Case) else case
    with transaction.atomic():
        case = (
            Case.objects.select_for_update(of=("self",))
            .select_related("workflow", "customer")
            .get(pk=case_id)
        )
        existing = CaseOutreach.objects.filter(case=case).first()
        if existing or case.state != "received" or not case.offer:
            return existing
        sequence = Sequence.objects.filter(workflow_key=case.workflow.key).first()
        if sequence is None:
            case_transition(
                case=case,
                transition="escalate",
                data={"reason": "no_outreach_sequence", "priority": 20},
            )
            return None
        return CaseOutreach.objects.create(case=case, sequence=sequence, next_due_at=timezone.now())


def cases_awaiting_outreach(limit: int = 5000) -> list[Any]:
    """Prepared cases whose outreach never began (the worker was down, a job was lost)."""
    return list(
        Case.objects.filter(state="received", offer__isnull=False, outreach__isnull=True)
        .exclude(offer__actions=[])
        .order_by("triggered_at")
        .values_list("pk", flat=True)[:limit]
    )


# --- timing ---------------------------------------------------------------------------------


def _anchor_date(case: Case, field: str) -> dt.date | None:
    value = (case.data or {}).get(field)
    if isinstance(value, str):
        moment = parse_datetime(value)
        if moment is not None:
            return moment.date()
        return parse_date(value)
    return None


def step_due_at(*, step: SequenceStep, outreach: CaseOutreach, case: Case) -> dt.datetime | None:
    """When a step falls due, in UTC; None if its date field is missing from the data."""
    offset = dt.timedelta(days=step.offset_days, hours=step.offset_hours)
    if step.anchor == SequenceStep.Anchor.TRIGGER:
        return case.triggered_at + offset
    if step.anchor == SequenceStep.Anchor.PREVIOUS:
        return (outreach.last_touch_at or case.triggered_at) + offset
    anchor = _anchor_date(case, step.anchor_field)
    if anchor is None:
        return None
    # "3 days before data.due_date at 10:00" is a wall-clock time for the customer.
    day = anchor + dt.timedelta(days=step.offset_days)
    local = dt.datetime.combine(day, step.send_at or DEFAULT_SEND_AT).replace(
        tzinfo=customer_zone(case.customer)
    )
    return local.astimezone(dt.UTC) + dt.timedelta(hours=step.offset_hours)


def _variant_for(step: SequenceStep, variants: list[StepVariant], case: Case) -> StepVariant:
    """A stable split: the same case always lands in the same variant of a step."""
    digest = hashlib.sha256(f"{case.pk}:{step.position}".encode()).hexdigest()
    bucket = int(digest[:8], 16) % 100
    total = 0
    for variant in variants:
        total += variant.weight
        if bucket < total:
            return variant
    return variants[-1]


def _rate_slot(sequence: Sequence, now: dt.datetime) -> dt.datetime:
    """The send time under the workflow's rate limit: slots `60 / rate` seconds apart,
    handed out under a row lock so workers share one pace."""
    if not sequence.send_rate_per_minute:
        return now
    no_key = connection.features.has_select_for_no_key_update
    locked = Sequence.objects.select_for_update(no_key=no_key).get(pk=sequence.pk)
    slot = max(now, locked.next_send_slot or now)
    interval = dt.timedelta(seconds=60 / locked.send_rate_per_minute)
    Sequence.objects.filter(pk=sequence.pk).update(next_send_slot=slot + interval)
    return slot


# --- advancing ------------------------------------------------------------------------------


@dataclass
class StepDecision:
    outcome: str  # queued, deferred, skipped, waiting, finished, not_due
    detail: dict[str, Any]


def _skip(case: Case, step: SequenceStep | None, reason: str, **detail: Any) -> None:
    data = {"reason": reason, **detail}
    if step is not None:
        data["step"] = step.position
    case_record_event(case=case, kind="outreach_skipped", actor=Actor.SYSTEM, data=data)


def _finish(outreach: CaseOutreach, reason: str) -> StepDecision:
    outreach.status = CaseOutreach.Status.FINISHED
    outreach.finished_reason = reason
    outreach.next_due_at = None
    return StepDecision("finished", {"reason": reason})


def _choose_channel(step: SequenceStep, case: Case) -> tuple[str | None, list[tuple[str, str]]]:
    customer = case.customer
    candidates = channels_in_order(customer, step.channel)
    if step.channel != SequenceChannel.PREFERRED and not step.fallback:
        candidates = [step.channel]
    refused: list[tuple[str, str]] = []
    for channel in candidates:
        reason = channel_refusal(customer, channel)
        if not reason:
            return channel, refused
        refused.append((channel, reason))
    return None, refused


def _await_response(outreach: CaseOutreach, now: dt.datetime) -> StepDecision:
    window = dt.timedelta(hours=outreach.sequence.response_window_hours)
    outreach.status = CaseOutreach.Status.AWAITING_RESPONSE
    outreach.next_due_at = (outreach.last_touch_at or now) + window
    return StepDecision("waiting", {"until": outreach.next_due_at.isoformat()})


def outreach_advance_one(*, outreach: CaseOutreach, now: dt.datetime) -> StepDecision:
    """Apply the rules to one case's next step. Call with the outreach row locked."""
    case = outreach.case
    sequence = outreach.sequence
    if case.state not in CONTACTABLE_STATES:
        return _finish(outreach, f"case_{case.state}")
    if outreach.status == CaseOutreach.Status.AWAITING_RESPONSE:
        if case.state in ("received", "outreach"):
            from policies.services import case_route_exception

            _finish(outreach, "no_response")
            route = case_route_exception(
                case=case,
                exception_type="no_response",
                detail={"touches": outreach.touches, "last_touch_at": _iso(outreach.last_touch_at)},
            )
            return StepDecision("finished", {"reason": "no_response", "route": route})
        # Opened but not finished: the link's expiry decides (abandoned, with the last step).
        return _finish(outreach, "engaged")
    if not sequence.active:
        outreach.next_due_at = now + dt.timedelta(minutes=15)
        return StepDecision("not_due", {"reason": "sequence_paused"})
    steps = [s for s in sequence.steps.all() if s.position >= outreach.next_position]
    if outreach.touches >= sequence.max_touches or not steps:
        return _await_response(outreach, now)
    step = steps[0]
    due = step_due_at(step=step, outreach=outreach, case=case)
    if due is None:
        _skip(case, step, "date_missing", field=step.anchor_field)
        outreach.next_position = step.position + 1
        outreach.next_due_at = now
        return StepDecision("skipped", {"reason": "date_missing"})
    if due > now:
        outreach.next_due_at = due
        return StepDecision("not_due", {"due": due.isoformat()})
    channel, refused = _choose_channel(step, case)
    if channel is None:
        reason = refused[0][1] if len(refused) == 1 else "no_permitted_channel"
        _skip(case, step, reason, channels=dict(refused))
        outreach.next_position = step.position + 1
        outreach.next_due_at = now
        return StepDecision("skipped", {"reason": reason})
    zone = customer_zone(case.customer)
    opens = contact_window_open_at(
        now, zone, sequence.contact_window_start, sequence.contact_window_end
    )
    if opens > now:
        _skip(
            case,
            step,
            "quiet_hours",
            deferred_until=opens.isoformat(),
            customer_time=now.astimezone(zone).strftime("%H:%M %Z"),
        )
        outreach.next_due_at = opens
        return StepDecision("deferred", {"reason": "quiet_hours", "until": opens.isoformat()})
    frees = frequency_cap_frees_at(case.customer, now)
    if frees is not None:
        # When the cap frees up, the contact window may be closed: that is checked then.
        _skip(
            case,
            step,
            "frequency_cap",
            deferred_until=frees.isoformat(),
            cap=settings.OUTREACH_FREQUENCY_CAP,
            window_days=settings.OUTREACH_FREQUENCY_WINDOW_DAYS,
        )
        outreach.next_due_at = frees
        return StepDecision("deferred", {"reason": "frequency_cap", "until": frees.isoformat()})
    variants = list(step.variants.all())
    if not variants:
        _skip(case, step, "no_template")
        outreach.next_position = step.position + 1
        outreach.next_due_at = now
        return StepDecision("skipped", {"reason": "no_template"})
    variant = _variant_for(step, variants, case)
    if refused:
        case_record_event(
            case=case,
            kind="outreach_channel_fallback",
            actor=Actor.SYSTEM,
            data={"step": step.position, "refused": dict(refused), "using": channel},
        )
    message = message_queue_step(
        case=case,
        step=step,
        variant=variant,
        channel=channel,
        not_before=_rate_slot(sequence, now),
        now=now,
    )
    if message is None:
        _skip(case, step, "no_template", template=variant.template_name, channel=channel)
        outreach.next_position = step.position + 1
        outreach.next_due_at = now
        return StepDecision("skipped", {"reason": "no_template"})
    if case.state == "received":
        case_transition(
            case=case, transition="start_outreach", data={"sequence": sequence.workflow_key}
        )
    outreach.touches += 1
    outreach.last_touch_at = now
    outreach.next_position = step.position + 1
    outreach.next_due_at = now  # the next step's own timing is worked out on the next pass
    return StepDecision("queued", {"message": message.key, "channel": channel})


def _iso(moment: dt.datetime | None) -> str:
    return moment.isoformat() if moment else ""


def message_queue_step(
    *,
    case: Case,
    step: SequenceStep,
    variant: StepVariant,
    channel: str,
    not_before: dt.datetime,
    key_suffix: str = "",
    now: dt.datetime | None = None,
) -> Message | None:
    """Record the message before anything is sent. The key makes a repeated advance (a job
    delivered twice) find the same row instead of queueing a second message."""
    customer = case.customer
    template = template_for(
        workflow_key=case.workflow.key,
        name=variant.template_name,
        channel=channel,
        locale=customer.locale,
    )
    if template is None:
        return None
    message, _ = Message.objects.get_or_create(
        key=f"{case.pk}:step{step.position}{key_suffix}",
        defaults={
            "case": case,
            "customer": customer,
            "workflow_key": case.workflow.key,
            "channel": channel,
            "purpose": "step",
            "step_position": step.position,
            "variant": variant.label,
            "template_name": variant.template_name,
            "locale": template.locale,
            "to": channel_address(customer, channel),
            "not_before": not_before,
            "created_at": now or timezone.now(),
        },
    )
    return message


def outreach_advance_due(*, now: dt.datetime | None = None, limit: int = 2000) -> Counter:
    """Advance every case whose next step is due. Each case in its own short transaction,
    claimed with SKIP LOCKED so several workers can share the work."""
    now = now or timezone.now()
    outcomes: Counter = Counter()
    due = (
        CaseOutreach.objects.filter(
            status__in=[CaseOutreach.Status.ACTIVE, CaseOutreach.Status.AWAITING_RESPONSE],
            next_due_at__lte=now,
        )
        .order_by("next_due_at")
        .values_list("pk", flat=True)[:limit]
    )
    for outreach_id in list(due):
        outcomes[outreach_advance(outreach_id=outreach_id, now=now)] += 1
    return outcomes


def outreach_advance(*, outreach_id: int, now: dt.datetime | None = None) -> str:
    """Advance one case until nothing more is due right now (steps skipped for lack of
    consent fall through to the next). Returns the last decision's outcome."""
    now = now or timezone.now()
    outcome = "not_due"
    for _ in range(20):  # a bound: a sequence has at most a handful of steps
        with transaction.atomic():
            outreach = (
                CaseOutreach.objects.select_for_update(skip_locked=True, of=("self",))
                .select_related("case", "case__workflow", "case__customer", "sequence")
                .filter(pk=outreach_id)
                .first()
            )
            if outreach is None or outreach.status == CaseOutreach.Status.FINISHED:
                return "locked_or_finished"
            if outreach.next_due_at is None or outreach.next_due_at > now:
                return outcome
            try:
                decision = outreach_advance_one(outreach=outreach, now=now)
            except IllegalTransition:
                # The customer acted (or an agent did) while we were deciding; look again.
                outreach.refresh_from_db()
                decision = StepDecision("not_due", {"reason": "case_changed"})
            outreach.save()
        outcome = decision.outcome
        if outcome != "skipped":
            return outcome
    return outcome


# --- ending outreach ------------------------------------------------------------------------

# How far a customer got, in order: the last one reached is recorded when a case is
# abandoned, so the drop-off funnel counts it.
FUNNEL_STEPS = (
    ("message_sent", "sent"),
    ("engaged", "opened"),
    ("link_opened", "opened"),
    ("code_sent", "code_sent"),
    ("verified", "verified"),
    ("actions_viewed", "actions_viewed"),
    ("option_chosen", "option_chosen"),
    ("consent_given", "consent_given"),
)


def case_last_step(*, case: Case) -> str:
    kinds = set(CaseEvent.objects.filter(case=case).values_list("kind", flat=True))
    reached = "none"
    for kind, step in FUNNEL_STEPS:
        if kind in kinds:
            reached = step
    return reached


def cases_expire(*, now: dt.datetime | None = None, limit: int = 2000) -> int:
    """Cases whose link expired without a submission become `abandoned`, recording the
    last step the customer reached."""
    now = now or timezone.now()
    ids = list(
        Case.objects.filter(state__in=CONTACTABLE_STATES, expires_at__lte=now)
        .order_by("expires_at")
        .values_list("pk", flat=True)[:limit]
    )
    done = 0
    for case_id in ids:
        case = Case.objects.select_related("workflow").get(pk=case_id)
        try:
            case_transition(
                case=case,
                transition="abandon",
                data={"reason": "link_expired", "last_step": case_last_step(case=case)},
            )
        except IllegalTransition:
            continue
        CaseOutreach.objects.filter(case_id=case_id).exclude(
            status=CaseOutreach.Status.FINISHED
        ).update(status=CaseOutreach.Status.FINISHED, finished_reason="expired", next_due_at=None)
        Message.objects.filter(case_id=case_id, status=MessageStatus.QUEUED).update(
            status=MessageStatus.CANCELLED, error="case expired"
        )
        done += 1
    return done


def outreach_ledger(*, customer_id: int) -> Iterable[CaseEvent]:
    """Every contact decision for a customer across cases: sends, skips, deferrals, status
    changes, replies and consent changes."""
    kinds = Q(kind__startswith="message_") | Q(kind__startswith="outreach_")
    kinds |= Q(kind__in=["consent_revoked", "consent_restored", "inbound_message"])
    return (
        CaseEvent.objects.filter(kinds, case__customer_id=customer_id)
        .select_related("case")
        .order_by("-created_at")
    )
