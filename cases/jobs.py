"""Scheduled jobs of the cases app. django-q2's ORM broker delivers a job at least once, so
each job is safe to run twice; the logic lives in services (here, cases/intake.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from django.conf import settings

from cases.evidence import events_seal
from cases.intake import intake_folder_scan


def intake_scan() -> list[dict[str, Any]]:
    """Import the complete files in the drop folder (INTAKE_DIR); scheduled every minute
    by migration cases/0003. Does nothing while INTAKE_DIR is unset."""
    if not settings.INTAKE_DIR:
        return []
    timeout = settings.Q_CLUSTER["timeout"]
    return intake_folder_scan(
        root=Path(settings.INTAKE_DIR),
        settle_seconds=settings.INTAKE_SETTLE_SECONDS,
        # django-q kills a job at its timeout: a file claimed longer ago was orphaned. The
        # minute's grace covers claim stamps kept to the second and clocks of other hosts
        # sharing the folder.
        stale_seconds=timeout + 60,
        # Claim no new file late in the run, so the file under way can finish in time.
        claim_until=time.monotonic() + timeout / 2,
    )


def evidence_seal() -> int:
    """Append new events to their cases' hash chains; scheduled every minute by migration
    cases/0005. Returns the number of events sealed."""
    # Half the job timeout: a run that stops early leaves the rest for the next minute.
    return events_seal(budget_seconds=settings.Q_CLUSTER["timeout"] / 2)
