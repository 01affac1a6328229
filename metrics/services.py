"""Metrics services: turn case timelines into CaseFacts (one row per case) and keep them
fresh. Facts are always recomputed from the case row and its CaseEvents, never counted up
by hand, so a rebuild gives the same answer as the incremental refresh."""

from __future__ import annotations

import datetime as dt
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import connection, transaction
from django.db.models.fields.json import KT
from django.utils import timezone

from cases.bulk import bulk_copy, copy_available
from cases.models import Actor, Case, CaseEvent
from metrics.models import (
    CaseFact,
    DailyRollup,
    ExceptionFact,
    ExceptionRollup,
    RefreshMark,
    Stage,
    UnitCost,
)
from metrics.rollups import rollups_rebuild, rollups_refresh

# Issue 8's agent desk emits these; any event by an agent also counts as a manual touch.
AGENT_KINDS = frozenset(
    {
        "agent_claimed",
        "agent_assigned",
        "agent_note",
        "agent_correction",
        "completed_by_agent",
        "closed_by_agent",
    }
)
# The agent's part ends with an outcome recorded, the case closed, a new offer sent to the
# customer (agents: offered_again), a failed writeback re-driven, or a callback made.
AGENT_CLOSING_KINDS = frozenset(
    {
        "completed_by_agent",
        "closed_by_agent",
        "offered_again",
        "writeback_retried",
        "callback_completed",
    }
)
# policies.services.case_route_exception records the exception type as data["exception"]
# on whichever of these its route produced.
EXCEPTION_KINDS = frozenset(
    {"exception_retry", "alternative_offered", "escalated", "closed_by_rule"}
)
MESSAGE_CHANNELS = ("sms", "email", "whatsapp")
# The confirmed outcome's action → (value kind, field of Outcome.values holding the amount).
VALUE_FIELDS = {
    "promise_to_pay": ("promised", "amount"),
    "pay_now": ("paid", "amount"),
    "payment_plan": ("arranged", "total"),
}
# An event younger than this may still have company: a transaction that took a lower id
# can commit after a higher one, so the refresh mark never passes a young event.
SETTLE_SECONDS = 300
REFRESH_BATCH = 20_000
# SQLite allows 32,766 bound parameters per statement; PostgreSQL takes bigger chunks.
CHUNK = {"postgresql": 2000}.get(connection.vendor, 500)


def unit_cost_get() -> UnitCost:
    """The unit costs, created with defaults on first use."""
    row = UnitCost.objects.order_by("pk").first()
    return row or UnitCost.objects.create()


@dataclass
class _Send:
    at: dt.datetime
    channel: str
    step: int | None
    variant: str
    template: str


