"""Two workers, one outcome (PostgreSQL: row locks, SKIP LOCKED), and a worker killed
mid-delivery whose claim expires and is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection

from tests import factories
from tests.writeback.conftest import PROMISE
from writeback.models import Outcome
from writeback.outbox import outcome_deliver
from writeback.services import outcome_submit

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _workers_played_by_the_test(queued_jobs):
    """Here the test itself plays the workers."""


def pending_outcome(demo_core) -> Outcome:
    outcome = outcome_submit(
        case=factories.case_in_state("verified"), action="promise_to_pay", values=PROMISE
    )
    assert Outcome.objects.get(pk=outcome.pk).state == "pending"
    return outcome


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_workers_racing_for_one_outcome(core_target, demo_core):
    outcome = pending_outcome(demo_core)
    demo_core.faults(latency_ms=400)
    results: list[str] = []

    def worker():
        try:
            results.append(outcome_deliver(outcome_id=outcome.pk))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert sorted(results) == ["confirmed", "not_claimed"]
    stats = demo_core.stats()
    assert (stats["arrangements"], stats["duplicates"]) == (1, 0)
    outcome.case.refresh_from_db()
    assert outcome.case.state == "resolved"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_delivery_is_taken_over_after_its_lease(core_target, demo_core):
    outcome = pending_outcome(demo_core)
    demo_core.faults(latency_ms=2500)
    db = django_settings.DATABASES["default"]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings_test",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "CORE_API_TOKEN": "test-core-token",
        "WRITEBACK_LEASE_SECONDS": "2",
    }
    code = (
        f"from writeback.outbox import outcome_deliver; outcome_deliver(outcome_id='{outcome.pk}')"
    )
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while Outcome.objects.get(pk=outcome.pk).state != "sending":
        assert time.monotonic() < deadline, "the worker never claimed the outcome"
        time.sleep(0.05)
    time.sleep(0.5)  # its POST is now in flight at the core
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert Outcome.objects.get(pk=outcome.pk).state == "sending"
    assert outcome_deliver(outcome_id=outcome.pk) == "not_claimed"  # the lease still holds

    demo_core.faults(latency_ms=0)
    time.sleep(2.1)
    assert outcome_deliver(outcome_id=outcome.pk) == "confirmed"
    stats = demo_core.stats()
    assert (stats["arrangements"], stats["duplicates"]) == (1, 0)
    outcome.case.refresh_from_db()
    assert outcome.case.state == "resolved"


@pytest.mark.django_db(transaction=True)
def test_one_worker_delivers_side_by_side_each_outcome_once(core_target, demo_core, settings):
    settings.WRITEBACK_CONCURRENCY = 4
    outcomes = [pending_outcome(demo_core) for _ in range(12)]
    demo_core.faults(latency_ms=50, error_after_commit_rate=0.25, seed=3)
    from writeback.outbox import outcomes_deliver_due

    for _ in range(10):
        outcomes_deliver_due(budget_seconds=30)
        if not Outcome.objects.exclude(state="confirmed").exists():
            break
    assert Outcome.objects.filter(pk__in=[o.pk for o in outcomes], state="confirmed").count() == 12
    stats = demo_core.stats()
    assert (stats["arrangements"], stats["duplicates"]) == (12, 0)
