"""A circuit breaker per writeback target, its state in one database row so every worker
shares it. Each change takes the row lock, so two workers never both send the one probe."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from writeback.models import Breaker, WritebackTarget

State = Breaker.State


def _locked(target: WritebackTarget) -> Breaker:
    Breaker.objects.get_or_create(target=target)
    return Breaker.objects.select_for_update().get(target=target)


def _quiet(target: WritebackTarget) -> bool:
    """Closed with no failures counted: the common case, answered without a row lock so
    healthy deliveries never queue on the breaker row."""
    row = Breaker.objects.filter(target=target).values_list("state", "consecutive_failures")
    return row.first() in (None, (State.CLOSED, 0))


def breaker_admit(*, target: WritebackTarget, probe_seconds: float) -> datetime | None:
    """May this worker call the target now? None: yes. Otherwise the time to try again.

    After the cool-down one caller becomes the probe (half-open) for `probe_seconds`; if its
    worker dies, the next caller after that becomes the probe instead."""
    if _quiet(target):
        return None
    now = timezone.now()
    with transaction.atomic():
        breaker = _locked(target)
        if breaker.state == State.CLOSED:
            return None
        if breaker.state == State.OPEN:
            reopen = breaker.opened_at + timedelta(seconds=target.breaker_cooldown_seconds)
            if now < reopen:
                return reopen
        elif breaker.probe_until and now < breaker.probe_until:
            return breaker.probe_until
        breaker.state = State.HALF_OPEN
        breaker.probe_until = now + timedelta(seconds=probe_seconds)
        breaker.save(update_fields=["state", "probe_until", "updated_at"])
        return None


def breaker_record(*, target: WritebackTarget, success: bool) -> str:
    """Count one call's result; returns the breaker's state after it."""
    if success and _quiet(target):
        return State.CLOSED
    with transaction.atomic():
        breaker = _locked(target)
        if success:
            if breaker.state == State.CLOSED and breaker.consecutive_failures == 0:
                return breaker.state
            breaker.state = State.CLOSED
            breaker.consecutive_failures = 0
            breaker.opened_at = breaker.probe_until = None
        else:
            breaker.consecutive_failures += 1
            if breaker.state == State.HALF_OPEN or (
                breaker.consecutive_failures >= target.breaker_threshold
            ):
                breaker.state = State.OPEN
                breaker.opened_at = timezone.now()
                breaker.probe_until = None
        breaker.save()
        return breaker.state


def breaker_reset(*, target: WritebackTarget) -> None:
    """Staff closed the breaker by hand (the target is known to be back)."""
    with transaction.atomic():
        breaker = _locked(target)
        breaker.state = State.CLOSED
        breaker.consecutive_failures = 0
        breaker.opened_at = breaker.probe_until = None
        breaker.save()
