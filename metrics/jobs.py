"""Scheduled metrics work (django-q); the schedule is created by a data migration."""

from __future__ import annotations

from metrics.services import case_facts_refresh_due


def facts_refresh() -> int:
    """Every minute: bring the case facts up to the timeline."""
    return case_facts_refresh_due()
