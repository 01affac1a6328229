"""Reconciliation (command, schedule, report), an agent's re-drive, and the admin."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from staff.models import AuditEntry
from tests import factories
from tests.writeback.conftest import PROMISE, submit
from writeback.models import Breaker, Outcome, ReconciliationReport
from writeback.services import OutcomeRefused, outcome_retry, outcome_submit


def queued(case) -> Outcome:
    """Submitted, but its job never ran (the queue lost it)."""
    return outcome_submit(case=case, action="promise_to_pay", values=PROMISE)


def test_reconcile_lists_then_redrives(core_target, demo_core, django_capture_on_commit_callbacks):
    lost = queued(factories.case_in_state("verified"))
    stuck = queued(factories.case_in_state("verified"))
    Outcome.objects.filter(pk=stuck.pk).update(
        state="sending", lease_until=timezone.now() - timedelta(seconds=1)
    )
    demo_core.faults(error_rate=1.0)
    core_target.max_attempts = 1
    core_target.save()
    failed = submit(factories.case_in_state("verified"), django_capture_on_commit_callbacks)
    demo_core.faults(error_rate=0.0)

    out = StringIO()
    call_command("writeback", "reconcile", "--dry-run", stdout=out)
    assert "1 pending, 1 sent without acknowledgement, 1 failed; would re-drive 2" in out.getvalue()
    assert str(lost.pk) in out.getvalue() and str(failed.pk) in out.getvalue()
    assert demo_core.stats()["arrangements"] == 0

    out = StringIO()
    call_command("writeback", "reconcile", stdout=out)
    assert "re-drove 2, 2 now confirmed; 1 still open." in out.getvalue()
    for outcome in (lost, stuck):
        outcome.refresh_from_db()
        assert outcome.state == "confirmed"
    report = ReconciliationReport.objects.first()
    assert (report.source, report.redriven, report.failed, report.still_open) == (
        "command",
        2,
        1,
        1,
    )
    assert report.details["failed"] == [str(failed.pk)]


def test_the_scheduled_jobs_exist_and_run(core_target, demo_core):
    from django_q.models import Schedule

    from writeback.jobs import deliver_due_outcomes, reconcile_daily

    assert set(Schedule.objects.values_list("func", flat=True)) >= {
        "writeback.jobs.deliver_due_outcomes",
        "writeback.jobs.reconcile_daily",
    }
    outcome = queued(factories.case_in_state("verified"))
    assert deliver_due_outcomes() == {"confirmed": 1}
    report = ReconciliationReport.objects.get(pk=reconcile_daily())
    assert (report.source, report.redriven, report.still_open) == ("schedule", 0, 0)
    outcome.refresh_from_db()
    assert outcome.state == "confirmed"


def _failing_route_retry_workflow():
    spec = factories.workflow_spec("promise_to_pay")
    routes = dict(spec["exception_routes"])
    routes["system_unavailable"] = {"outcome": "retry", "max_retries": 3}
    return factories.workflow_variant("promise_to_pay", exception_routes=routes)


@pytest.mark.parametrize("route_retries", [True, False])
def test_an_agent_redrives_a_failed_writeback(
    core_target, demo_core, route_retries, django_capture_on_commit_callbacks
):
    if route_retries:
        _failing_route_retry_workflow()  # the case stays writeback_failed
    case = factories.case_in_state("verified")
    core_target.max_attempts = 1
    core_target.save()
    demo_core.faults(down=True)
    outcome = submit(case, django_capture_on_commit_callbacks)
    case.refresh_from_db()
    assert case.state == ("writeback_failed" if route_retries else "escalated")
    demo_core.faults(down=False)
    with django_capture_on_commit_callbacks(execute=True):
        outcome_retry(outcome=outcome, user=factories.user())
    outcome.refresh_from_db()
    case.refresh_from_db()
    assert (outcome.state, case.state) == ("confirmed", "resolved")
    kind = "writeback_retried" if route_retries else "completed_by_agent"
    assert case.events.get(kind=kind).data["redrive"] is True
    assert demo_core.stats()["arrangements"] == 1
    with pytest.raises(OutcomeRefused, match="Only a failed outcome"):
        outcome_retry(outcome=outcome, user=None)


def test_admin_pages_and_actions(
    core_target, demo_core, admin_client, django_capture_on_commit_callbacks
):
    core_target.breaker_threshold = 1
    core_target.max_attempts = 1
    core_target.save()
    demo_core.faults(down=True)
    outcome = submit(factories.case_in_state("verified"), django_capture_on_commit_callbacks)
    assert Breaker.objects.get(target=core_target).state == "open"

    page = admin_client.get(reverse("admin:writeback_writebacktarget_changelist"))
    assert "Open (jobs held)" in page.content.decode()
    admin_client.post(
        reverse("admin:writeback_writebacktarget_changelist"),
        {"action": "reset_breaker", "_selected_action": [core_target.pk]},
    )
    assert Breaker.objects.get(target=core_target).state == "closed"

    page = admin_client.get(reverse("admin:writeback_outcome_change", args=[outcome.pk]))
    body = page.content.decode()
    assert page.status_code == 200 and "503" in body and "arrangement" in body

    demo_core.faults(down=False)
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            reverse("admin:writeback_outcome_changelist"),
            {"action": "redrive", "_selected_action": [outcome.pk]},
        )
    outcome.refresh_from_db()
    assert outcome.state == "confirmed"
    # Staff actions on a case enter the audit trail (staff/), the breaker reset too.
    redrive = AuditEntry.objects.get(action="redrive")
    assert (redrive.target_id, redrive.detail) == (
        str(outcome.case_id),
        {"outcome": str(outcome.pk)},
    )
    assert AuditEntry.objects.filter(target_type="writeback.breaker", action="change").exists()

    edit = admin_client.get(
        reverse("admin:writeback_writebacktarget_change", args=[core_target.pk])
    )
    assert edit.status_code == 200
    call_command("writeback", "reconcile", stdout=StringIO())
    page = admin_client.get(reverse("admin:writeback_reconciliationreport_changelist"))
    assert page.status_code == 200 and "command" in page.content.decode()


def test_admin_shows_mapping_errors_on_the_field(core_target, admin_client):
    url = reverse("admin:writeback_writebacktarget_change", args=[core_target.pk])
    form = {
        "key": "core_rest",
        "name": "Core",
        "kind": "rest",
        "base_url": "",
        "drop_folder": "",
        "auth_kind": "bearer",
        "secret_env": "CORE_API_TOKEN",
        "basic_username": "closeloop",
        "timeout_seconds": "10",
        "success_statuses": "200-299",
        "retryable_statuses": "500-599",
        "permanent_statuses": "400-499",
        "max_attempts": "5",
        "backoff_base_seconds": "1",
        "backoff_cap_seconds": "60",
        "breaker_threshold": "5",
        "breaker_cooldown_seconds": "60",
        "operations": '{"dispute": [{"name": "n", "method": "TELEPORT", "path": "/x"}]}',
    }
    answer = admin_client.post(url, form)
    assert answer.status_code == 200
    assert "method &#x27;TELEPORT&#x27; is not one of" in answer.content.decode()
    form["operations"] = json.dumps(
        {
            "dispute": [
                {"name": "n", "method": "POST", "path": "/n", "body": {"t": "{values.reason}"}}
            ]
        }
    )
    assert admin_client.post(url, form).status_code == 302
