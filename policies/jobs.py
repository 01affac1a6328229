"""Background jobs for policies (django-q2). Each is idempotent: the ORM broker may
deliver a job twice, and case_prepare skips cases that are already prepared."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.utils import timezone
from django_q.tasks import async_task

from cases.models import Case
from policies.services import cases_prepare

logger = logging.getLogger(__name__)

# A batch of triggers is prepared by one job, not one job per case: a 1,000-trigger batch
# costs one queue row.
PREPARE_CHUNK = 500


def prepare_cases(case_ids: list[str]) -> dict[str, int]:
    outcomes = cases_prepare(case_ids=case_ids)
    logger.info("prepared %d case(s): %s", sum(outcomes.values()), dict(outcomes))
    if outcomes["ready"] or outcomes["skipped"]:
        # Outreach is the channels app's job; it takes the batch and skips any case that is
        # not ready (forked, closed) or already begun. "skipped" covers cases prepared
        # inline elsewhere (the demo seed) whose outreach has not begun yet.
        async_task(
            "channels.jobs.begin_outreach",
            case_ids,
            task_name="begin outreach",
            group="begin_outreach",
        )
    return dict(outcomes)


def prepare_cases_enqueue(case_ids: Iterable[Any]) -> None:
    ids = [str(case_id) for case_id in case_ids]
    for start in range(0, len(ids), PREPARE_CHUNK):
        async_task(
            "policies.jobs.prepare_cases",
            ids[start : start + PREPARE_CHUNK],
            task_name="prepare cases",
            group="prepare_cases",
        )


def prepare_pending_cases() -> dict[str, int]:
    """Scheduled sweep: cases whose prepare job was lost (a worker died, the queue was
    down) are prepared here, so no trigger waits forever."""
    cutoff = timezone.now() - timedelta(minutes=2)
    ids = list(
        Case.objects.filter(state="received", offer__isnull=True, triggered_at__lt=cutoff)
        .order_by("triggered_at")
        .values_list("pk", flat=True)[:5000]
    )
    return prepare_cases([str(pk) for pk in ids]) if ids else {}
