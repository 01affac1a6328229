"""The circuit breaker per target: opens after N consecutive failures, holds jobs (pending,
not failed) without calling the target, lets one probe through after the cool-down, and
closes on success."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from tests import factories
from tests.writeback.conftest import submit
from writeback.breaker import breaker_admit, breaker_record, breaker_reset
from writeback.models import Breaker, Outcome
from writeback.outbox import outcome_deliver


def breaker(target) -> Breaker:
    return Breaker.objects.get(target=target)


def cool_down_passed(target) -> None:
    Breaker.objects.filter(target=target).update(
        opened_at=timezone.now() - timedelta(seconds=target.breaker_cooldown_seconds + 1)
    )


def test_breaker_opens_holds_probes_and_closes(
    core_target, demo_core, django_capture_on_commit_callbacks
):
    core_target.breaker_threshold = 2
    core_target.save()
    demo_core.faults(down=True)
    first = submit(factories.case_in_state("verified"), django_capture_on_commit_callbacks)
    assert breaker(core_target).consecutive_failures == 1
    assert outcome_deliver(outcome_id=first.pk) == "retry"
    assert breaker(core_target).state == "open"
    calls = demo_core.stats()["requests"]

    second = submit(factories.case_in_state("verified"), django_capture_on_commit_callbacks)
    second.refresh_from_db()
    assert demo_core.stats()["requests"] == calls  # held without calling the core
    assert (second.state, second.attempts) == ("pending", 0)
    assert second.next_attempt_at > timezone.now()
    assert second.case.events.filter(kind="writeback_attempt").count() == 0

    # After the cool-down one probe goes through; the core is still down, so it reopens.
    cool_down_passed(core_target)
    assert outcome_deliver(outcome_id=second.pk) == "retry"
    assert breaker(core_target).state == "open"
    assert demo_core.stats()["requests"] == calls + 1

    demo_core.faults(down=False)
    cool_down_passed(core_target)
    assert outcome_deliver(outcome_id=second.pk) == "confirmed"
    assert breaker(core_target).state == "closed"
    assert breaker(core_target).consecutive_failures == 0
    assert outcome_deliver(outcome_id=first.pk) == "confirmed"
    assert demo_core.stats()["arrangements"] == 2


def test_half_open_admits_exactly_one_probe(core_target):
    core_target.breaker_threshold = 1
    core_target.save()
    assert breaker_record(target=core_target, success=False) == "open"
    assert breaker_admit(target=core_target, probe_seconds=60) is not None
    cool_down_passed(core_target)
    assert breaker_admit(target=core_target, probe_seconds=60) is None  # the probe
    assert breaker(core_target).state == "half_open"
    assert breaker_admit(target=core_target, probe_seconds=60) is not None  # everyone else
    # The probe's worker died: once its time is up, another caller may probe.
    Breaker.objects.filter(target=core_target).update(probe_until=timezone.now())
    assert breaker_admit(target=core_target, probe_seconds=60) is None
    assert breaker_record(target=core_target, success=True) == "closed"


def test_staff_can_reset_an_open_breaker(core_target):
    core_target.breaker_threshold = 1
    core_target.save()
    breaker_record(target=core_target, success=False)
    breaker_reset(target=core_target)
    assert breaker(core_target).state == "closed"
    assert breaker_admit(target=core_target, probe_seconds=60) is None


def test_permanent_refusals_do_not_open_the_breaker(
    core_target, demo_core, django_capture_on_commit_callbacks
):
    core_target.breaker_threshold = 1
    core_target.save()
    submit(
        factories.case_in_state("verified"),
        django_capture_on_commit_callbacks,
        values={"amount": "0", "date": "2026-12-01"},
    )
    assert Outcome.objects.get().state == "failed"
    assert breaker(core_target).state == "closed"
