"""Offers for the four shipped workflows: a case gets only the actions its rules allow,
with concrete bounds, at and just beyond every bound in workflows/*.yaml; and a
customer's choice is re-checked against the stored offer at and beyond those bounds."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from cases.services import triggers_ingest
from policies.blueprint import blueprint_for
from policies.offers import offer_action, offer_check_choice, offer_compute
from policies.services import case_prepare, workflows_install_shipped
from tests import factories

pytestmark = pytest.mark.django_db

TODAY = dt.date(2026, 3, 10)
PROMISE_RULE = "data.days_past_due < 90 && data.balance <= 5000.0"
PLAN_RULE = "data.balance >= 200.0 && data.days_past_due < 120"


@pytest.fixture(autouse=True)
def shipped(db):
    return {workflow.key: workflow for workflow in workflows_install_shipped()}


def _offer(workflow_key: str, today: dt.date | None = TODAY, **data) -> dict:
    case = factories.case_for(workflow_key, data=data)
    return offer_compute(case=case, blueprint=blueprint_for(case.workflow), today=today)


def _actions(offer: dict) -> list[str]:
    return [item["action"] for item in offer["actions"]]


def _bounds(offer: dict, action: str) -> dict:
    item = offer_action(offer, action)
    assert item is not None, f"{action} not offered; excluded: {offer['excluded']}"
    return item["bounds"]


def _excluded(offer: dict, action: str) -> dict:
    [item] = [item for item in offer["excluded"] if item["action"] == action]
    return item


def _plan_counts(offer: dict) -> list[int]:
    return [plan["instalments"] for plan in _bounds(offer, "payment_plan")["plans"]]


# --- every offer names its policy ---------------------------------------------------------------


@pytest.mark.parametrize(
    "key", ["promise_to_pay", "failed_payment", "compliance_refresh", "address_update"]
)
def test_offer_names_the_workflow_version_and_the_day(shipped, key):
    offer = _offer(key)

    assert offer["policy"] == {"workflow": key, "version": shipped[key].version}
    assert offer["today"] == TODAY.isoformat()
    assert offer["actions"], offer["excluded"]
    assert sum(item["recommended"] for item in offer["actions"]) == 1


def test_prepare_stores_the_offer_on_a_case_from_a_trigger(shipped):
    case = factories.case_for("failed_payment")

    result = case_prepare(case=case)

    assert result.outcome == "ready"
    case.refresh_from_db()
    assert case.offer["policy"] == {"workflow": "failed_payment", "version": 1}
    assert _actions(case.offer) == ["update_payment_method", "pay_now", "request_callback"]
    event = case.events.get(kind="offer_computed")
    assert event.data["actions"] == _actions(case.offer)
    assert event.data["policy"] == case.offer["policy"]


# --- promise_to_pay -----------------------------------------------------------------------------


def test_promise_to_pay_offers_everything_to_a_small_recent_arrear():
    offer = _offer("promise_to_pay", balance="420.50", days_past_due=22)

    assert _actions(offer) == ["promise_to_pay", "payment_plan", "dispute", "request_callback"]
    assert offer["excluded"] == []
    assert offer["currency"] == "GBP"
    assert offer_action(offer, "promise_to_pay")["recommended"] is True
    assert offer_action(offer, "promise_to_pay")["identity_level"] == "otp"
    assert offer_action(offer, "payment_plan")["identity_level"] == "otp_and_known_fact"
    assert offer_action(offer, "promise_to_pay")["evidence"] == ["amount", "date", "consent_text"]
    assert _bounds(offer, "dispute")["reasons"] == [
        "I have already paid",
        "The amount is wrong",
        "I do not recognise this debt",
        "Something else",
    ]
    assert _bounds(offer, "request_callback") == {
        "windows": ["09:00-12:00", "12:00-17:00", "17:00-20:00"],
        "earliest_date": "2026-03-10",
        "latest_date": "2026-03-17",
    }


@pytest.mark.parametrize(("days_past_due", "offered"), [(0, True), (89, True), (90, False)])
def test_promise_days_past_due_bound(days_past_due, offered):
    offer = _offer("promise_to_pay", balance="420.50", days_past_due=days_past_due)

    assert ("promise_to_pay" in _actions(offer)) is offered
    if not offered:
        assert _excluded(offer, "promise_to_pay") == {
            "action": "promise_to_pay",
            "rule": PROMISE_RULE,
            "reason": "rule is false",
        }
        assert offer_action(offer, "payment_plan")["recommended"] is True


@pytest.mark.parametrize(("balance", "offered"), [("5000.00", True), ("5000.01", False)])
def test_promise_balance_bound(balance, offered):
    offer = _offer("promise_to_pay", balance=balance, days_past_due=10)

    assert ("promise_to_pay" in _actions(offer)) is offered
    if offered:
        assert _bounds(offer, "promise_to_pay")["max_amount"] == "5000.00"
        assert _bounds(offer, "promise_to_pay")["min_amount"] == "1250.00"
    else:
        assert _excluded(offer, "promise_to_pay")["rule"] == PROMISE_RULE


@pytest.mark.parametrize(("balance", "offered"), [("199.99", False), ("200.00", True)])
def test_payment_plan_balance_bound(balance, offered):
    offer = _offer("promise_to_pay", balance=balance, days_past_due=10)

    assert ("payment_plan" in _actions(offer)) is offered
    if offered:
        assert _bounds(offer, "payment_plan")["plans"] == [
            {
                "instalments": 3,
                "frequency": "monthly",
                "instalment_amount": "66.67",
                "final_amount": "66.66",
                "total": "200.00",
                "first_due": "2026-03-17",
            },
            {
                "instalments": 6,
                "frequency": "monthly",
                "instalment_amount": "33.34",
                "final_amount": "33.30",
                "total": "200.00",
                "first_due": "2026-03-17",
            },
        ]
    else:
        assert _excluded(offer, "payment_plan") == {
            "action": "payment_plan",
            "rule": PLAN_RULE,
            "reason": "rule is false",
        }


@pytest.mark.parametrize(("days_past_due", "offered"), [(119, True), (120, False)])
def test_payment_plan_days_past_due_bound(days_past_due, offered):
    offer = _offer("promise_to_pay", balance="1200.00", days_past_due=days_past_due)

    assert ("payment_plan" in _actions(offer)) is offered
    assert "promise_to_pay" not in _actions(offer)  # 119 and 120 are both beyond 89
    if not offered:
        assert _excluded(offer, "payment_plan")["rule"] == PLAN_RULE
        assert _actions(offer) == ["dispute", "request_callback"]


@pytest.mark.parametrize(
    ("balance", "counts"), [("2000.00", [3, 6]), ("2000.01", [3, 6, 12]), ("4800.00", [3, 6, 12])]
)
def test_payment_plan_term_doubles_above_2000(balance, counts):
    offer = _offer("promise_to_pay", balance=balance, days_past_due=40)

    assert _plan_counts(offer) == counts


def test_payment_plan_amounts_add_up_to_the_balance():
    plans = _bounds(_offer("promise_to_pay", balance="2000.01", days_past_due=40), "payment_plan")

    for plan in plans["plans"]:
        count = plan["instalments"]
        instalment, final = float(plan["instalment_amount"]), float(plan["final_amount"])
        assert round(instalment * (count - 1) + final, 2) == 2000.01
        assert 0 <= instalment - final < 0.01 * count
    assert plans["plans"][-1] == {
        "instalments": 12,
        "frequency": "monthly",
        "instalment_amount": "166.67",
        "final_amount": "166.64",
        "total": "2000.01",
        "first_due": "2026-03-17",
    }


@pytest.fixture
def plans_from_50():
    # The shipped plan starts at a 200.00 balance, where six instalments are 33.34 at the
    # least; lowering that threshold is the only way to reach the 25.00 minimum.
    spec = factories.workflow_spec("promise_to_pay")
    spec["actions"][1]["eligible_when"] = "data.balance >= 50.0 && data.days_past_due < 120"
    return factories.workflow_variant("promise_to_pay", actions=spec["actions"])


@pytest.mark.parametrize(
    ("balance", "counts"),
    [
        ("150.00", [3, 6]),  # six instalments of exactly 25.00: at the minimum
        ("149.94", [3]),  # six of 24.99: below it
        ("149.95", [3]),  # six rounded up to 25.00 would leave a final 24.95
        ("75.00", [3]),  # three of exactly 25.00
    ],
)
def test_payment_plan_min_instalment_bound(plans_from_50, balance, counts):
    offer = _offer("promise_to_pay", balance=balance, days_past_due=10)

    assert _plan_counts(offer) == counts
    for plan in _bounds(offer, "payment_plan")["plans"]:
        assert float(plan["instalment_amount"]) >= 25.0
        assert float(plan["final_amount"]) >= 25.0


def test_payment_plan_left_out_when_no_count_meets_the_minimum(plans_from_50):
    # Three instalments would be 25.00, 25.00 and 24.99: the last one is below 25.00.
    offer = _offer("promise_to_pay", balance="74.99", days_past_due=10)

    assert offer["policy"] == {"workflow": "promise_to_pay", "version": 2}
    assert _excluded(offer, "payment_plan") == {
        "action": "payment_plan",
        "rule": "bounds",
        "reason": "no plan of [3, 6, 12] instalments keeps each one at or above 25.00 "
        "within 6 months",
    }


@pytest.mark.parametrize(
    ("balance", "minimum_payment", "min_amount"),
    [
        ("420.50", None, "105.13"),  # 25% is 105.125: a minimum rounds up to the cent
        ("420.52", None, "105.13"),  # 25% is exactly 105.13
        ("5000.00", None, "1250.00"),
        ("420.50", "50.00", "50.00"),  # the trigger's own minimum wins over 25%
        ("420.50", "420.50", "420.50"),  # a minimum equal to the balance still fits
    ],
)
def test_promise_min_amount(balance, minimum_payment, min_amount):
    offer = _offer(
        "promise_to_pay", balance=balance, minimum_payment=minimum_payment, days_past_due=5
    )

    bounds = _bounds(offer, "promise_to_pay")
    assert bounds["min_amount"] == min_amount
    assert bounds["max_amount"] == balance


def test_promise_left_out_when_the_minimum_is_above_the_balance():
    offer = _offer("promise_to_pay", balance="420.50", minimum_payment="420.51", days_past_due=5)

    assert _excluded(offer, "promise_to_pay") == {
        "action": "promise_to_pay",
        "rule": "bounds",
        "reason": "the minimum 420.51 is above the maximum 420.50",
    }
    assert "payment_plan" in _actions(offer)


@pytest.mark.parametrize(("days_past_due", "days"), [(0, 30), (29, 30), (30, 14), (89, 14)])
def test_promise_latest_date(days_past_due, days):
    bounds = _bounds(_offer("promise_to_pay", days_past_due=days_past_due), "promise_to_pay")

    assert bounds["earliest_date"] == "2026-03-10"
    assert bounds["latest_date"] == (TODAY + dt.timedelta(days=days)).isoformat()


@pytest.mark.parametrize(
    ("zone", "today"),
    [
        ("Europe/London", "2026-03-10"),
        ("Pacific/Kiritimati", "2026-03-11"),  # UTC+14: already tomorrow
        ("America/Los_Angeles", "2026-03-10"),
    ],
)
def test_promise_dates_count_from_the_customers_own_day(monkeypatch, zone, today):
    now = dt.datetime(2026, 3, 10, 23, 30, tzinfo=dt.UTC)
    monkeypatch.setattr(timezone, "now", lambda: now)
    case = factories.case_for(
        "promise_to_pay", data={"days_past_due": 10}, customer={"timezone": zone}
    )

    offer = offer_compute(case=case, blueprint=blueprint_for(case.workflow))

    bounds = _bounds(offer, "promise_to_pay")
    day = dt.date.fromisoformat(today)
    assert offer["today"] == today
    assert bounds["earliest_date"] == today
    assert bounds["latest_date"] == (day + dt.timedelta(days=30)).isoformat()


# --- failed_payment -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "offered"), [("0.01", True), ("2000.00", True), ("2000.01", False)]
)
def test_failed_payment_pay_now_bound(amount, offered):
    offer = _offer("failed_payment", amount=amount)

    assert ("pay_now" in _actions(offer)) is offered
    assert _actions(offer)[0] == "update_payment_method"
    assert offer_action(offer, "update_payment_method")["recommended"] is True
    assert _bounds(offer, "update_payment_method") == {}
    if offered:
        assert _bounds(offer, "pay_now") == {"amount": amount, "min_amount": amount}
    else:
        assert _excluded(offer, "pay_now") == {
            "action": "pay_now",
            "rule": "data.amount <= 2000.0",
            "reason": "rule is false",
        }
        assert _actions(offer) == ["update_payment_method", "request_callback"]
    assert _bounds(offer, "request_callback") == {
        "windows": ["09:00-12:00", "12:00-17:00"],
        "earliest_date": "2026-03-10",
        "latest_date": "2026-03-17",
    }


# --- compliance_refresh -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "documents",
    [
        ["proof_of_identity"],
        ["proof_of_identity", "proof_of_address"],
        [
            "proof_of_identity",
            "proof_of_address",
            "source_of_funds",
            "tax_residency_self_certification",
        ],
    ],
)
def test_compliance_refresh_asks_for_the_documents_required(documents):
    offer = _offer("compliance_refresh", documents_required=documents)

    assert _actions(offer) == ["upload_documents", "attestation", "request_callback"]
    assert offer_action(offer, "upload_documents")["recommended"] is True
    assert _bounds(offer, "upload_documents") == {
        "document_types": documents,
        "max_files": len(documents) + 2,
        "max_file_mb": 10,
    }
    assert _bounds(offer, "attestation")["statement"].startswith("I confirm that the information")


def test_compliance_refresh_trigger_without_documents_is_refused():
    client, _ = factories.api_client()
    body = factories.trigger_body_for("compliance_refresh", data={"documents_required": []})
    [result] = triggers_ingest(client=client, raw_triggers=[body])

    assert result.status == "invalid"
    assert "data.documents_required" in result.errors


# --- address_update -----------------------------------------------------------------------------


def test_address_update_offers_the_contact_fields_and_an_attestation():
    offer = _offer("address_update")

    assert _actions(offer) == ["update_contact_details", "attestation"]
    assert offer_action(offer, "update_contact_details")["identity_level"] == "otp_and_known_fact"
    assert _bounds(offer, "update_contact_details") == {
        "fields": ["address", "phone", "email"],
        "confirm_unchanged": True,
    }
    assert _bounds(offer, "attestation") == {
        "statement": "I confirm that the contact details I have given are correct."
    }


# --- a customer's choice, checked against the stored offer --------------------------------------


@pytest.fixture
def promise_offer():
    # 420.50 owed, 22 days past due: a promise of 105.13 to 420.50 by 2026-04-09.
    return _offer("promise_to_pay", balance="420.50", days_past_due=22)


@pytest.mark.parametrize(
    ("amount", "date", "errors"),
    [
        ("105.13", "2026-03-10", {}),
        ("420.50", "2026-04-09", {}),
        ("105.12", "2026-03-20", {"amount": ["Enter an amount from 105.13 to 420.50."]}),
        ("420.51", "2026-03-20", {"amount": ["Enter an amount from 105.13 to 420.50."]}),
        (
            "200.005",
            "2026-03-20",
            {"amount": ["Enter an amount with at most 2 decimal places, e.g. 120.50."]},
        ),
        (
            "lots",
            "2026-03-20",
            {"amount": ["Enter an amount with at most 2 decimal places, e.g. 120.50."]},
        ),
        (
            "NaN",
            "2026-03-20",
            {"amount": ["Enter an amount with at most 2 decimal places, e.g. 120.50."]},
        ),
        ("200.00", "2026-03-09", {"date": ["Choose a date from 2026-03-10 to 2026-04-09."]}),
        ("200.00", "2026-04-10", {"date": ["Choose a date from 2026-03-10 to 2026-04-09."]}),
        ("200.00", "next week", {"date": ["Enter a date."]}),
    ],
)
def test_promise_choice_bounds(promise_offer, amount, date, errors):
    choice = {"amount": amount, "date": date}

    assert offer_check_choice(offer=promise_offer, action="promise_to_pay", choice=choice) == errors


@pytest.mark.parametrize(("instalments", "ok"), [(3, True), ("6", True), (12, False), (2, False)])
def test_plan_choice_must_be_a_plan_offered(promise_offer, instalments, ok):
    errors = offer_check_choice(
        offer=promise_offer, action="payment_plan", choice={"instalments": instalments}
    )

    assert errors == ({} if ok else {"instalments": ["Choose one of the plans offered."]})


def test_dispute_and_callback_choices_must_be_offered(promise_offer):
    dispute = offer_check_choice(
        offer=promise_offer, action="dispute", choice={"reason": "I do not like it"}
    )
    callback_ok = offer_check_choice(
        offer=promise_offer,
        action="request_callback",
        choice={"window": "17:00-20:00", "date": "2026-03-17"},
    )
    callback_bad = offer_check_choice(
        offer=promise_offer,
        action="request_callback",
        choice={"window": "20:00-21:00", "date": "2026-03-18"},
    )

    assert dispute == {"reason": ["Choose one of the reasons listed."]}
    assert callback_ok == {}
    assert callback_bad == {
        "window": ["Choose one of the times listed."],
        "date": ["Choose a date from 2026-03-10 to 2026-03-17."],
    }


def test_an_action_not_offered_is_refused():
    offer = _offer("promise_to_pay", balance="420.50", days_past_due=90)

    for action in ("promise_to_pay", "pay_now", "no_such_action"):
        assert offer_check_choice(
            offer=offer, action=action, choice={"amount": "200.00", "date": "2026-03-20"}
        ) == {"action": ["This option is not available for this case."]}
    assert offer_check_choice(offer=None, action="dispute", choice={}) == {
        "action": ["This option is not available for this case."]
    }


@pytest.mark.parametrize(
    ("amount", "errors"),
    [
        ("2000.00", {}),
        ("1999.99", {"amount": ["Enter an amount from 2000.00 to 2000.00."]}),
        ("2000.01", {"amount": ["Enter an amount from 2000.00 to 2000.00."]}),
    ],
)
def test_pay_now_choice_is_the_amount_due(amount, errors):
    offer = _offer("failed_payment", amount="2000.00")

    assert offer_check_choice(offer=offer, action="pay_now", choice={"amount": amount}) == errors


def test_pay_now_not_offered_above_2000():
    offer = _offer("failed_payment", amount="2000.01")

    assert offer_check_choice(offer=offer, action="pay_now", choice={"amount": "2000.01"}) == {
        "action": ["This option is not available for this case."]
    }


def test_contact_details_choice_within_the_fields_offered():
    offer = _offer("address_update")
    narrowed = {**offer, "actions": [dict(item) for item in offer["actions"]]}
    narrowed["actions"][0] = {
        **narrowed["actions"][0],
        "bounds": {"fields": ["address"], "confirm_unchanged": True},
    }

    assert (
        offer_check_choice(
            offer=offer,
            action="update_contact_details",
            choice={"address": "2 Low Road", "phone": "+447911123456"},
        )
        == {}
    )
    assert offer_check_choice(
        offer=narrowed, action="update_contact_details", choice={"phone": "+447911123456"}
    ) == {"phone": ["This detail cannot be changed here."]}
