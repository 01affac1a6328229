"""Known facts (date of birth, postcode, account last-4) arrive in triggers for identity
checks and are kept only as keyed, salted hashes: never in clear, anywhere we store."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test import override_settings

from cases.known_facts import (
    known_fact_fingerprint,
    known_fact_hash,
    known_fact_matches,
    known_fact_normalise,
)
from cases.models import Case, CaseEvent, Customer

pytestmark = pytest.mark.django_db

TRIGGERS = "/api/v1/triggers/"
DOB = "1985-12-10"
POSTCODE = "SW1A 1AA"
POSTCODE_NORMALISED = "SW1A1AA"


def _rows_as_text(table: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
        return json.dumps(cursor.fetchall(), default=str)


def test_known_facts_are_never_stored_in_clear(api, workflow, trigger_body):
    body = trigger_body(
        customer={"known_facts": {"date_of_birth": DOB, "postcode": POSTCODE}},
    )
    response = api.post(TRIGGERS, body, format="json")
    assert response.status_code == 201
    case = Case.objects.get(pk=response.json()["id"])

    stored = "\n".join(
        [
            _rows_as_text(Customer._meta.db_table),
            _rows_as_text(Case._meta.db_table),
            _rows_as_text(CaseEvent._meta.db_table),
        ]
    )
    for secret in (DOB, "19851210", "10/12/1985", POSTCODE, POSTCODE_NORMALISED, "SW1A"):
        assert secret not in stored
    assert DOB not in json.dumps(case.payload)
    assert POSTCODE_NORMALISED not in json.dumps(case.payload)
    assert "known_facts" not in case.data
    detail = api.get(f"/api/v1/cases/{case.id}/").content.decode()
    assert DOB not in detail
    assert POSTCODE_NORMALISED not in detail


def test_known_facts_can_be_checked_against_the_stored_hashes(api, workflow, trigger_body):
    body = trigger_body()  # carries date_of_birth, postcode and account_last4
    assert api.post(TRIGGERS, body, format="json").status_code == 201
    customer = Customer.objects.get(external_id=body["customer"]["external_id"])
    assert len(customer.known_fact_salt) == 32
    salt = customer.known_fact_salt

    def matches(kind: str, candidate) -> bool:
        stored_hash = getattr(customer, f"{kind}_hash")
        return known_fact_matches(
            salt=salt, kind=kind, stored_hash=stored_hash, candidate=candidate
        )

    assert matches("date_of_birth", "1985-12-10")
    assert matches("date_of_birth", " 1985-12-10 ")
    assert not matches("date_of_birth", "1985-12-11")
    assert matches("postcode", "sw1a 1aa")
    assert matches("postcode", "SW1A1AA")
    assert not matches("postcode", "SW1A 1AB")
    assert matches("account_last4", "4321")
    assert matches("account_last4", 4321)
    assert not matches("account_last4", "1234")
    assert not matches("account_last4", "not digits")


def test_hashes_are_salted_per_customer(api, workflow, trigger_body):
    one, two = trigger_body(), trigger_body()  # the same facts for two customers
    for body in (one, two):
        assert api.post(TRIGGERS, body, format="json").status_code == 201
    first = Customer.objects.get(external_id=one["customer"]["external_id"])
    second = Customer.objects.get(external_id=two["customer"]["external_id"])
    assert first.known_fact_salt != second.known_fact_salt
    assert first.date_of_birth_hash != second.date_of_birth_hash
    assert first.postcode_hash != second.postcode_hash


def test_hashes_need_the_server_key(api, workflow, trigger_body):
    """A database dump alone cannot confirm a guess: the hash is keyed outside the database."""
    body = trigger_body()
    assert api.post(TRIGGERS, body, format="json").status_code == 201
    customer = Customer.objects.get(external_id=body["customer"]["external_id"])
    kwargs = {
        "salt": customer.known_fact_salt,
        "kind": "date_of_birth",
        "stored_hash": customer.date_of_birth_hash,
        "candidate": DOB,
    }
    assert known_fact_matches(**kwargs)
    with override_settings(KNOWN_FACTS_KEY="another-key"):
        assert not known_fact_matches(**kwargs)


def test_new_facts_replace_old_ones_and_keep_the_salt(api, workflow, trigger_body):
    first = trigger_body()
    assert api.post(TRIGGERS, first, format="json").status_code == 201
    customer = Customer.objects.get(external_id=first["customer"]["external_id"])
    later = trigger_body(
        customer={
            "external_id": customer.external_id,
            "known_facts": {"postcode": "EC1A 1BB"},
        }
    )
    assert api.post(TRIGGERS, later, format="json").status_code == 201
    updated = Customer.objects.get(pk=customer.pk)
    assert updated.known_fact_salt == customer.known_fact_salt
    assert updated.date_of_birth_hash == customer.date_of_birth_hash  # not sent: kept
    assert updated.postcode_hash != customer.postcode_hash
    assert known_fact_matches(
        salt=updated.known_fact_salt,
        kind="postcode",
        stored_hash=updated.postcode_hash,
        candidate="ec1a1bb",
    )


def test_a_replay_with_other_facts_is_a_conflict_without_echoing_them(api, workflow, trigger_body):
    body = trigger_body()
    assert api.post(TRIGGERS, body, format="json").status_code == 201
    other = json.loads(json.dumps(body))
    other["customer"]["known_facts"]["date_of_birth"] = "1990-01-01"
    response = api.post(TRIGGERS, other, format="json")
    assert response.status_code == 409
    assert response.json()["differences"] == ["customer.known_facts.date_of_birth"]
    text = response.content.decode()
    assert DOB not in text
    assert "1990-01-01" not in text
    stored = Case.objects.get(event_id=body["event_id"]).payload["customer"]["known_facts"]
    assert stored["date_of_birth"] not in text


def test_payload_keeps_only_unsalted_fingerprints_for_idempotency(api, workflow, trigger_body):
    body = trigger_body()
    case_id = api.post(TRIGGERS, body, format="json").json()["id"]
    facts = Case.objects.get(pk=case_id).payload["customer"]["known_facts"]
    assert facts == {
        "date_of_birth": known_fact_fingerprint(kind="date_of_birth", normalised=DOB),
        "postcode": known_fact_fingerprint(kind="postcode", normalised=POSTCODE_NORMALISED),
        "account_last4": known_fact_fingerprint(kind="account_last4", normalised="4321"),
    }
    assert all(len(value) == 64 for value in facts.values())


@pytest.mark.parametrize(
    ("kind", "value", "normalised"),
    [
        ("date_of_birth", "1985-12-10", "1985-12-10"),
        ("date_of_birth", " 1985-12-10\n", "1985-12-10"),
        ("postcode", "sw1a 1aa", "SW1A1AA"),
        ("postcode", "90210-1234", "90210-1234"),
        ("account_last4", "0042", "0042"),
        ("account_last4", 4321, "4321"),
    ],
)
def test_normalise(kind, value, normalised):
    assert known_fact_normalise(kind, value) == normalised


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("date_of_birth", "10/12/1985"),
        ("date_of_birth", "2999-01-01"),
        ("date_of_birth", "1850-01-01"),
        ("postcode", "A"),
        ("postcode", "SW1A 1AA!"),
        ("postcode", 12345),
        ("account_last4", "123"),
        ("account_last4", "12345"),
        ("account_last4", True),
        ("mothers_maiden_name", "Byron"),
    ],
)
def test_normalise_refuses(kind, value):
    with pytest.raises(ValueError):
        known_fact_normalise(kind, value)


def test_matches_is_false_without_a_stored_hash():
    digest = known_fact_hash(salt="s", kind="postcode", normalised="SW1A1AA")
    assert known_fact_matches(salt="s", kind="postcode", stored_hash=digest, candidate="SW1A1AA")
    assert not known_fact_matches(salt="", kind="postcode", stored_hash=digest, candidate="x")
    assert not known_fact_matches(salt="s", kind="postcode", stored_hash="", candidate="SW1A1AA")
