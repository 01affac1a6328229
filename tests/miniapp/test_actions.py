"""Every action's form on the options page: bounds just inside and just outside, plans
and reasons offered or not, and options that were never offered. A refusal is a 400 with a
field-level message and writes nothing but its `validation_failed` event."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from cases.models import CaseEvent
from miniapp.sessions import SESSION_KEY
from tests import factories
from tests.miniapp.test_flow import (
    Opened,
    choose,
    error_text,
    kinds,
    open_case,
    verify_code,
    verify_fully,
)
from writeback.models import Outcome

CENT = Decimal("0.01")


def shift(day: str, days: int) -> str:
    return (dt.date.fromisoformat(day) + dt.timedelta(days=days)).isoformat()


def money(value: str, cents: int) -> str:
    return str(Decimal(value) + cents * CENT)


def verified_for(client, workflow_key: str, action: str) -> Opened:
    opened = open_case(workflow_key)
    client.get(opened.url())
    level = next(a for a in opened.case.offer["actions"] if a["action"] == action)
    if level["identity_level"] == "otp":
        verify_code(client, opened, action)
    elif level["identity_level"] == "otp_and_known_fact":
        verify_fully(client, opened, action)
    return opened


def stored_choice(client, opened: Opened) -> dict:
    return client.session[SESSION_KEY][str(opened.case.pk)]["choice"]


def assert_accepted(client, opened: Opened, response, action: str) -> dict:
    assert response.status_code == 302, error_text(response)
    assert response["Location"] == opened.url("review")
    event = CaseEvent.objects.filter(case=opened.case, kind="option_chosen").get()
    assert event.data["action"] == action
    choice = stored_choice(client, opened)
    assert choice["action"] == action
    return choice["values"]


def assert_refused(client, opened: Opened, response, field: str | None, message: str = "") -> None:
    assert response.status_code == 400
    if field:
        assert f'id="id_{field}-error"'.encode() in response.content, error_text(response)
    if message:
        assert message in error_text(response)
    assert "option_chosen" not in kinds(opened.case)
    assert kinds(opened.case)[-1] == "validation_failed"
    assert "choice" not in client.session.get(SESSION_KEY, {}).get(str(opened.case.pk), {})
    assert not Outcome.objects.exists()


# --- promise_to_pay -------------------------------------------------------------------------

# (field, bound, step from the bound, accepted)
PROMISE_EDGES = [
    ("amount", "min_amount", 0, True),
    ("amount", "min_amount", -1, False),
    ("amount", "max_amount", 0, True),
    ("amount", "max_amount", 1, False),
    ("date", "earliest_date", 0, True),
    ("date", "earliest_date", -1, False),
    ("date", "latest_date", 0, True),
    ("date", "latest_date", 1, False),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("field", "bound", "step", "accepted"), PROMISE_EDGES)
def test_promise_to_pay_bounds(client, field, bound, step, accepted):
    opened = verified_for(client, "promise_to_pay", "promise_to_pay")
    bounds = opened.bounds("promise_to_pay")
    values = {"amount": bounds["max_amount"], "date": bounds["latest_date"]}
    edge = shift if field == "date" else money
    values[field] = edge(bounds[bound], step)

    response = choose(client, opened, "promise_to_pay", values)

    if accepted:
        assert assert_accepted(client, opened, response, "promise_to_pay") == values
    else:
        assert_refused(client, opened, response, field)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "amount", ["105.125", "lots", "-1", "1e3", "Infinity", "", "9" * 40, "420,50"]
)
def test_promise_to_pay_amounts_that_are_not_money_are_refused(client, amount):
    opened = verified_for(client, "promise_to_pay", "promise_to_pay")
    date = opened.bounds("promise_to_pay")["latest_date"]

    response = choose(client, opened, "promise_to_pay", {"amount": amount, "date": date})

    assert_refused(client, opened, response, "amount")


@pytest.mark.django_db
@pytest.mark.parametrize("date", ["2026-02-30", "tomorrow", "", "31/12/2026", "9" * 300])
def test_promise_to_pay_dates_that_are_not_dates_are_refused(client, date):
    opened = verified_for(client, "promise_to_pay", "promise_to_pay")
    amount = opened.bounds("promise_to_pay")["max_amount"]

    response = choose(client, opened, "promise_to_pay", {"amount": amount, "date": date})

    assert_refused(client, opened, response, "date")


@pytest.mark.django_db
def test_promise_page_carries_the_bounds_and_the_recommendation(client):
    opened = verified_for(client, "promise_to_pay", "promise_to_pay")
    bounds = opened.bounds("promise_to_pay")

    page = client.get(opened.url("options")).content.decode()

    assert f'min="{bounds["min_amount"]}" max="{bounds["max_amount"]}"' in page
    assert f'min="{bounds["earliest_date"]}" max="{bounds["latest_date"]}"' in page
    assert f'value="{bounds["max_amount"]}"' in page  # pre-filled: two taps to accept
    assert "Recommended for you" in page


# --- payment_plan ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_payment_plan_offered_is_taken_with_the_offer_s_own_figures(client):
    opened = verified_for(client, "promise_to_pay", "payment_plan")
    plans = opened.bounds("payment_plan")["plans"]
    assert [p["instalments"] for p in plans] == [3, 6]  # 420.50 within 6 months

    response = choose(
        client,
        opened,
        "payment_plan",
        # Figures posted alongside are ignored: the plan's own come from the offer.
        {"instalments": "3", "instalment_amount": "0.01", "total": "1.00"},
    )

    values = assert_accepted(client, opened, response, "payment_plan")
    assert values["instalment_amount"] == plans[0]["instalment_amount"] == "140.17"
    assert values["total"] == "420.50"


@pytest.mark.django_db
@pytest.mark.parametrize("count", ["12", "2", "0", "", "3.0", "three"])
def test_payment_plan_not_offered_is_refused(client, count):
    opened = verified_for(client, "promise_to_pay", "payment_plan")

    response = choose(client, opened, "payment_plan", {"instalments": count})

    assert_refused(client, opened, response, "instalments")


# --- dispute --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_dispute_with_a_listed_reason_is_taken(client):
    opened = verified_for(client, "promise_to_pay", "dispute")

    response = choose(
        client, opened, "dispute", {"reason": "I have already paid", "note": "Paid on 1 May."}
    )

    values = assert_accepted(client, opened, response, "dispute")
    assert values == {"reason": "I have already paid", "note": "Paid on 1 May."}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"reason": "I don't like it"}, "reason"),
        ({"reason": "i have already paid"}, "reason"),
        ({}, "reason"),
        ({"reason": "Something else", "note": "x" * 1001}, "note"),
    ],
)
def test_dispute_with_an_unlisted_reason_is_refused(client, values, field):
    opened = verified_for(client, "promise_to_pay", "dispute")

    response = choose(client, opened, "dispute", values)

    assert_refused(client, opened, response, field)


# --- request_callback -----------------------------------------------------------------------


@pytest.mark.django_db
def test_request_callback_needs_only_the_link(client):
    opened = open_case("promise_to_pay")
    client.get(opened.url())
    bounds = opened.bounds("request_callback")
    values = {"date": bounds["latest_date"], "window": "17:00-20:00"}

    response = choose(client, opened, "request_callback", values)

    assert assert_accepted(client, opened, response, "request_callback") == values


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("window", "bound", "step", "field"),
    [
        ("09:00-12:00", "earliest_date", 0, None),
        ("09:00-12:00", "earliest_date", -1, "date"),
        ("12:00-17:00", "latest_date", 0, None),
        ("12:00-17:00", "latest_date", 1, "date"),
        ("08:00-09:00", "earliest_date", 0, "window"),
        ("20:00-23:00", "latest_date", 0, "window"),
        ("", "latest_date", 0, "window"),
    ],
)
def test_request_callback_bounds(client, window, bound, step, field):
    opened = open_case("promise_to_pay")
    client.get(opened.url())
    values = {"date": shift(opened.bounds("request_callback")[bound], step), "window": window}

    response = choose(client, opened, "request_callback", values)

    if field is None:
        assert assert_accepted(client, opened, response, "request_callback") == values
    else:
        assert_refused(client, opened, response, field)


# --- attestation ----------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("typed_name", "signed"),
    [("Ada Lovelace", "Ada Lovelace"), ("  Ada   King  Lovelace ", "Ada King Lovelace")],
)
def test_attestation_with_a_full_name_and_the_box_ticked_is_taken(client, typed_name, signed):
    opened = verified_for(client, "address_update", "attestation")
    statement = opened.bounds("attestation")["statement"]

    response = choose(client, opened, "attestation", {"typed_name": typed_name, "confirm": "on"})

    values = assert_accepted(client, opened, response, "attestation")
    assert values == {"typed_name": signed, "statement": statement, "confirmed": "yes"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("values", "field", "message"),
    [
        ({"typed_name": "Ada", "confirm": "on"}, "typed_name", "first and last name"),
        ({"typed_name": "A B", "confirm": "on"}, None, ""),
        ({"typed_name": "   ", "confirm": "on"}, "typed_name", ""),
        ({"typed_name": "Ada " + "L" * 200, "confirm": "on"}, "typed_name", ""),
        ({"typed_name": "Ada Lovelace"}, "confirm", ""),
        ({"typed_name": "Ada Lovelace", "confirm": ""}, "confirm", ""),
    ],
)
def test_attestation_without_a_full_name_or_the_box_is_refused(client, values, field, message):
    opened = verified_for(client, "address_update", "attestation")

    response = choose(client, opened, "attestation", values)

    if field is None:  # "A B" is short but a first and last name: taken
        assert_accepted(client, opened, response, "attestation")
    else:
        assert_refused(client, opened, response, field, message)


# --- update_contact_details -----------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"phone": "07400 123456"}, {"phone": "+447400123456"}),
        ({"email": "ada@example.org"}, {"email": "ada@example.org"}),
        ({"unchanged": "on"}, {"unchanged": "yes"}),
        (
            {"address_lines": "2 Low Road", "address_city": "Leeds", "address_postcode": "LS1 1AA"},
            {"address": {"lines": "2 Low Road", "city": "Leeds", "postcode": "LS1 1AA"}},
        ),
    ],
)
def test_update_contact_details_taken(client, values, expected):
    opened = verified_for(client, "address_update", "update_contact_details")

    response = choose(client, opened, "update_contact_details", values)

    assert assert_accepted(client, opened, response, "update_contact_details") == expected


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"phone": "12345"}, "phone"),
        ({"phone": "+44 7700 900123"}, "phone"),  # reserved for drama: not a real number
        ({"phone": "call me"}, "phone"),
        ({"phone": "9" * 21}, "phone"),
        ({"email": "not-an-email"}, "email"),
        ({"email": "ada@"}, "email"),
        ({"unchanged": "on", "phone": "07400 123456"}, "unchanged"),
        ({"address_lines": "2 Low Road"}, "address_lines"),
        ({}, None),
    ],
)
def test_update_contact_details_refused(client, values, field):
    opened = verified_for(client, "address_update", "update_contact_details")

    response = choose(client, opened, "update_contact_details", values)

    assert_refused(client, opened, response, field)
    if field is None:
        assert "Give your new details, or confirm nothing has changed." in error_text(response)


@pytest.mark.django_db
def test_update_contact_details_never_takes_a_field_the_offer_does_not_allow(client):
    spec = factories.workflow_spec("address_update")
    for action in spec["actions"]:
        if action["action"] == "update_contact_details":
            action["params"]["fields"] = '["phone"]'
    factories.workflow_variant("address_update", actions=spec["actions"])
    opened = verified_for(client, "address_update", "update_contact_details")
    assert opened.bounds("update_contact_details")["fields"] == ["phone"]

    page = client.get(opened.url("options"))
    only_email = choose(client, opened, "update_contact_details", {"email": "new@example.org"})

    assert b'name="email"' not in page.content
    assert_refused(client, opened, only_email, None)
    both = choose(
        client,
        opened,
        "update_contact_details",
        {"phone": "07400 123456", "email": "new@example.org", "address_lines": "2 Low Road"},
    )
    assert assert_accepted(client, opened, both, "update_contact_details") == {
        "phone": "+447400123456"
    }


# --- options that were never offered ---------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "action", ["pay_now", "upload_documents", "attestation", "not_an_action", ""]
)
def test_a_tampered_form_posting_an_option_not_offered_is_refused(client, action):
    opened = verified_for(client, "promise_to_pay", "promise_to_pay")
    page = client.get(opened.url("options"))
    key = page.content.split(b'name="submission_key" value="')[1].split(b'"')[0].decode()

    response = client.post(
        opened.url("options"),
        {"action": action, "submission_key": key, "amount": "100.00", "typed_name": "Ada L"},
    )

    if action == "":  # no action at all: the recommended one's form, with its errors
        assert_refused(client, opened, response, "date")
        return
    assert response.status_code == 400
    assert "That option is not available." in error_text(response)
    event = CaseEvent.objects.filter(case=opened.case).order_by("pk").last()
    assert event.kind == "validation_failed"
    assert event.data["errors"] == {"action": ["not offered"]}
    assert "option_chosen" not in kinds(opened.case)
    assert not Outcome.objects.exists()


@pytest.mark.django_db
def test_an_option_not_offered_in_the_query_shows_the_recommended_one(client):
    opened = verified_for(client, "promise_to_pay", "promise_to_pay")

    response = client.get(opened.url("options", "action=pay_now"))

    assert response.status_code == 200
    assert b'name="action" value="promise_to_pay"' in response.content


@pytest.mark.django_db
def test_the_review_submits_exactly_the_values_checked_on_the_options_page(client):
    opened = verified_for(client, "promise_to_pay", "promise_to_pay")
    bounds = opened.bounds("promise_to_pay")
    values = {"amount": bounds["min_amount"], "date": bounds["earliest_date"]}
    choose(client, opened, "promise_to_pay", values)

    response = client.post(opened.url("review"), {"amount": "1.00", "action": "dispute"})

    assert response.status_code == 302
    outcome = Outcome.objects.get(case=opened.case)
    assert (outcome.action, outcome.values) == ("promise_to_pay", values)
