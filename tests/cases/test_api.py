"""The trigger and case API, through HTTP: auth, validation by field path, idempotency,
size limits, the batch endpoint, cancel, and the documentation endpoints."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from cases.models import Case, CaseEvent, Customer
from cases.services import api_client_revoke, case_transition
from policies.models import Workflow
from tests import factories

pytestmark = pytest.mark.django_db

TRIGGERS = "/api/v1/triggers/"
BATCH = "/api/v1/triggers/batch/"


def _case_url(case_id) -> str:
    return f"/api/v1/cases/{case_id}/"


def _post(api, body, url=TRIGGERS):
    return api.post(url, body, format="json")


# --- happy path and idempotency ----------------------------------------------------------------


def test_trigger_creates_a_case(api, workflow, trigger_body, row_counts):
    body = trigger_body()
    before = row_counts()

    response = _post(api, body)

    assert response.status_code == 201, response.json()
    answer = response.json()
    case = Case.objects.get(pk=answer["id"])
    self_url = f"http://testserver{_case_url(case.id)}"
    assert answer == {
        "id": str(case.id),
        "workflow": {"key": "promise_to_pay", "version": workflow.version},
        "event_id": body["event_id"],
        "state": "received",
        "outcome": "",
        "links": {"self": self_url, "cancel": f"{self_url}cancel/"},
    }
    assert response["Location"] == self_url
    assert row_counts() == {
        "Customer": before["Customer"] + 1,
        "Case": before["Case"] + 1,
        "CaseEvent": before["CaseEvent"] + 1,
    }
    assert case.api_client == api.api_client
    assert case.data == {
        "account_reference": body["data"]["account_reference"],
        "balance": "420.50",
        "currency": "GBP",
        "due_date": "2026-11-01",
        "days_past_due": 22,
    }
    customer = case.customer
    assert (customer.external_id, customer.phone, customer.timezone, customer.locale) == (
        body["customer"]["external_id"],
        "+447911123456",
        "Europe/London",
        "en-GB",
    )
    assert customer.has_consent("sms")
    event = CaseEvent.objects.get(case=case)
    assert (event.kind, event.actor) == ("triggered", "api")
    assert event.data["event_id"] == body["event_id"]


def test_replay_returns_the_original_case_and_writes_nothing(
    api, workflow, trigger_body, row_counts
):
    body = trigger_body()
    first = _post(api, body)
    assert first.status_code == 201
    before = row_counts()
    customer_before = Customer.objects.values().get(external_id=body["customer"]["external_id"])

    again = _post(api, body)

    assert again.status_code == 200, again.json()
    assert again.json() == first.json()
    assert again["Location"] == first["Location"]
    assert row_counts() == before
    assert Customer.objects.values().get(pk=customer_before["id"]) == customer_before


def test_replay_matches_after_normalisation(api, workflow, trigger_body):
    """The idempotency check compares normalised bodies: the same facts written differently
    are the same event."""
    body = trigger_body()
    assert _post(api, body).status_code == 201
    same = json.loads(json.dumps(body))
    same["customer"]["phone"] = "+44 7911 123456"
    same["customer"]["known_facts"]["postcode"] = "sw1a1aa"
    same["data"]["currency"] = "gbp"
    assert _post(api, same).status_code == 200


def test_same_event_id_with_another_body_is_a_conflict(api, workflow, trigger_body, row_counts):
    body = trigger_body()
    created = _post(api, body).json()
    before = row_counts()
    customer_before = Customer.objects.values().get(external_id=body["customer"]["external_id"])
    other = trigger_body(
        event_id=body["event_id"],
        customer={**body["customer"], "name": "Charles Babbage"},
        data={**body["data"], "balance": "999.99"},
    )

    response = _post(api, other)

    assert response.status_code == 409
    answer = response.json()
    assert answer["id"] == created["id"]
    assert answer["differences"] == ["customer.name", "data.balance"]
    assert "event_id" in answer["detail"]
    text = response.content.decode()
    for stored_value in ("420.50", "Ada Lovelace", body["data"]["account_reference"]):
        assert stored_value not in text
    assert row_counts() == before
    assert Customer.objects.values().get(pk=customer_before["id"]) == customer_before


def test_event_ids_are_scoped_to_the_api_client(api, workflow, trigger_body):
    body = trigger_body()
    assert _post(api, body).status_code == 201
    _, other_key = factories.api_client()
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {other_key}")
    response = _post(other, body)
    assert response.status_code == 201
    assert Case.objects.filter(event_id=body["event_id"]).count() == 2


def test_a_thin_trigger_keeps_what_is_known_about_the_customer(api, workflow, trigger_body):
    first = trigger_body()
    assert _post(api, first).status_code == 201
    thin = trigger_body(customer={"external_id": first["customer"]["external_id"]})
    assert _post(api, thin).status_code == 201
    customer = Customer.objects.get(external_id=first["customer"]["external_id"])
    assert customer.name == "Ada Lovelace"
    assert customer.email == "ada@example.com"
    assert customer.has_consent("sms")


# --- authentication ----------------------------------------------------------------------------


def test_missing_key_is_401_with_a_challenge(workflow, trigger_body, row_counts):
    before = row_counts()
    response = _post(APIClient(), trigger_body())
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="closeloop"'
    assert response.json()["detail"]
    assert row_counts() == before


@pytest.mark.parametrize(
    "header",
    [
        "Bearer clk_not-a-real-key",
        "Bearer not-even-our-prefix",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Token clk_abc",
    ],
)
def test_wrong_key_is_401(workflow, trigger_body, row_counts, header):
    before = row_counts()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = _post(client, trigger_body())
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="closeloop"'
    assert row_counts() == before


def test_revoked_key_is_401(api, workflow, trigger_body, row_counts):
    assert _post(api, trigger_body()).status_code == 201
    api_client_revoke(client=api.api_client)
    before = row_counts()
    response = _post(api, trigger_body())
    assert response.status_code == 401
    assert response.json()["detail"] == "Unknown or revoked API key."
    assert row_counts() == before


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", "/api/v1/workflows/"),
        ("get", f"/api/v1/cases/{uuid.UUID(int=1)}/"),
        ("post", f"/api/v1/cases/{uuid.UUID(int=1)}/cancel/"),
        ("post", BATCH),
    ],
)
def test_every_api_endpoint_needs_a_key(db, method, url):
    response = getattr(APIClient(), method)(url, {}, format="json")
    assert response.status_code == 401


# --- malformed bodies ----------------------------------------------------------------------------


@pytest.mark.parametrize("url", [TRIGGERS, BATCH])
def test_malformed_json_is_400(api, workflow, row_counts, url):
    before = row_counts()
    response = api.post(url, data='{"workflow": "promise_to_pay",', content_type="application/json")
    assert response.status_code == 400
    assert response.json()["errors"]["body"]
    assert "not valid JSON" in response.json()["detail"]
    assert row_counts() == before


@pytest.mark.parametrize("body", [[1, 2], "a string", 42, None, True])
def test_body_must_be_an_object(api, workflow, row_counts, body):
    before = row_counts()
    response = api.post(TRIGGERS, data=json.dumps(body), content_type="application/json")
    assert response.status_code == 400
    assert "body" in response.json()["errors"]
    assert row_counts() == before


def test_body_over_the_limit_is_413(api, workflow, trigger_body, row_counts):
    raw = json.dumps(trigger_body())
    size = len(raw.encode())
    batch = json.dumps({"triggers": [json.loads(raw)]})
    before = row_counts()
    with override_settings(API_MAX_BODY_BYTES=size - 1):
        response = api.post(TRIGGERS, data=raw, content_type="application/json")
        batch_response = api.post(BATCH, data=batch, content_type="application/json")
    assert response.status_code == 413
    assert response.json()["detail"] == (
        f"The request body is larger than the limit of {size - 1} bytes."
    )
    assert batch_response.status_code == 413
    assert row_counts() == before
    with override_settings(API_MAX_BODY_BYTES=size):  # exactly at the limit is allowed
        assert api.post(TRIGGERS, data=raw, content_type="application/json").status_code == 201


def test_oversized_body_is_refused_before_authentication(workflow, trigger_body, row_counts):
    raw = json.dumps(trigger_body())
    before = row_counts()
    with override_settings(API_MAX_BODY_BYTES=100):
        response = APIClient().post(TRIGGERS, data=raw, content_type="application/json")
    assert response.status_code == 413
    assert row_counts() == before


# --- validation, by field path ------------------------------------------------------------------


def _with(body: dict, path: str, value) -> dict:
    """A copy of `body` with the value at a dotted path set (or added)."""
    body = json.loads(json.dumps(body))
    *parents, last = path.split(".")
    target = body
    for key in parents:
        target = target[key]
    target[last] = value
    return body


def _without(body: dict, path: str) -> dict:
    body = json.loads(json.dumps(body))
    *parents, last = path.split(".")
    target = body
    for key in parents:
        target = target[key]
    del target[last]
    return body


INVALID = [
    # (path to change, value, field path named in the answer)
    ("colour", "blue", "colour"),
    ("customer.shoe_size", 42, "customer.shoe_size"),
    ("data.interest_rate", "1.5", "data.interest_rate"),
    ("customer.address", {"street": "1 High St"}, "customer.address.street"),
    ("customer.consent.fax", True, "customer.consent.fax"),
    (
        "customer.known_facts.mothers_maiden_name",
        "Byron",
        "customer.known_facts.mothers_maiden_name",
    ),
    ("data.balance", True, "data.balance"),
    ("data.balance", "lots", "data.balance"),
    ("data.balance", 0, "data.balance"),
    ("data.balance", "-5.00", "data.balance"),
    ("data.balance", "1.005", "data.balance"),
    ("data.balance", "NaN", "data.balance"),
    ("data.days_past_due", "5", "data.days_past_due"),
    ("data.days_past_due", 2.5, "data.days_past_due"),
    ("data.days_past_due", -1, "data.days_past_due"),
    ("data.days_past_due", False, "data.days_past_due"),
    ("data.due_date", "next tuesday", "data.due_date"),
    ("data.due_date", "2026-02-30", "data.due_date"),
    ("data.due_date", 20261101, "data.due_date"),
    ("data.currency", "XXY", "data.currency"),
    ("data.currency", 826, "data.currency"),
    ("data.account_reference", "A" * 65, "data.account_reference"),
    ("data.account_reference", ["ACC-1"], "data.account_reference"),
    ("data.currency", None, "data.currency"),
    ("data", [1, 2], "data"),
    ("customer", "cust-1", "customer"),
    ("customer.external_id", "", "customer.external_id"),
    ("customer.external_id", 12345, "customer.external_id"),
    ("customer.phone", "07911123456", "customer.phone"),
    ("customer.phone", "+44 12", "customer.phone"),
    ("customer.phone", 447911123456, "customer.phone"),
    ("customer.whatsapp", "+1 555 0000", "customer.whatsapp"),
    ("customer.timezone", "Mars/Olympus_Mons", "customer.timezone"),
    ("customer.timezone", "GMT+1", "customer.timezone"),
    ("customer.timezone", ["Europe/London"], "customer.timezone"),
    ("customer.timezone", {"zone": "Europe/London"}, "customer.timezone"),
    ("customer.email", "ada-at-example.com", "customer.email"),
    ("customer.email", ["ada@example.com"], "customer.email"),
    ("customer.locale", "English", "customer.locale"),
    ("customer.preferred_channel", "pigeon", "customer.preferred_channel"),
    ("customer.preferred_channel", ["sms"], "customer.preferred_channel"),
    ("customer.flags", "vulnerable", "customer.flags"),
    ("customer.flags", ["Vulnerable!"], "customer.flags"),
    ("customer.consent", "yes", "customer.consent"),
    ("customer.consent", ["sms"], "customer.consent"),
    ("customer.consent.sms", "yes", "customer.consent.sms"),
    ("customer.consent.sms", {"value": "yes"}, "customer.consent.sms.value"),
    ("customer.consent.sms", {"timestamp": "2026-01-01T00:00:00Z"}, "customer.consent.sms.value"),
    (
        "customer.consent.email",
        {"value": True, "timestamp": "2026-01-01 09:00"},
        "customer.consent.email.timestamp",
    ),
    (
        "customer.consent.email",
        {"value": True, "where": "web form"},
        "customer.consent.email.where",
    ),
    ("customer.known_facts", ["1985-12-10"], "customer.known_facts"),
    ("customer.known_facts", "1985-12-10", "customer.known_facts"),
    ("customer.known_facts.date_of_birth", "10/12/1985", "customer.known_facts.date_of_birth"),
    ("customer.known_facts.date_of_birth", "2999-01-01", "customer.known_facts.date_of_birth"),
    ("customer.known_facts.postcode", "!", "customer.known_facts.postcode"),
    ("customer.known_facts.postcode", 12345, "customer.known_facts.postcode"),
    ("customer.known_facts.account_last4", "12345", "customer.known_facts.account_last4"),
    ("customer.known_facts.account_last4", "12a4", "customer.known_facts.account_last4"),
    ("customer.address", ["1 High St"], "customer.address"),
    ("customer.address", {"lines": "1 High St"}, "customer.address.lines"),
    ("event_id", 17, "event_id"),
    ("event_id", "   ", "event_id"),
    ("event_id", "e" * 201, "event_id"),
    ("segment", ["retail"], "segment"),
    ("workflow", None, "workflow"),
]


@pytest.mark.parametrize(
    ("path", "value", "error_path"), INVALID, ids=[f"{p}={v!r}"[:60] for p, v, _ in INVALID]
)
def test_invalid_trigger_is_400_naming_the_field(
    api, workflow, trigger_body, row_counts, path, value, error_path
):
    before = row_counts()
    response = _post(api, _with(trigger_body(), path, value))
    assert response.status_code == 400, response.json()
    errors = response.json()["errors"]
    assert error_path in errors, errors
    assert all(isinstance(m, str) and m for m in errors[error_path])
    assert row_counts() == before


@pytest.mark.parametrize(
    "path",
    [
        "workflow",
        "event_id",
        "customer",
        "data",
        "customer.external_id",
        "data.balance",
        "data.currency",
        "data.due_date",
        "data.days_past_due",
        "data.account_reference",
    ],
)
def test_required_fields(api, workflow, trigger_body, row_counts, path):
    before = row_counts()
    response = _post(api, _without(trigger_body(), path))
    assert response.status_code == 400
    messages = response.json()["errors"][path]
    if path != "customer":  # customer says what the object needs
        assert messages == ["This field is required."]
    assert row_counts() == before


def test_all_errors_are_reported_at_once(api, workflow, trigger_body):
    body = _with(trigger_body(), "customer.phone", "nope")
    body = _with(body, "customer.email", "nope")
    body = _with(body, "colour", "blue")
    errors = _post(api, body).json()["errors"]
    assert {"customer.phone", "customer.email", "colour"} <= set(errors)


def test_messages_say_what_is_expected(api, workflow, trigger_body):
    body = _with(trigger_body(), "data.balance", True)
    body = _with(body, "data.days_past_due", "5")
    body = _with(body, "data.due_date", "tomorrow")
    body = _with(body, "data.currency", "XXY")
    errors = _post(api, body).json()["errors"]
    assert errors == {
        "data.balance": ["Must be a number, e.g. 1250.00."],
        "data.days_past_due": ["Must be a whole number."],
        "data.due_date": ["Must be a date as YYYY-MM-DD."],
        "data.currency": ["Must be an ISO 4217 currency code, e.g. GBP, EUR or USD."],
    }


def test_optional_data_field_is_validated_when_given(api, workflow, trigger_body):
    response = _post(api, trigger_body(data={"minimum_payment": "0"}))
    assert response.status_code == 400
    assert "data.minimum_payment" in response.json()["errors"]
    assert _post(api, trigger_body(data={"minimum_payment": "25.00"})).status_code == 201


def test_an_invalid_trigger_does_not_touch_a_known_customer(api, workflow, trigger_body):
    first = trigger_body()
    assert _post(api, first).status_code == 201
    customer_before = Customer.objects.values().get(external_id=first["customer"]["external_id"])
    bad = trigger_body(
        customer={**first["customer"], "name": "Someone Else", "phone": "+447700900123"},
        data={"balance": "-1"},
    )
    assert _post(api, bad).status_code == 400
    assert Customer.objects.values().get(pk=customer_before["id"]) == customer_before


def test_unknown_workflow_is_400_on_workflow(api, workflow, trigger_body, row_counts):
    before = row_counts()
    response = _post(api, trigger_body(workflow="no_such_workflow"))
    assert response.status_code == 400
    assert "no_such_workflow" in response.json()["errors"]["workflow"][0]
    assert row_counts() == before


@pytest.mark.parametrize("status", ["draft", "paused", "retired"])
def test_workflow_that_is_not_active_is_400_on_workflow(
    api, workflow, trigger_body, row_counts, status
):
    Workflow.objects.create(
        key="hardship_review", name="Hardship review", status=status, contract=workflow.contract
    )
    before = row_counts()
    response = _post(api, trigger_body(workflow="hardship_review"))
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["workflow"]
    assert row_counts() == before


# --- reading a case ------------------------------------------------------------------------------


def test_case_detail_shows_the_timeline(api, workflow, trigger_body):
    body = trigger_body()
    case_id = _post(api, body).json()["id"]
    case_transition(case=case_id, transition="start_outreach")
    case_transition(case=case_id, transition="engage", data={"channel": "sms"})

    response = api.get(_case_url(case_id))

    assert response.status_code == 200
    detail = response.json()
    assert detail["id"] == case_id
    assert detail["state"] == "engaged"
    assert detail["customer"] == {"external_id": body["customer"]["external_id"]}
    assert detail["data"]["balance"] == "420.50"
    assert [(e["kind"], e["actor"]) for e in detail["timeline"]] == [
        ("triggered", "api"),
        ("outreach_started", "system"),
        ("engaged", "customer"),
    ]
    assert detail["timeline"][2]["data"] == {"channel": "sms"}
    assert all(e["at"].endswith("Z") for e in detail["timeline"])
    assert detail["milestones"]["triggered"].endswith("Z")
    assert detail["milestones"]["opened"] is not None
    assert detail["milestones"]["verified"] is None


def test_another_clients_case_is_404(api, workflow):
    other_client, _ = factories.api_client()
    theirs = factories.case(other_client)
    assert api.get(_case_url(theirs.id)).status_code == 404
    response = api.post(f"{_case_url(theirs.id)}cancel/", {}, format="json")
    assert response.status_code == 404
    assert Case.objects.get(pk=theirs.pk).state == "received"


@pytest.mark.parametrize("case_id", ["not-a-uuid", "123", str(uuid.UUID(int=7)), "%20"])
def test_unknown_or_malformed_case_id_is_404(api, workflow, case_id):
    response = api.get(_case_url(case_id))
    assert response.status_code == 404
    assert response.json() == {"detail": "No such case."}


# --- cancel --------------------------------------------------------------------------------------


def test_cancel_records_the_reason(api, workflow):
    case = factories.case_in_state("outreach", client=api.api_client)
    response = api.post(f"{_case_url(case.id)}cancel/", {"reason": "Paid at branch"}, format="json")
    assert response.status_code == 200
    assert response.json()["state"] == "cancelled"
    assert response.json()["outcome"] == "cancelled"
    event = CaseEvent.objects.filter(case=case).last()
    assert (event.kind, event.actor, event.data) == (
        "cancelled",
        "api",
        {"reason": "Paid at branch"},
    )

    again = api.post(f"{_case_url(case.id)}cancel/", {"reason": "Paid twice?"}, format="json")
    assert again.status_code == 200
    assert again.json()["state"] == "cancelled"
    assert CaseEvent.objects.filter(case=case, kind="cancelled").count() == 1


def test_cancel_without_a_body(api, workflow):
    case = factories.case(api.api_client)
    response = api.post(f"{_case_url(case.id)}cancel/")
    assert response.status_code == 200
    assert CaseEvent.objects.filter(case=case).last().data == {}


@pytest.mark.parametrize(
    "body", [{"reason": 5}, {"reason": "x" * 501}, {"why": "paid"}, ["paid"], "paid"]
)
def test_cancel_with_a_bad_body_is_400(api, workflow, body):
    case = factories.case(api.api_client)
    response = api.post(
        f"{_case_url(case.id)}cancel/", data=json.dumps(body), content_type="application/json"
    )
    assert response.status_code == 400
    assert Case.objects.get(pk=case.pk).state == "received"


@pytest.mark.parametrize("state", ["action_submitted", "resolved", "abandoned", "closed_by_agent"])
def test_cancel_is_409_where_the_state_forbids_it(api, workflow, state):
    case = factories.case_in_state(state, client=api.api_client)
    events_before = CaseEvent.objects.filter(case=case).count()
    response = api.post(f"{_case_url(case.id)}cancel/", {"reason": "late"}, format="json")
    assert response.status_code == 409
    assert response.json()["state"] == state
    assert state in response.json()["detail"]
    assert Case.objects.get(pk=case.pk).state == state
    assert CaseEvent.objects.filter(case=case).count() == events_before


# --- batch ---------------------------------------------------------------------------------------


def test_batch_gives_one_result_per_item_in_order(api, workflow, trigger_body, row_counts):
    replayed = trigger_body()
    conflicted = trigger_body()
    assert _post(api, replayed).status_code == 201
    assert _post(api, conflicted).status_code == 201
    fresh = trigger_body()
    invalid = trigger_body(data={"balance": "free"})
    repeat_conflict = _with(fresh, "data.balance", "1.00")
    second_fresh = trigger_body()
    items = [
        fresh,
        invalid,
        fresh,  # the same event twice in one batch: the second is a replay of the first
        replayed,
        _with(conflicted, "data.balance", "7.00"),
        repeat_conflict,
        "not an object",
        second_fresh,
    ]
    before = row_counts()

    response = _post(api, {"triggers": items}, url=BATCH)

    assert response.status_code == 200, response.json()
    answer = response.json()
    results = answer["results"]
    assert [r["index"] for r in results] == list(range(len(items)))
    assert [r["status"] for r in results] == [
        "created",
        "invalid",
        "existing",
        "existing",
        "conflict",
        "conflict",
        "invalid",
        "created",
    ]
    assert answer["counts"] == {"created": 2, "existing": 2, "conflict": 2, "invalid": 2}
    fresh_case = Case.objects.get(event_id=fresh["event_id"])
    assert results[0]["id"] == results[2]["id"] == results[5]["id"] == str(fresh_case.id)
    assert results[0]["url"] == f"http://testserver{_case_url(fresh_case.id)}"
    assert results[0]["state"] == "received"
    assert list(results[1]["errors"]) == ["data.balance"]
    assert "id" not in results[1]
    assert results[3]["id"] == str(Case.objects.get(event_id=replayed["event_id"]).id)
    assert results[4]["differences"] == ["data.balance"]
    assert results[5]["differences"] == ["data.balance"]
    assert results[6]["errors"] == {"trigger": ["Each trigger must be a JSON object."]}
    assert "420.50" not in response.content.decode()  # conflicts name fields, never values
    assert row_counts() == {
        "Customer": before["Customer"] + 2,
        "Case": before["Case"] + 2,
        "CaseEvent": before["CaseEvent"] + 2,
    }
    assert not Customer.objects.filter(external_id=invalid["customer"]["external_id"]).exists()
    assert not Case.objects.filter(event_id=invalid["event_id"]).exists()


def test_batch_of_only_replays_writes_nothing(api, workflow, trigger_body, row_counts):
    bodies = [trigger_body() for _ in range(3)]
    first = _post(api, {"triggers": bodies}, url=BATCH).json()
    assert first["counts"]["created"] == 3
    before = row_counts()
    again = _post(api, {"triggers": bodies}, url=BATCH).json()
    assert again["counts"] == {"created": 0, "existing": 3, "conflict": 0, "invalid": 0}
    assert [r["id"] for r in again["results"]] == [r["id"] for r in first["results"]]
    assert row_counts() == before


def test_batch_shares_one_customer_between_triggers(api, workflow, trigger_body):
    one = trigger_body()
    two = trigger_body(customer={"external_id": one["customer"]["external_id"]})
    answer = _post(api, {"triggers": [one, two]}, url=BATCH).json()
    assert answer["counts"]["created"] == 2
    assert Customer.objects.filter(external_id=one["customer"]["external_id"]).count() == 1


@pytest.mark.parametrize(
    ("body", "error_path"),
    [
        ({"triggers": []}, "triggers"),
        ({"triggers": {"0": {}}}, "triggers"),
        ({}, "triggers"),
        ({"triggers": [{}], "dry_run": True}, "dry_run"),
        ([{}], "body"),
    ],
)
def test_batch_envelope_errors_are_400(api, workflow, row_counts, body, error_path):
    before = row_counts()
    response = _post(api, body, url=BATCH)
    assert response.status_code == 400
    assert error_path in response.json()["errors"]
    assert row_counts() == before


def test_batch_over_1000_items_is_400(api, workflow, trigger_body, row_counts):
    body = {"triggers": [trigger_body() for _ in range(1001)]}
    before = row_counts()
    response = _post(api, body, url=BATCH)
    assert response.status_code == 400
    assert "1001" in response.json()["errors"]["triggers"][0]
    assert row_counts() == before


# --- workflows, schema, docs, health -------------------------------------------------------------


def test_workflows_lists_active_ones_with_their_data_schema(api, workflow):
    Workflow.objects.create(key="draft_flow", name="Draft", status="draft", contract=[])
    response = api.get("/api/v1/workflows/")
    assert response.status_code == 200
    [listed] = response.json()["workflows"]
    assert listed["key"] == "promise_to_pay"
    assert listed["version"] == workflow.version
    assert listed["triggers_url"] == f"http://testserver{TRIGGERS}"
    schema = listed["data_schema"]
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {
        "account_reference",
        "balance",
        "currency",
        "due_date",
        "days_past_due",
    }
    assert schema["properties"]["balance"]["exclusiveMinimum"] == 0
    assert schema["properties"]["days_past_due"] == {"type": "integer", "minimum": 0}
    assert schema["properties"]["due_date"]["format"] == "date"


def test_openapi_schema_as_json(db):
    response = APIClient().get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    assert "json" in response["Content-Type"]
    document = json.loads(response.content)
    assert document["openapi"].startswith("3.")
    assert "/api/v1/triggers/" in document["paths"]
    assert "/api/v1/triggers/batch/" in document["paths"]
    post = document["paths"]["/api/v1/triggers/"]["post"]
    assert {"200", "201", "400", "401", "409", "413"} <= set(post["responses"])


def test_api_docs_load_no_third_party_assets(db):
    response = APIClient().get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    assert assets, "the docs page should load its scripts and styles"
    external = [url for url in assets if re.match(r"^(?:[a-z]+:)?//", url, re.IGNORECASE)]
    assert external == []
    assert not re.search(r"https?://(?!testserver)", html)


def test_healthz(db):
    """The full report is tested in tests/config/test_health.py."""
    response = APIClient().get("/healthz?checks=database")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "failing": [],
        "checks": {"database": {"status": "ok"}},
    }
    assert "no-cache" in response["Cache-Control"]
