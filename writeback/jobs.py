"""Background jobs for writeback (django-q2). Each is safe to run twice: a delivery first
claims its outcome, and a confirmed outcome is never claimed again."""

from __future__ import annotations

import logging

from writeback.outbox import outcome_deliver, outcomes_deliver_due
from writeback.services import writeback_reconcile

logger = logging.getLogger(__name__)


def outcome_deliver_job(outcome_id: str) -> str:
    result = outcome_deliver(outcome_id=outcome_id)
    logger.info("writeback %s: %s", outcome_id, result)
    return result


def deliver_due_outcomes() -> dict[str, int]:
    """Scheduled every minute: retries whose backoff is over, jobs an open breaker held,
    and claims whose worker died."""
    results = outcomes_deliver_due()
    if results:
        logger.info("writeback sweep: %s", results)
    return results


def reconcile_daily() -> int:
    report = writeback_reconcile(source="schedule")
    logger.info(
        "writeback reconciliation: %d re-driven, %d still open", report.redriven, report.still_open
    )
    return report.pk
