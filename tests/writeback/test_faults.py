"""Fault injection against the demo core on loopback: whatever the core does, every
outcome is posted exactly once and every case ends resolved once the core recovers."""

from __future__ import annotations

import time

import pytest

from cases.models import CaseEvent
from tests import factories
from tests.writeback.conftest import submit
from writeback.models import Outcome
from writeback.outbox import outcome_deliver, outcomes_deliver_due

HEALTHY = {
    "error_rate": 0.0,
    "error_after_commit_rate": 0.0,
    "timeout_rate": 0.0,
    "latency_ms": 0,
    "down": False,
}


def attempts(case, **match):
    events = CaseEvent.objects.filter(case=case, kind="writeback_attempt").order_by("id")
    return [e.data for e in events if all(e.data.get(k) == v for k, v in match.items())]


def assert_exactly_once(demo_core, outcomes):
    for outcome in outcomes:
        outcome.refresh_from_db()
        outcome.case.refresh_from_db()
        assert outcome.state == "confirmed", outcome.last_error
        assert outcome.case.state == "resolved"
    stats = demo_core.stats()
    assert stats["arrangements"] == len(outcomes)
    assert stats["duplicates"] == 0


def test_server_errors_are_retried_until_the_core_recovers(
    core_target, verified_case, demo_core, django_capture_on_commit_callbacks
):
    demo_core.faults(error_rate=1.0)
    outcome = submit(verified_case, django_capture_on_commit_callbacks)
    outcome.refresh_from_db()
    verified_case.refresh_from_db()
    assert (outcome.state, verified_case.state) == ("pending", "action_submitted")
    assert outcome.last_error["status"] == 500
    assert attempts(verified_case)[-1]["error_kind"] == "status"
    demo_core.faults(**HEALTHY)
    assert outcomes_deliver_due() == {"confirmed": 1}
    assert_exactly_once(demo_core, [outcome])


def test_error_after_commit_is_replayed_not_duplicated(
    core_target, verified_case, demo_core, django_capture_on_commit_callbacks
):
    demo_core.faults(error_after_commit_rate=1.0)
    outcome = submit(verified_case, django_capture_on_commit_callbacks)
    assert demo_core.stats()["arrangements"] == 1  # the core did it, then answered 500
    outcome.refresh_from_db()
    assert outcome.state == "pending"
    demo_core.faults(**HEALTHY)
    assert outcome_deliver(outcome_id=outcome.pk) == "confirmed"
    assert_exactly_once(demo_core, [outcome])
    assert demo_core.stats()["replays"] == 1


def test_a_hanging_core_times_out_and_the_retry_replays(
    core_target, verified_case, demo_core, django_capture_on_commit_callbacks
):
    core_target.timeout_seconds = 0.3
    core_target.save()
    demo_core.faults(timeout_rate=1.0, hang_seconds=1.0)
    started = time.monotonic()
    outcome = submit(verified_case, django_capture_on_commit_callbacks)
    assert time.monotonic() - started < 1.0  # our timeout, not the core's hang
    [send] = attempts(verified_case)
    assert (send["error_kind"], send["status"], send["result"]) == ("timeout", None, "retry")
    demo_core.faults(**HEALTHY)
    core_target.timeout_seconds = 3
    core_target.save()
    # The hung request still holds the key at the core: the retry waits for it and replays.
    assert outcome_deliver(outcome_id=outcome.pk) == "confirmed"
    assert_exactly_once(demo_core, [outcome])


def test_refused_connections_then_recovery(
    core_target, demo_core, django_capture_on_commit_callbacks
):
    demo_core.stop()
    outcomes = [
        submit(factories.case_in_state("verified"), django_capture_on_commit_callbacks)
        for _ in range(3)
    ]
    for outcome in outcomes:
        assert attempts(outcome.case)[-1]["error_kind"] == "refused"
    demo_core.restart()
    assert outcomes_deliver_due() == {"confirmed": 3}
    assert_exactly_once(demo_core, outcomes)


def test_slow_responses_within_the_timeout_succeed(
    core_target, verified_case, demo_core, django_capture_on_commit_callbacks
):
    demo_core.faults(latency_ms=300)
    outcome = submit(verified_case, django_capture_on_commit_callbacks)
    assert_exactly_once(demo_core, [outcome])
    assert all(a["latency_ms"] >= 300 for a in attempts(verified_case))


