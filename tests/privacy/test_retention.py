"""Retention: customers whose cases all closed longer ago than their workflow's retention
period are anonymised by the daily job (once, resumably, recorded as events and in the
ledger); cases past the evidence period are deleted whole, then their customer. Dates are
moved into the past rather than waited for."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.utils import timezone
from django_q.models import Schedule

from cases.models import Case, CaseEvent, Customer
from channels.dispatch import messages_dispatch
from channels.models import Message, OutboxEntry
from miniapp.storage import private_storage
from policies.services import workflow_export, workflow_import
from privacy.models import PrivacyRecord
from privacy.services import customers_due, retention_apply, retention_days_by_workflow
from tests import factories

NOW = timezone.now()


def closed_case(state: str = "resolved", days_ago: float = 40, client=None, **overrides) -> Case:
    case = factories.case_in_state(state, client, **overrides)
    Case.objects.filter(pk=case.pk).update(closed_at=NOW - dt.timedelta(days=days_ago))
    return case


@pytest.fixture
def short_retention(db):
    # promise_to_pay keeps personal data 30 days after closing; others the default (365).
    return factories.workflow_variant("promise_to_pay", retention_days=30)


@pytest.fixture
def documents_root(settings, tmp_path):
    settings.PRIVATE_MEDIA_ROOT = tmp_path / "private"
    return settings.PRIVATE_MEDIA_ROOT


def test_the_workflow_setting_lives_in_the_spec_and_the_admin(short_retention, admin_client):
    assert workflow_export(workflow=short_retention)["retention_days"] == 30
    assert retention_days_by_workflow()["promise_to_pay"] == 30
    spec = {**factories.workflow_spec("promise_to_pay"), "retention_days": "soon"}
    with pytest.raises(ValidationError, match=r"workflow\.retention_days"):
        workflow_import(spec=spec)
    page = admin_client.get(f"/admin/policies/workflow/{short_retention.pk}/change/")
    assert b"Retention" in page.content or b"retention_days" in page.content
    assert admin_client.get("/admin/privacy/privacyrecord/").status_code == 200


def test_only_customers_whose_cases_all_closed_long_enough_ago_are_due(short_retention, settings):
    due = closed_case(days_ago=31)
    recent = closed_case(days_ago=10)
    client, _ = factories.api_client()
    mixed = closed_case(days_ago=90, client=client, customer={"external_id": "MIXED"})
    factories.case_in_state("outreach", client, customer={"external_id": "MIXED"})
    other = cancelled_failed_payment(days_ago=40)  # its workflow: the default 365 days
    assert customers_due(now=NOW, limit=100) == [due.customer_id]
    assert {recent.customer_id, mixed.customer_id, other.customer_id}.isdisjoint(
        customers_due(now=NOW, limit=100)
    )


def test_retention_anonymises_once_and_records_it(
    short_retention, documents_root, django_capture_on_commit_callbacks, capsys
):
    from channels.sequences import sequences_install_shipped
    from tests.channels.test_dispatch import queued_case

    sequences_install_shipped()
    case = queued_case(customer={"name": "Alan Turing", "email": "alan@example.org"})
    assert messages_dispatch().sent == 1
    for transition in ("engage", "verify", "submit_action", "confirm_writeback"):
        from cases.services import case_transition

        case = case_transition(case=case, transition=transition)
    Case.objects.filter(pk=case.pk).update(closed_at=NOW - dt.timedelta(days=31))
    private_storage().save(f"cases/{case.pk}/proof.pdf", ContentFile(b"%PDF-1.4 passport"))
    kept = closed_case(days_ago=5)

    call_command("privacy", "retention", "--dry-run")
    assert "1 customer(s) due" in capsys.readouterr().out
    with django_capture_on_commit_callbacks(execute=True):
        report = retention_apply(now=NOW)

    assert report.as_dict() == {"anonymised": 1, "cases_deleted": 0, "finished": True}
    customer = Customer.objects.get(pk=case.customer_id)
    assert customer.name == customer.phone == customer.email == ""
    assert customer.external_id.startswith("anon-")
    case = Case.objects.get(pk=case.pk)
    assert case.payload["customer"] == {"external_id": customer.external_id}
    assert case.data["account_reference"] == "[erased]"  # a text field of the contract
    assert case.data["balance"] == "420.50"  # amounts stay: they are the evidence
    message = Message.objects.get(case=case)
    assert message.to == "•••• 456" and "Alan" not in message.body_masked
    assert not OutboxEntry.objects.filter(message_key=message.key).exists()
    assert not (documents_root / "cases" / str(case.pk)).exists()
    [event] = CaseEvent.objects.filter(case=case, kind="personal_data_anonymised")
    record = PrivacyRecord.objects.get(customer=customer)
    assert event.data == {"reason": "anonymised", "record": record.pk}
    assert (record.action, record.requested_by, record.cases) == ("anonymised", "retention job", 1)
    assert Customer.objects.get(pk=kept.customer_id).name == "Ada Lovelace"

    # Run again (django-q may deliver the job twice): nothing more happens.
    assert retention_apply(now=NOW).anonymised == 0
    assert CaseEvent.objects.filter(kind="personal_data_anonymised").count() == 1


def test_an_interrupted_run_carries_on_where_it_stopped(short_retention):
    cases = [closed_case(days_ago=60) for _ in range(3)]
    first = retention_apply(now=NOW, batch=1, budget_seconds=0)
    assert first.finished is False and first.anonymised == 0
    assert retention_apply(now=NOW, batch=1).anonymised == 3
    assert PrivacyRecord.objects.filter(action="anonymised").count() == len(cases)


def cancelled_failed_payment(days_ago: float) -> Case:
    from cases.services import case_transition

    factories.workflow_shipped("failed_payment")
    case = case_transition(case=factories.case_for("failed_payment"), transition="cancel")
    Case.objects.filter(pk=case.pk).update(closed_at=NOW - dt.timedelta(days=days_ago))
    return case


def test_the_default_period_applies_to_workflows_without_their_own(short_retention, settings):
    cancelled_failed_payment(days_ago=40)
    assert retention_apply(now=NOW).anonymised == 0
    settings.RETENTION_DEFAULT_DAYS = 20
    assert retention_apply(now=NOW).anonymised == 1


def test_after_the_evidence_period_the_case_and_then_the_customer_are_deleted(
    short_retention, settings
):
    settings.EVIDENCE_RETENTION_YEARS = 5
    old = closed_case(days_ago=6 * 366)
    client, _ = factories.api_client()
    older_customer = closed_case(days_ago=6 * 366, client=client, customer={"external_id": "TWO"})
    newer_of_same = closed_case(days_ago=100, client=client, customer={"external_id": "TWO"})
    young = closed_case(days_ago=60)

    report = retention_apply(now=NOW)

    assert report.anonymised == 3 and report.cases_deleted == 2
    assert not Case.objects.filter(pk__in=[old.pk, older_customer.pk]).exists()
    assert not CaseEvent.objects.filter(case_id__in=[old.pk, older_customer.pk]).exists()
    assert not Customer.objects.filter(pk=old.customer_id).exists()
    assert Customer.objects.filter(pk=newer_of_same.customer_id).exists()  # a case is left
    assert Case.objects.filter(pk__in=[newer_of_same.pk, young.pk]).count() == 2
    deleted = PrivacyRecord.objects.filter(action="evidence_deleted")
    assert sorted(r.details["customer_deleted"] for r in deleted) == [False, True]
    anonymised = PrivacyRecord.objects.get(
        action="anonymised",
        customer_ref__in=[r.customer_ref for r in deleted if r.details["customer_deleted"]],
    )
    assert anonymised.customer is None  # the ledger outlives the customer row
    assert retention_apply(now=NOW).cases_deleted == 0


def test_the_job_is_scheduled_daily(db):
    schedule = Schedule.objects.get(name="retention")
    assert schedule.func == "privacy.jobs.retention_run"
    assert schedule.schedule_type == Schedule.DAILY
    from privacy.jobs import retention_run

    assert retention_run() == {"anonymised": 0, "cases_deleted": 0, "finished": True}


def test_a_customer_that_cannot_be_anonymised_does_not_stop_the_others(short_retention):
    from cryptography.fernet import Fernet
    from django.db import connection

    broken = closed_case(days_ago=60)
    fine = closed_case(days_ago=60)
    with connection.cursor() as cursor:  # a value written under a key since dropped
        cursor.execute(
            "UPDATE cases_customer SET address = %s WHERE id = %s",
            [Fernet(Fernet.generate_key()).encrypt(b"{}").decode(), broken.customer_id],
        )
    report = retention_apply(now=NOW)
    assert report.anonymised == 1 and report.failed == [broken.customer_id]
    assert report.as_dict()["finished"] is False
    assert Customer.objects.get(pk=fine.customer_id).external_id.startswith("anon-")
    assert not PrivacyRecord.objects.filter(customer_id=broken.customer_id).exists()
