"""Scheduled jobs of the privacy app. django-q2 may deliver a job twice; retention_apply
records each step in the step's own transaction, so a second run finds nothing to redo."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings

from privacy.services import retention_apply

logger = logging.getLogger(__name__)


def retention_run() -> dict[str, Any]:
    """Anonymise the customers past their retention period and delete the cases past the
    evidence period; scheduled daily by migration privacy/0003. A run that stops at its time
    budget leaves the rest to the next (or to `manage.py privacy retention`)."""
    report = retention_apply(budget_seconds=settings.Q_CLUSTER["timeout"] / 2)
    logger.info("retention: %s", report.as_dict())
    return report.as_dict()
