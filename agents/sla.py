"""Service levels for the agents' queue, read from the AGENT_SLA_HOURS setting. Plain
functions with no models, so the backfill migration can use them too."""

from __future__ import annotations

import datetime as dt
from functools import cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


@cache
def sla_rules(text: str) -> tuple[tuple[int, int], ...]:
    """ "70:4,40:24,0:72" → ((70, 4), (40, 24), (0, 72)): (lowest priority, hours), highest
    first. A priority below every threshold takes the last (loosest) rule."""
    rules: list[tuple[int, int]] = []
    for part in text.split(","):
        if not part.strip():
            continue
        try:
            priority, hours = (int(value) for value in part.split(":"))
        except ValueError as exc:
            raise ImproperlyConfigured(
                f"AGENT_SLA_HOURS: {part.strip()!r} is not PRIORITY:HOURS, e.g. 70:4"
            ) from exc
        if not 0 <= priority <= 100 or hours <= 0:
            raise ImproperlyConfigured(
                f"AGENT_SLA_HOURS: {part.strip()!r} needs a priority of 0–100 and hours above 0"
            )
        rules.append((priority, hours))
    if not rules:
        raise ImproperlyConfigured("AGENT_SLA_HOURS needs at least one PRIORITY:HOURS rule")
    return tuple(sorted(rules, reverse=True))


def sla_hours(priority: int, text: str | None = None) -> int:
    rules = sla_rules(settings.AGENT_SLA_HOURS if text is None else text)
    for threshold, hours in rules:
        if priority >= threshold:
            return hours
    return rules[-1][1]


def sla_due_at(*, created_at: dt.datetime, priority: int) -> dt.datetime:
    return created_at + dt.timedelta(hours=sla_hours(priority))
