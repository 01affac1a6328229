"""`manage.py customer erase`: open cases are cancelled first, a case awaiting its writeback
refuses the erasure, and afterwards no model holds the customer's name, contact details,
address or external id anywhere outside the evidence the policy keeps (the timeline, which
holds none of them either)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.apps import apps
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import models

from cases.models import Case, CaseEvent, Customer
from channels.inbound import inbound_receive
from miniapp.storage import private_storage
from privacy.fields import EncryptedJSONField
from privacy.models import PrivacyRecord
from privacy.services import customer_ref
from tests import factories
from tests.agents.conftest import staff_with
from tests.writeback.conftest import core_target, submit  # noqa: F401 (fixture)

EXTERNAL_ID = "CUST-ERASE-77"
NAME = "Katherine Johnson"
PHONE = "+447400123456"
EMAIL = "katherine.johnson@example.net"
ADDRESS = {"lines": ["42 Orbit Lane", "Flat 3"], "city": "Hampton", "postcode": "HP1 4KJ"}
NEW_PHONE = "+447911123789"
NEW_EMAIL = "k.johnson.new@example.net"
NEW_ADDRESS = "17 Launch Road, Leeds LS2 9JT"
PERSONAL = (
    NAME,
    PHONE,
    PHONE.removeprefix("+"),
    EMAIL,
    EXTERNAL_ID,
    *ADDRESS["lines"],
    ADDRESS["postcode"],
    NEW_PHONE,
    NEW_EMAIL,
    NEW_ADDRESS,
)
TEXT_FIELDS = (models.CharField, models.TextField, models.JSONField, EncryptedJSONField)


def customer_body(**more):
    return {
        "external_id": EXTERNAL_ID,
        "name": NAME,
        "phone": PHONE,
        "email": EMAIL,
        "address": ADDRESS,
        "flags": ["vulnerable"],
        **more,
    }


def personal_data_left(*, skip: tuple[type, ...] = ()) -> list[str]:
    """Every text or JSON value of every row of every model (read through the ORM, so
    encrypted values are scanned decrypted) that still holds one of the personal values."""
    found = []
    for model in apps.get_models():
        if model in skip:
            continue
        fields = [f for f in model._meta.concrete_fields if isinstance(f, TEXT_FIELDS)]
        if not fields:
            continue
        for row in model._base_manager.values_list("pk", *(f.attname for f in fields)):
            text = json.dumps(row[1:], default=str, ensure_ascii=False).lower()
            for value in PERSONAL:
                if value.lower() in text:
                    found.append(f"{model._meta.label} #{row[0]}: {value}")
    return found


@pytest.fixture
def documents_root(settings, tmp_path) -> Path:
    settings.PRIVATE_MEDIA_ROOT = tmp_path / "private"
    return settings.PRIVATE_MEDIA_ROOT


@pytest.fixture
def history(core_target, demo_core, documents_root, django_capture_on_commit_callbacks):  # noqa: F811
    """A customer with a resolved case whose outcome changed their contact details (written
    back to the demo core), a case escalated with an agent's note and a reply of theirs, and
    a case still in outreach with a message sent."""
    from agents.services import case_note_add
    from tests.writeback.conftest import case_ready

    client, _ = factories.api_client("core-banking")
    resolved = case_ready("address_update", client=client, customer=customer_body())
    submit(
        resolved,
        django_capture_on_commit_callbacks,
        action="update_contact_details",
        values={"phone": NEW_PHONE, "email": NEW_EMAIL, "address": NEW_ADDRESS},
    )
    assert Case.objects.get(pk=resolved.pk).state == "resolved"
    private_storage().save(f"cases/{resolved.pk}/left-over.pdf", ContentFile(b"%PDF-1.4 x"))

    escalated = factories.case_in_state("escalated", client, customer=customer_body())
    case_note_add(
        case=escalated,
        user=staff_with("work_queue"),
        text=f"{NAME} called from {PHONE}; moving to {NEW_ADDRESS}",
    )
    inbound_receive(
        channel="sms",
        provider="twilio",
        provider_message_id="SM-erase-1",
        sender=PHONE,
        body=f"This is {NAME}, please write to {EMAIL}",
    )
    in_outreach = factories.case_in_state("outreach", client, customer=customer_body())
    return {"resolved": resolved, "escalated": escalated, "outreach": in_outreach}


def test_an_erased_customer_keeps_no_personal_field_outside_the_evidence(
    history, documents_root, capsys, django_capture_on_commit_callbacks
):
    customer = Customer.objects.get(external_id=EXTERNAL_ID)
    assert personal_data_left()  # the scan finds the data before the erasure

    with django_capture_on_commit_callbacks(execute=True):
        call_command(
            "customer", "erase", EXTERNAL_ID, "--by", "dpo@bank.example", "--reference", "DSR-9"
        )

    out = capsys.readouterr().out
    assert f"Cancelled open case {history['escalated'].pk}" in out
    assert f"Cancelled open case {history['outreach'].pk}" in out
    assert "Erased customer of core-banking" in out and "3 case(s)" in out
    states = dict(Case.objects.values_list("pk", "state"))
    assert states[history["escalated"].pk] == states[history["outreach"].pk] == "cancelled"
    assert states[history["resolved"].pk] == "resolved"

    # Nothing personal anywhere, the timeline (the evidence kept) included.
    assert personal_data_left() == []
    customer = Customer.objects.get(pk=customer.pk)
    ref = customer_ref(api_client_id=customer.api_client_id, external_id=EXTERNAL_ID)
    assert customer.external_id == ref
    assert (customer.name, customer.phone, customer.email, customer.address) == ("", "", "", {})
    assert customer.flags == [] and customer.date_of_birth_hash == ""
    assert not any(p.is_file() for p in documents_root.rglob("*"))

    # The evidence is kept: every case's timeline, with the erasure recorded on it.
    for case in history.values():
        kinds = list(CaseEvent.objects.filter(case=case).values_list("kind", flat=True))
        assert kinds[0] == "received" or len(kinds) > 1
        assert kinds[-1] == "personal_data_anonymised"
    record = PrivacyRecord.objects.get(customer=customer)
    assert (record.action, record.requested_by, record.reference, record.cases) == (
        "erased",
        "dpo@bank.example",
        "DSR-9",
        3,
    )
    event = CaseEvent.objects.filter(kind="personal_data_anonymised").first()
    assert event.data == {"reason": "erased", "record": record.pk}

    # Asked again: already done, said plainly.
    call_command("customer", "erase", EXTERNAL_ID, "--client", "core-banking")
    assert "Already done" in capsys.readouterr().out
    call_command("customer", "ref", EXTERNAL_ID)
    assert ref in capsys.readouterr().out


def test_an_erasure_waits_for_an_outcome_on_its_way_to_the_system_of_record(workflow):
    case = factories.case_in_state(
        "action_submitted", customer=customer_body(external_id="WAITING-1")
    )
    with pytest.raises(CommandError, match="still on its way to the system of record"):
        call_command("customer", "erase", "WAITING-1")
    assert Customer.objects.get(pk=case.customer_id).name == NAME  # nothing written
    assert not PrivacyRecord.objects.exists()


def test_unknown_and_ambiguous_external_ids_are_refused(workflow):
    with pytest.raises(CommandError, match="No customer has the external id 'NOPE'"):
        call_command("customer", "erase", "NOPE")
    first, _ = factories.api_client("bank-a")
    second, _ = factories.api_client("bank-b")
    factories.case(first, customer={"external_id": "SHARED-1"})
    factories.case(second, customer={"external_id": "SHARED-1"})
    with pytest.raises(CommandError, match=r"several source systems \(bank-a, bank-b\)"):
        call_command("customer", "erase", "SHARED-1")
    with pytest.raises(CommandError, match="No API client is named 'bank-c'"):
        call_command("customer", "erase", "SHARED-1", "--client", "bank-c")
    call_command("customer", "erase", "SHARED-1", "--client", "bank-b")
    assert Customer.objects.filter(external_id="SHARED-1").get().api_client == first
