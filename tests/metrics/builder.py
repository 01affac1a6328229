"""Hand-built timelines for metrics tests: cases and events written directly with explicit
timestamps (bulk_create), so every expected figure can be worked out by hand."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from typing import Any

from cases.models import Case, CaseEvent, Customer
from writeback.models import Outcome, WritebackTarget

_numbers = itertools.count(1)
HOUR = dt.timedelta(hours=1)
MINUTE = dt.timedelta(minutes=1)


class Timeline:
    """Collects cases and their events, then writes them in two bulk inserts."""

    def __init__(self, *, workflow, client) -> None:
        self.workflow = workflow
        self.client = client
        self.cases: list[Case] = []
        self.events: list[CaseEvent] = []
        self.outcomes: list[Outcome] = []

    def case(
        self,
        at: dt.datetime,
        *,
        state: str,
        outcome: str = "",
        closed_at: dt.datetime | None = None,
        segment: str = "retail",
        currency: str = "GBP",
        workflow=None,
    ) -> Case:
        n = next(_numbers)
        customer = Customer.objects.create(api_client=self.client, external_id=f"m-cust-{n}")
        case = Case(
            workflow=workflow or self.workflow,
            customer=customer,
            api_client=self.client,
            event_id=f"m-evt-{n}",
            body_fingerprint="0" * 64,
            payload={},
            data={"currency": currency, "balance": "420.50"},
            segment=segment,
            state=state,
            outcome=outcome,
            triggered_at=at,
            closed_at=closed_at,
            expires_at=at + dt.timedelta(days=7),
        )
        self.cases.append(case)
        self.event(case, "triggered", at, actor="api")
        return case

    def event(
        self, case: Case, kind: str, at: dt.datetime, *, actor: str = "system", **data: Any
    ) -> None:
        self.events.append(CaseEvent(case=case, kind=kind, actor=actor, data=data, created_at=at))

    def sent(self, case: Case, at: dt.datetime, channel: str, step: int, variant: str) -> None:
        self.event(
            case,
            "message_sent",
            at,
            message=f"msg-{next(_numbers)}",
            channel=channel,
            purpose="step",
            step=step,
            variant=variant,
            template=f"{channel}-{step}",
            provider="outbox",
        )

    def outcome(self, case: Case, action: str, values: dict, *, state: str, attempts: int) -> None:
        self.outcomes.append(
            Outcome(
                case=case,
                target=WritebackTarget.objects.get(key="core_rest"),
                action=action,
                values=values,
                state=state,
                attempts=attempts,
            )
        )

    def save(self) -> None:
        Case.objects.bulk_create(self.cases)
        CaseEvent.objects.bulk_create(self.events)
        Outcome.objects.bulk_create(self.outcomes)


def money(value: str) -> Decimal:
    return Decimal(value)
