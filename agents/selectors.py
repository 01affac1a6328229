"""What the agents' pages read. The case page is one query per table whatever the length
of the timeline: the case with its workflow and customer, its events, messages, replies,
outcomes with their operations, tasks and offer approvals."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Prefetch, Q, QuerySet
from django.utils import timezone

from agents.models import OfferProposal, Task, TaskKind, TaskStatus
from agents.timeline import Entry, action_label, entry_for, plain_text
from cases.models import Case, CaseEvent


def queue_tasks() -> QuerySet[Task]:
    """Open tasks in queue order (priority, then due time, then age), with what the queue
    shows joined in: the partial index task_queue_order serves the order."""
    return (
        Task.objects.filter(status=TaskStatus.OPEN)
        .select_related("case__workflow", "case__customer", "assignee")
        .only(
            *(f.name for f in Task._meta.concrete_fields),
            "case__id",
            "case__event_id",
            "case__state",
            "case__triggered_at",
            "case__workflow__key",
            "case__workflow__version",
            "case__workflow__name",
            "case__customer__external_id",
            "case__customer__name",
            "assignee__username",
        )
        .order_by("-priority", "due_at", "created_at", "id")
    )


def overdue_q(now: dt.datetime) -> Q:
    """Exceptions past their SLA, callbacks past the end of their window."""
    return Q(kind=TaskKind.EXCEPTION, due_at__lt=now) | Q(
        kind=TaskKind.CALLBACK, window_end__lt=now
    )


@dataclass
class CasePage:
    case: Case
    zone: str
    trigger_fields: list[tuple[str, str]]
    offer_actions: list[dict[str, Any]]
    offer_excluded: list[dict[str, Any]]
    timeline: list[Entry]
    messages: list[Any]
    replies: list[Any]
    outcomes: list[Any]
    tasks: list[Task]
    proposals: list[OfferProposal]
    attempts: list[Entry] = field(default_factory=list)
    problems: list[Entry] = field(default_factory=list)

    @property
    def open_exception_task(self) -> Task | None:
        return next(
            (t for t in self.tasks if t.kind == TaskKind.EXCEPTION and t.status == TaskStatus.OPEN),
            None,
        )

    @property
    def open_callback_task(self) -> Task | None:
        return next(
            (t for t in self.tasks if t.kind == TaskKind.CALLBACK and t.status == TaskStatus.OPEN),
            None,
        )

    @property
    def pending_proposal(self) -> OfferProposal | None:
        return next((p for p in self.proposals if p.status == OfferProposal.Status.PENDING), None)


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested trigger data as (dotted name, text) rows."""
    if isinstance(value, dict):
        rows: list[tuple[str, str]] = []
        for key, inner in value.items():
            rows += _flatten(inner, f"{prefix}{key}.")
        return rows
    return [(prefix.rstrip(".").replace("_", " "), plain_text(value))]


def case_page(*, case_id: Any) -> CasePage:
    from channels.contact_rules import customer_zone
    from channels.models import InboundMessage, Message
    from writeback.models import Outcome

    case = (
        Case.objects.select_related("workflow", "customer", "api_client")
        .prefetch_related(
            Prefetch("events", queryset=CaseEvent.objects.order_by("created_at", "id")),
            Prefetch("messages", queryset=Message.objects.order_by("created_at", "id")),
            Prefetch("inbound_messages", queryset=InboundMessage.objects.order_by("received_at")),
            Prefetch(
                "outcomes",
                queryset=Outcome.objects.select_related("target")
                .prefetch_related("operations")
                .order_by("created_at"),
            ),
            Prefetch(
                "tasks", queryset=Task.objects.select_related("assignee").order_by("created_at")
            ),
            Prefetch(
                "offer_proposals",
                queryset=OfferProposal.objects.select_related("proposed_by", "decided_by"),
            ),
        )
        .get(pk=case_id)
    )
    messages = list(case.messages.all())
    by_key = {message.key: message for message in messages}
    timeline = [
        entry_for(event.kind, event.actor, event.data, event.created_at, by_key)
        for event in case.events.all()
    ]
    offer = case.offer or {}
    offered = [
        {
            "label": item.get("label") or action_label(item.get("action")),
            "action": item.get("action"),
            "bounds": _flatten(item.get("bounds", {})),
            "recommended": item.get("recommended"),
            "identity_level": item.get("identity_level", ""),
        }
        for item in offer.get("actions", [])
    ]
    return CasePage(
        case=case,
        zone=customer_zone(case.customer).key,
        trigger_fields=_flatten(case.data or {}),
        offer_actions=offered,
        offer_excluded=[
            {
                "label": action_label(item.get("action")),
                "rule": item.get("rule"),
                "reason": item.get("reason"),
            }
            for item in offer.get("excluded", [])
        ],
        timeline=timeline,
        messages=messages,
        replies=list(case.inbound_messages.all()),
        outcomes=list(case.outcomes.all()),
        tasks=list(case.tasks.all()),
        proposals=list(case.offer_proposals.all()),
        attempts=[e for e in timeline if e.kind.startswith("writeback_")],
        problems=[e for e in timeline if e.tone == "problem"],
    )


def task_times(task: Task, now: dt.datetime | None = None) -> dict[str, Any]:
    """Agent time of one task in whole minutes, for the pages."""
    now = now or timezone.now()
    discovery = task.claim_to_action
    handle = task.handle_time(now)
    return {
        "claim_to_action": _minutes(discovery),
        "handle": _minutes(handle),
        "age": _minutes(now - task.created_at),
    }


def _minutes(delta: dt.timedelta | None) -> str:
    if delta is None:
        return "–"
    minutes = int(delta.total_seconds() // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    return f"{hours // 24} d {hours % 24} h"
