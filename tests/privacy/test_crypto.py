"""Encryption at rest: what the database and the disk hold is ciphertext, values round-trip,
searching an encrypted column is refused, keys rotate (old data readable, rewritten under
the new key), stored plain values are encrypted by the migration step, and production
without a key fails `check --deploy`."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.apps import apps
from django.core.exceptions import FieldError, ImproperlyConfigured
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.db import connection

from agents.models import OfferProposal
from cases.models import Case, Customer
from miniapp.storage import DocumentNotEncrypted, private_storage
from privacy import checks
from privacy.crypto import (
    DecryptionFailed,
    sealed_opened,
    text_open,
    text_seal,
)
from privacy.migration_ops import column_decrypt, column_encrypt
from privacy.services import keys_rotate
from tests import factories

ADDRESS = {"lines": ["221B Baker Street"], "city": "London", "postcode": "NW1 6XE"}
PDF = b"%PDF-1.7\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"


def raw(table: str, column: str, pk) -> str:
    """The column as stored, read past the ORM."""
    model = next(m for m in apps.get_models() if m._meta.db_table == table)
    key = model._meta.pk.get_db_prep_value(pk, connection)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table} WHERE id = %s", [key])  # noqa: S608
        return cursor.fetchone()[0]


@pytest.fixture
def private_root(settings, tmp_path):
    settings.PRIVATE_MEDIA_ROOT = tmp_path / "private"
    return settings.PRIVATE_MEDIA_ROOT


@pytest.fixture
def customer_case(workflow) -> Case:
    return factories.case(customer={"address": ADDRESS, "name": "Sherlock Holmes"})


# --- fields -------------------------------------------------------------------------------------


def test_address_and_payload_are_ciphertext_in_the_database_and_plain_in_python(customer_case):
    customer = Customer.objects.get(pk=customer_case.customer_id)
    assert customer.address == ADDRESS
    stored = raw("cases_customer", "address", customer.pk)
    assert stored.startswith("gAAAAA")
    assert "Baker" not in stored and "NW1" not in stored
    payload = raw("cases_case", "payload", customer_case.pk)
    assert "Sherlock" not in payload and "+44" not in payload and "Baker" not in payload
    case = Case.objects.get(pk=customer_case.pk)
    assert case.payload["customer"]["address"] == ADDRESS
    assert Case.objects.filter(pk=case.pk).values_list("payload", flat=True)[0] == case.payload


def test_equal_values_give_different_tokens_and_round_trip_through_save(workflow):
    first = factories.case(customer={"address": ADDRESS}).customer
    second = factories.case(customer={"address": ADDRESS}).customer
    assert raw("cases_customer", "address", first.pk) != raw("cases_customer", "address", second.pk)
    first.address = {"lines": ["1 New Road"], "postcode": "AB1 2CD"}
    first.save()
    assert Customer.objects.get(pk=first.pk).address == {
        "lines": ["1 New Road"],
        "postcode": "AB1 2CD",
    }
    Customer.objects.filter(pk=first.pk).update(address={})
    assert Customer.objects.get(pk=first.pk).address == {}


@pytest.mark.postgres
def test_the_copy_ingest_path_encrypts_too(workflow):
    # On PostgreSQL the trigger ingest inserts customers and cases with COPY (cases/bulk.py).
    client, _ = factories.api_client()
    cases = [factories.case(client, customer={"address": ADDRESS}) for _ in range(3)]
    for case in cases:
        assert raw("cases_customer", "address", case.customer_id).startswith("gAAAAA")
        assert raw("cases_case", "payload", case.pk).startswith("gAAAAA")


def test_searching_an_encrypted_column_is_refused_isnull_works(customer_case):
    with pytest.raises(FieldError, match="encrypted at rest"):
        list(Customer.objects.filter(address=ADDRESS))
    with pytest.raises(FieldError, match="encrypted at rest"):
        list(Customer.objects.filter(address__postcode="NW1 6XE"))
    with pytest.raises(FieldError, match="encrypted at rest"):
        list(Case.objects.filter(payload__icontains="Baker"))
    assert Customer.objects.filter(address__isnull=False).count() == 1


def test_a_row_edited_in_the_database_fails_loudly(customer_case):
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE cases_customer SET address = %s WHERE id = %s",
            [Fernet(Fernet.generate_key()).encrypt(b"{}").decode(), customer_case.customer_id],
        )
    with pytest.raises(DecryptionFailed, match="could not be decrypted"):
        Customer.objects.get(pk=customer_case.customer_id)


def test_agents_offer_notes_and_replies_are_encrypted(workflow):
    case = factories.case_in_state("escalated")
    agent = factories.user("privacy-agent")
    proposal = OfferProposal.objects.create(
        case=case, action="promise_to_pay", item={}, reason="Widowed last month", proposed_by=agent
    )
    stored = raw("agents_offerproposal", "reason", proposal.pk)
    assert "Widowed" not in stored
    assert OfferProposal.objects.get(pk=proposal.pk).reason == "Widowed last month"


def test_sealed_text_in_kept_json():
    sealed = text_seal("She is in hospital")
    assert sealed.startswith("encrypted:") and "hospital" not in sealed
    assert text_open(sealed) == "She is in hospital"
    assert text_open("an older plain note") == "an older plain note"
    assert sealed_opened({"a": [sealed], "n": 1}) == {"a": ["She is in hospital"], "n": 1}
    assert text_seal("") == ""


# --- documents ----------------------------------------------------------------------------------


def test_documents_are_encrypted_on_disk_and_read_back_plain(private_root):
    storage = private_storage()
    name = storage.save("cases/x/doc.pdf", ContentFile(PDF))
    on_disk = (private_root / name).read_bytes()
    assert on_disk.startswith(b"gAAAAA") and b"%PDF" not in on_disk
    with storage.open(name) as handle:
        assert handle.read() == PDF
    (private_root / "cases/x/plain.pdf").write_bytes(PDF)
    with pytest.raises(DocumentNotEncrypted, match="rotate-keys"):
        storage.open("cases/x/plain.pdf")


# --- rotation -----------------------------------------------------------------------------------


def test_rotation_keeps_old_data_readable_then_rewrites_it_under_the_new_key(
    customer_case, settings, private_root
):
    old_key = settings.FIELD_ENCRYPTION_KEYS[0]
    storage = private_storage()
    document = storage.save("cases/x/doc.pdf", ContentFile(PDF))
    before = raw("cases_customer", "address", customer_case.customer_id)
    new_key = Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [new_key, old_key]

    # Old data stays readable while the new key encrypts new writes.
    assert Customer.objects.get(pk=customer_case.customer_id).address == ADDRESS
    report = keys_rotate(dry_run=True)
    assert report.columns["cases.Customer.address"]["rewritten"] == 1
    assert raw("cases_customer", "address", customer_case.customer_id) == before

    report = keys_rotate()
    assert report.columns["cases.Customer.address"] == {"checked": 1, "rewritten": 1}
    assert report.columns["cases.Case.payload"]["rewritten"] == 1
    assert report.files == {"checked": 1, "rewritten": 1}
    after = raw("cases_customer", "address", customer_case.customer_id)
    assert after != before
    assert Fernet(new_key).decrypt(after.encode())  # under the new key alone
    assert Fernet(new_key).decrypt((private_root / document).read_bytes()) == PDF

    # Again: nothing left to do; then the old key can go.
    again = keys_rotate()
    assert again.columns["cases.Customer.address"]["rewritten"] == 0
    assert again.files["rewritten"] == 0
    settings.FIELD_ENCRYPTION_KEYS = [new_key]
    assert Customer.objects.get(pk=customer_case.customer_id).address == ADDRESS
    with storage.open(document) as handle:
        assert handle.read() == PDF


def test_rotation_counts_sealed_notes_kept_as_written(workflow, settings):
    from agents.services import case_note_add
    from tests.agents.conftest import staff_with

    case = factories.case_in_state("escalated")
    case_note_add(case=case, user=staff_with("work_queue"), text="Lives abroad")
    settings.FIELD_ENCRYPTION_KEYS = [
        Fernet.generate_key().decode(),
        *settings.FIELD_ENCRYPTION_KEYS,
    ]
    report = keys_rotate()
    assert report.kept_as_written["cases.CaseEvent"] == 1
    assert report.kept_as_written["staff.AuditEntry"] == 1


def test_rotate_keys_command_reports_and_refuses_an_unknown_token(
    customer_case, settings, private_root, capsys
):
    settings.FIELD_ENCRYPTION_KEYS = [
        Fernet.generate_key().decode(),
        *settings.FIELD_ENCRYPTION_KEYS,
    ]
    call_command("privacy", "rotate-keys")
    out = capsys.readouterr().out
    assert "cases.Customer.address: 1 value(s), re-encrypted 1" in out
    assert "the others may be removed" in out
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="Put the key that wrote it back"):
        call_command("privacy", "rotate-keys")


def test_generate_key_prints_a_usable_key(capsys):
    call_command("privacy", "generate-key")
    key = capsys.readouterr().out.strip()
    assert Fernet(key).decrypt(Fernet(key).encrypt(b"x")) == b"x"


# --- the data migration step --------------------------------------------------------------------


def test_the_migration_step_encrypts_stored_plain_values_once(customer_case):
    class Editor:
        connection = connection

    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE cases_customer SET address = %s WHERE id = %s",
            ['{"lines": ["10 Downing Street"]}', customer_case.customer_id],
        )
    column_encrypt("cases.Customer", "address")(apps, Editor())
    token = raw("cases_customer", "address", customer_case.customer_id)
    assert token.startswith("gAAAAA")
    column_encrypt("cases.Customer", "address")(apps, Editor())  # a second run: unchanged
    assert raw("cases_customer", "address", customer_case.customer_id) == token
    assert Customer.objects.get(pk=customer_case.customer_id).address == {
        "lines": ["10 Downing Street"]
    }
    column_decrypt("cases.Customer", "address")(apps, Editor())
    assert raw("cases_customer", "address", customer_case.customer_id) == (
        '{"lines": ["10 Downing Street"]}'
    )


# --- keys and checks ----------------------------------------------------------------------------


def test_no_key_or_the_development_key_fails_the_deploy_check(settings):
    settings.FIELD_ENCRYPTION_KEYS = []
    [error] = checks.encryption_keys_deploy_check(None)
    assert error.id == "privacy.E002" and "FIELD_ENCRYPTION_KEYS is not set" in error.msg
    settings.FIELD_ENCRYPTION_KEYS = [settings.DEBUG_FIELD_ENCRYPTION_KEY]
    [error] = checks.encryption_keys_deploy_check(None)
    assert error.id == "privacy.E003"
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    assert checks.encryption_keys_deploy_check(None) == []


def test_a_malformed_key_fails_every_check_and_every_write(settings):
    settings.FIELD_ENCRYPTION_KEYS = ["not-a-key"]
    [error] = checks.encryption_keys_check(None)
    assert error.id == "privacy.E001" and "key #1 is not a Fernet key" in error.msg
    with pytest.raises(ImproperlyConfigured, match="key #1"):
        text_seal("x")
    settings.FIELD_ENCRYPTION_KEYS = []
    with pytest.raises(ImproperlyConfigured, match="FIELD_ENCRYPTION_KEYS is not set"):
        text_seal("x")


def test_decrypting_with_the_wrong_key_says_so(settings):
    token = text_seal("x")
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(DecryptionFailed):
        text_open(token)
    assert sealed_opened({"note": token}) == {
        "note": "[encrypted under a key no longer configured]"
    }


def test_production_without_a_key_fails_check_deploy(tmp_path):
    from tests.test_deploy import _manage

    production = {
        "SECRET_KEY": "a-long-random-production-secret-" + "x" * 40,
        "ALLOWED_HOSTS": "closeloop.example.com",
        "DATA_DIR": str(tmp_path),
    }
    result = _manage("check", "--deploy", FIELD_ENCRYPTION_KEYS="", **production)
    assert result.returncode != 0
    assert "privacy.E002" in result.stderr and "FIELD_ENCRYPTION_KEYS is not set" in result.stderr
    result = _manage(
        "check", "--deploy", FIELD_ENCRYPTION_KEYS=Fernet.generate_key().decode(), **production
    )
    assert "privacy.E00" not in result.stdout + result.stderr