def test_the_same_job_delivered_twice(
    core_target, verified_case, demo_core, django_capture_on_commit_callbacks
):
    demo_core.faults(error_rate=1.0)
    outcome = submit(verified_case, django_capture_on_commit_callbacks)
    demo_core.faults(**HEALTHY)
    from writeback.jobs import outcome_deliver_job

    assert outcome_deliver_job(str(outcome.pk)) == "confirmed"
    assert outcome_deliver_job(str(outcome.pk)) == "not_claimed"
    assert_exactly_once(demo_core, [outcome])


def test_mixed_faults_then_recovery_posts_everything_once(
    core_target, demo_core, django_capture_on_commit_callbacks
):
    core_target.max_attempts = 50
    core_target.breaker_threshold = 1000
    core_target.save()
    demo_core.faults(error_rate=0.3, error_after_commit_rate=0.3, seed=11)
    outcomes = [
        submit(factories.case_in_state("verified"), django_capture_on_commit_callbacks)
        for _ in range(12)
    ]
    for _ in range(30):
        if not Outcome.objects.exclude(state="confirmed").exists():
            break
        outcomes_deliver_due()
    demo_core.faults(**HEALTHY)
    outcomes_deliver_due()
    assert_exactly_once(demo_core, outcomes)
    assert demo_core.stats()["replays"] > 0


def test_attempts_exhausted_fail_the_writeback_and_route_the_case(
    core_target, verified_case, demo_core, django_capture_on_commit_callbacks
):
    core_target.max_attempts = 2
    core_target.save()
    demo_core.faults(error_rate=1.0)
    outcome = submit(verified_case, django_capture_on_commit_callbacks)
    assert outcome_deliver(outcome_id=outcome.pk) == "failed"
    outcome.refresh_from_db()
    verified_case.refresh_from_db()
    assert outcome.state == "failed" and outcome.attempts == 2
    # promise_to_pay routes system_unavailable to the agents' queue.
    assert verified_case.state == "escalated"
    failed = verified_case.events.get(kind="writeback_failed").data
    assert failed["error_kind"] == "status"
    assert failed["last_request"]["status"] == 500
    assert failed["last_request"]["path"].endswith("/arrangements")
    assert "test-core-token" not in str(failed)
    escalated = verified_case.events.get(kind="escalated").data
    assert escalated["exception"] == "system_unavailable"


def test_a_permanent_refusal_is_not_retried(
    core_target, verified_case, demo_core, django_capture_on_commit_callbacks
):
    outcome = submit(
        verified_case,
        django_capture_on_commit_callbacks,
        values={"amount": "-5", "date": "2026-12-01"},
    )
    outcome.refresh_from_db()
    verified_case.refresh_from_db()
    assert (outcome.state, outcome.attempts) == ("failed", 1)
    assert verified_case.state == "escalated"
    [send] = attempts(verified_case)
    assert (send["status"], send["result"]) == (422, "permanent")
    failed = verified_case.events.get(kind="writeback_failed").data
    assert "amount" in failed["last_request"]["response"]
    assert demo_core.stats()["requests"] == 1  # the one refused POST, never again


def test_read_back_mismatch_fails_with_both_versions(
    core_target, verified_case, demo_core, django_capture_on_commit_callbacks
):
    operations = core_target.operations
    operations["promise_to_pay"][0]["expect"] = {"amount": "{values.amount}", "date": "2026-01-01"}
    core_target.operations = operations
    core_target.save()
    outcome = submit(verified_case, django_capture_on_commit_callbacks)
    outcome.refresh_from_db()
    verified_case.refresh_from_db()
    assert outcome.state == "failed"
    assert verified_case.state == "escalated"
    failed = verified_case.events.get(kind="writeback_failed").data
    assert failed["error_kind"] == "mismatch"
    assert failed["last_request"]["versions"] == {
        "sent": {"date": "2026-01-01"},
        "stored": {"date": "2026-12-01"},
    }


@pytest.mark.parametrize("auth_kind", ["basic", "hmac"])
def test_basic_and_hmac_authentication(
    core_target, verified_case, demo_core, auth_kind, django_capture_on_commit_callbacks
):
    core_target.auth_kind = auth_kind
    core_target.save()
    outcome = submit(verified_case, django_capture_on_commit_callbacks)
    assert_exactly_once(demo_core, [outcome])


def test_a_missing_secret_is_retried_not_sent(
    core_target, verified_case, demo_core, settings, django_capture_on_commit_callbacks
):
    settings.CORE_API_TOKEN = ""
    outcome = submit(verified_case, django_capture_on_commit_callbacks)
    outcome.refresh_from_db()
    assert outcome.state == "pending"
    assert attempts(verified_case)[-1]["error_kind"] == "config"
    assert demo_core.stats()["requests"] == 0