@dataclass
class _Timeline:
    """What one pass over a case's events finds."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MESSAGE_CHANNELS, 0))
    sends: list[_Send] = field(default_factory=list)
    reached: dict[int, dt.datetime] = field(default_factory=dict)
    written_back: dt.datetime | None = None
    customer_submitted: dt.datetime | None = None
    agent_submitted: bool = False
    max_attempt: int = 0
    writeback_failed: bool = False
    escalated: bool = False
    agent_touched: bool = False
    agent_corrected: bool = False
    claimed: dt.datetime | None = None
    agent_closed: dt.datetime | None = None
    exceptions: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def first(self, stage: int, at: dt.datetime) -> None:
        self.reached.setdefault(stage, at)

    def read(self, kind: str, actor: str, data: Any, at: dt.datetime) -> None:
        data = data if isinstance(data, dict) else {}
        if actor == Actor.AGENT or kind in AGENT_KINDS:
            self.agent_touched = True
        if kind in EXCEPTION_KINDS and isinstance(data.get("exception"), str):
            self.exceptions[data["exception"][:32]] += 1
        if kind == "message_sent":
            channel = data.get("channel", "")
            if channel in self.counts:
                self.counts[channel] += 1
            # Codes and replies are messages too (they cost), but only sequence steps
            # are outreach that a customer responds to.
            if data.get("purpose", "step") == "step":
                step = data.get("step")
                self.sends.append(
                    _Send(
                        at,
                        str(channel)[:16],
                        step if isinstance(step, int) else None,
                        str(data.get("variant", ""))[:16],
                        str(data.get("template", ""))[:64],
                    )
                )
                self.first(Stage.SENT, at)
        elif kind == "message_status" and data.get("status") in ("delivered", "read"):
            self.first(Stage.DELIVERED, at)
        elif kind in ("engaged", "link_opened"):
            self.first(Stage.OPENED, at)
        elif kind == "verified":
            self.first(Stage.VERIFIED, at)
        elif kind == "option_chosen":
            self.first(Stage.OPTION_CHOSEN, at)
        elif kind == "action_submitted":
            self.customer_submitted = self.customer_submitted or at
            self.first(Stage.SUBMITTED, at)
        elif kind == "completed_by_agent":
            self.agent_submitted = True
        elif kind == "writeback_confirmed":
            self.written_back = self.written_back or at
        elif kind == "writeback_attempt":
            attempt = data.get("attempt")
            self.max_attempt = max(self.max_attempt, attempt if isinstance(attempt, int) else 1)
        elif kind in ("writeback_failed", "writeback_retried"):
            self.writeback_failed = True
        elif kind == "escalated":
            self.escalated = True
        elif kind == "agent_correction":
            self.agent_corrected = True
        elif kind in ("agent_claimed", "agent_assigned"):
            # A task handed to someone counts from the hand-over, as a claimed one does.
            self.claimed = self.claimed or at
        if kind in AGENT_CLOSING_KINDS and self.claimed and self.agent_closed is None:
            self.agent_closed = at

    def attribution(self) -> _Send | None:
        opened = self.reached.get(Stage.OPENED)
        before = [send for send in self.sends if opened is None or send.at <= opened]
        if before:
            return before[-1]
        return self.sends[-1] if self.sends else None


def _seconds(start: dt.datetime | None, end: dt.datetime | None) -> float | None:
    if start is None or end is None or end < start:
        return None
    return (end - start).total_seconds()


def _amount(values: Any, name: str) -> Decimal | None:
    raw = values.get(name) if isinstance(values, dict) else None
    try:
        amount = Decimal(str(raw))
    except (InvalidOperation, ValueError):
        return None
    return amount.quantize(Decimal("0.01")) if amount.is_finite() else None


CASE_COLUMNS = (
    "id",
    "api_client_id",
    "workflow__key",
    "workflow__version",
    "segment",
    "state",
    "outcome",
    "triggered_at",
    "closed_at",
    "currency",
)


def fact_build(
    case: dict[str, Any], events: Iterable[tuple], confirmed: tuple[str, Any] | None
) -> tuple[CaseFact, list[ExceptionFact]]:
    """One case's facts from its row (CASE_COLUMNS), its events ((kind, actor, data,
    created_at) in timeline order) and its confirmed outcome ((action, values) or None)."""
    timeline = _Timeline()
    for kind, actor, data, at in events:
        timeline.read(kind, actor, data, at)
    stage = max((s for s in timeline.reached), default=Stage.TRIGGERED)
    resolved = timeline.written_back is not None
    if resolved and timeline.customer_submitted is not None:
        stage = Stage.WRITTEN_BACK
    send = timeline.attribution()
    value_kind, amount = "", None
    if resolved and confirmed is not None and confirmed[0] in VALUE_FIELDS:
        value_kind, name = VALUE_FIELDS[confirmed[0]]
        amount = _amount(confirmed[1], name)
        value_kind = value_kind if amount is not None else ""
    fact = CaseFact(
        case_id=case["id"],
        api_client_id=case["api_client_id"],
        workflow_key=case["workflow__key"],
        workflow_version=case["workflow__version"],
        segment=case["segment"] or "",
        state=case["state"],
        outcome=case["outcome"] or "",
        triggered_at=case["triggered_at"],
        closed_at=case["closed_at"],
        channel=send.channel if send else "",
        step=send.step if send else None,
        variant=send.variant if send else "",
        template=send.template if send else "",
        stage=int(stage),
        messages_sms=timeline.counts["sms"],
        messages_email=timeline.counts["email"],
        messages_whatsapp=timeline.counts["whatsapp"],
        opened=Stage.OPENED in timeline.reached,
        submitted=timeline.customer_submitted is not None or timeline.agent_submitted,
        resolved=resolved,
        escalated=timeline.escalated,
        agent_touched=timeline.agent_touched,
        agent_corrected=timeline.agent_corrected,
        exceptions=sum(timeline.exceptions.values()),
        writeback_finished=resolved or timeline.writeback_failed,
        writeback_first_attempt=(
            resolved and timeline.max_attempt <= 1 and not timeline.writeback_failed
        ),
        resolution_seconds=_seconds(case["triggered_at"], timeline.written_back),
        action_seconds=_seconds(timeline.reached.get(Stage.OPENED), timeline.customer_submitted),
        handle_seconds=_seconds(timeline.claimed, timeline.agent_closed),
        value_kind=value_kind,
        value_amount=amount,
        value_currency=str(case["currency"] or "")[:3] if value_kind else "",
        refreshed_at=timezone.now(),
    )
    exceptions = [
        ExceptionFact(fact_id=case["id"], exception_type=kind, occurrences=count)
        for kind, count in sorted(timeline.exceptions.items())
    ]
    return fact, exceptions


def _facts_compute(case_rows: list[dict[str, Any]]) -> tuple[list[CaseFact], list[ExceptionFact]]:
    from writeback.models import Outcome

    ids = [row["id"] for row in case_rows]
    events: dict[Any, list[tuple]] = defaultdict(list)
    rows = (
        CaseEvent.objects.filter(case_id__in=ids)
        .order_by("case_id", "created_at", "id")
        .values_list("case_id", "kind", "actor", "data", "created_at")
    )
    for case_id, *event in rows:
        events[case_id].append(event)
    confirmed = {
        case_id: (action, values)
        for case_id, action, values in Outcome.objects.filter(
            case_id__in=ids, state=Outcome.State.CONFIRMED
        ).values_list("case_id", "action", "values")
    }
    facts, exception_rows = [], []
    for row in case_rows:
        fact, exceptions = fact_build(row, events.get(row["id"], ()), confirmed.get(row["id"]))
        facts.append(fact)
        exception_rows.extend(exceptions)
    return facts, exception_rows


def _insert(rows: list) -> None:
    # COPY on PostgreSQL, as the trigger ingest writes (cases/bulk.py says why).
    if copy_available():
        bulk_copy(rows)
    elif rows:
        type(rows[0]).objects.bulk_create(rows, batch_size=CHUNK)


def _case_rows(queryset) -> list[dict[str, Any]]:
    return list(queryset.annotate(currency=KT("data__currency")).values(*CASE_COLUMNS))


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def case_facts_refresh(*, case_ids: Iterable[Any]) -> int:
    """Recompute the facts of these cases from their timelines. Returns cases written."""
    written = 0
    for ids in _chunks(sorted(set(case_ids)), CHUNK):
        facts, exception_rows = _facts_compute(_case_rows(Case.objects.filter(id__in=ids)))
        with transaction.atomic():
            ExceptionFact.objects.filter(fact_id__in=ids).delete()
            CaseFact.objects.filter(case_id__in=ids).delete()
            _insert(facts)
            _insert(exception_rows)
            rollups_refresh(case_ids=ids)
        written += len(facts)
    return written


def case_facts_rebuild(*, progress=None) -> int:
    """Throw every fact away and recompute them all from the timeline, case by case in id
    order. Marks the timeline as read up to the last event that existed when it began."""
    last_event = CaseEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
    with transaction.atomic():
        ExceptionFact.objects.all().delete()
        CaseFact.objects.all().delete()
        DailyRollup.objects.all().delete()
        ExceptionRollup.objects.all().delete()
    written, after = 0, None
    while True:
        page = Case.objects.order_by("id")
        if after is not None:
            page = page.filter(id__gt=after)
        case_rows = _case_rows(page[:CHUNK])
        if not case_rows:
            break
        facts, exception_rows = _facts_compute(case_rows)
        with transaction.atomic():
            _insert(facts)
            _insert(exception_rows)
        written += len(facts)
        after = case_rows[-1]["id"]
        if progress:
            progress(written)
    rollups_rebuild()
    _mark_set(last_event)
    return written


def _mark_set(event_id: int) -> None:
    RefreshMark.objects.update_or_create(
        pk=1, defaults={"last_event_id": event_id, "refreshed_at": timezone.now()}
    )


def case_facts_refresh_due(*, budget_seconds: float = 50.0, batch: int = REFRESH_BATCH) -> int:
    """Refresh the facts of every case with events the refresh has not read yet (the
    scheduled job). Young events are read again next time (see SETTLE_SECONDS); a refresh
    is idempotent, so reading one twice only costs time. Returns cases refreshed."""
    deadline = time.monotonic() + budget_seconds
    refreshed = 0
    while time.monotonic() < deadline:
        with transaction.atomic():
            mark, _ = RefreshMark.objects.select_for_update().get_or_create(pk=1)
            events = list(
                CaseEvent.objects.filter(id__gt=mark.last_event_id)
                .order_by("id")
                .values_list("id", "case_id", "created_at")[:batch]
            )
            if not events:
                mark.refreshed_at = timezone.now()
                mark.save(update_fields=["refreshed_at"])
                break
            refreshed += case_facts_refresh(case_ids={case_id for _, case_id, _ in events})
            settled_before = timezone.now() - dt.timedelta(seconds=SETTLE_SECONDS)
            young = [event_id for event_id, _, at in events if at > settled_before]
            mark.last_event_id = min(young) - 1 if young else events[-1][0]
            mark.refreshed_at = timezone.now()
            mark.save(update_fields=["last_event_id", "refreshed_at"])
        if young or len(events) < batch:
            break
    return refreshed
