"""Outreach jobs (django-q2). All idempotent: the ORM broker delivers at least once, and
each step is guarded by a row state (CaseOutreach, Message) or a unique message key."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from django_q.tasks import async_task

from channels.dispatch import dispatch_until_idle, messages_reconcile
from channels.services import (
    cases_awaiting_outreach,
    cases_expire,
    outreach_advance,
    outreach_advance_due,
    outreach_begin,
)

logger = logging.getLogger(__name__)


def dispatch_enqueue() -> None:
    async_task("channels.jobs.dispatch_messages", task_name="dispatch messages", group="dispatch")


def dispatch_messages() -> dict[str, Any]:
    report = dispatch_until_idle(budget_seconds=90)
    if report.claimed:
        logger.info("dispatch: %s", report.as_dict())
    return report.as_dict()


def begin_outreach(case_ids: list[str]) -> dict[str, int]:
    """Right after a batch is prepared: start each case's sequence and send what is due now,
    so a trigger becomes a message within seconds rather than at the next sweep."""
    outcomes: Counter = Counter()
    for case_id in case_ids:
        outreach = outreach_begin(case=case_id)
        if outreach is None:
            outcomes["no_sequence_or_not_ready"] += 1
            continue
        outcomes[outreach_advance(outreach_id=outreach.pk)] += 1
    if outcomes["queued"]:
        dispatch_enqueue()
    return dict(outcomes)


def outreach_tick() -> dict[str, Any]:
    """Every minute: recover interrupted sends, start cases whose start was lost, advance
    due steps, expire old links, and send what is due."""
    summary: dict[str, Any] = {"reconciled": dict(messages_reconcile())}
    lost = cases_awaiting_outreach()
    if lost:
        summary["begun"] = begin_outreach([str(pk) for pk in lost])
    summary["advanced"] = dict(outreach_advance_due())
    summary["expired"] = cases_expire()
    summary["dispatch"] = dispatch_until_idle(budget_seconds=45).as_dict()
    return summary
