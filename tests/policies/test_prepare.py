"""Preparing a new case, before any message: fork rules send flagged customers to an agent,
a pilot admits only its share, a case with nothing to offer follows its `ineligible` route,
and exception routes retry, offer an alternative, close or escalate."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest
from django.utils import timezone

from cases.models import Case, CaseEvent
from cases.services import case_transition, triggers_ingest
from policies.jobs import prepare_pending_cases
from policies.services import case_prepare, case_route_exception, cases_prepare
from tests import factories

pytestmark = pytest.mark.django_db

PILOT_KEY = "failed_payment"


def _prepared(workflow_key: str, **overrides) -> Case:
    case = factories.case_for(workflow_key, **overrides)
    case_prepare(case=case)
    case.refresh_from_db()
    return case


def _kinds(case: Case) -> list[str]:
    return list(case.events.values_list("kind", flat=True))


# --- fork rules ---------------------------------------------------------------------------------

EXTRA_CARE = '"vulnerable" in customer.flags || "deceased" in customer.flags'
COMPLAINT = '"complaint_open" in customer.flags || "insolvency" in customer.flags'


@pytest.mark.parametrize(
    ("customer", "data", "rule", "expression", "priority", "reason"),
    [
        (
            {"flags": ["vulnerable"]},
            {},
            "Customer needs extra care",
            EXTRA_CARE,
            90,
            "Vulnerable or bereaved customers are handled by a trained agent, not automation.",
        ),
        (
            {"flags": ["deceased"]},
            {},
            "Customer needs extra care",
            EXTRA_CARE,
            90,
            "Vulnerable or bereaved customers are handled by a trained agent, not automation.",
        ),
        (
            {"flags": ["complaint_open"]},
            {},
            "Complaint or insolvency open",
            COMPLAINT,
            80,
            "An open complaint or insolvency process must not receive collections messages.",
        ),
        (
            {"flags": ["insolvency"]},
            {},
            "Complaint or insolvency open",
            COMPLAINT,
            80,
            "An open complaint or insolvency process must not receive collections messages.",
        ),
        (
            {},
            {"balance": "10000.01"},
            "High balance",
            "data.balance > 10000.0",
            70,
            "Balances above 10,000 are negotiated by an agent.",
        ),
        (  # the first rule that holds decides
            {"flags": ["insolvency", "vulnerable"]},
            {"balance": "20000.00"},
            "Customer needs extra care",
            EXTRA_CARE,
            90,
            "Vulnerable or bereaved customers are handled by a trained agent, not automation.",
        ),
    ],
)
def test_promise_to_pay_forks_before_any_message(
    workflow, customer, data, rule, expression, priority, reason
):
    case = factories.case_for("promise_to_pay", customer=customer, data=data)

    result = case_prepare(case=case)

    assert result.outcome == "forked"
    case.refresh_from_db()
    assert case.state == "escalated"
    assert case.outcome == "escalated_with_context"
    assert case.priority == priority
    assert case.escalation_reason == reason
    assert case.offer is not None  # the agent sees what the rules would have offered
    assert case.first_sent_at is None
    assert _kinds(case) == ["triggered", "offer_computed", "escalated"]
    assert case.events.get(kind="escalated").data == {
        "reason": reason,
        "rule": rule,
        "expression": expression,
        "priority": priority,
    }


def test_balance_at_10000_is_not_forked(workflow):
    case = _prepared("promise_to_pay", data={"balance": "10000.00", "days_past_due": 40})

    assert case.state == "received"
    assert [item["action"] for item in case.offer["actions"]] == [
        "payment_plan",
        "dispute",
        "request_callback",
    ]
    assert _kinds(case) == ["triggered", "offer_computed"]


@pytest.mark.parametrize(
    ("key", "customer", "data", "state", "rule", "priority"),
    [
        (
            "failed_payment",
            {"flags": ["vulnerable"]},
            {},
            "escalated",
            "Customer needs extra care",
            90,
        ),
        ("failed_payment", {"flags": ["insolvency"]}, {}, "closed_by_rule", "Insolvency open", 0),
        (
            "compliance_refresh",
            {"flags": ["vulnerable"]},
            {},
            "escalated",
            "Customer needs extra care",
            70,
        ),
        (
            "compliance_refresh",
            {},
            {"refresh_due_date": "2020-01-31"},
            "escalated",
            "Overdue refresh",
            85,
        ),
        (
            "address_update",
            {"flags": ["deceased"]},
            {},
            "escalated",
            "Customer needs extra care",
            80,
        ),
    ],
)
def test_other_workflows_fork(key, customer, data, state, rule, priority):
    factories.workflow_shipped(key)

    case = _prepared(key, customer=customer, data=data)

    assert case.state == state
    event = case.events.get(kind=state if state == "closed_by_rule" else "escalated")
    assert event.data["rule"] == rule
    assert event.data["priority"] == priority
    assert "outreach_started" not in _kinds(case)
    if state == "closed_by_rule":
        assert case.outcome == "closed_by_rule"
        assert case.closed_at is not None
        assert event.data["reason"].startswith("Payments are frozen during insolvency")


def test_unflagged_customers_are_ready_in_every_workflow():
    for key in ("promise_to_pay", "failed_payment", "compliance_refresh", "address_update"):
        factories.workflow_shipped(key)
        case = factories.case_for(key)

        assert case_prepare(case=case).outcome == "ready", key
        case.refresh_from_db()
        assert case.state == "received"
        assert case.offer["actions"]


def test_compliance_refresh_due_today_is_not_overdue(monkeypatch):
    factories.workflow_shipped("compliance_refresh")
    now = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)
    monkeypatch.setattr(timezone, "now", lambda: now)

    due_today = _prepared("compliance_refresh", data={"refresh_due_date": "2026-03-10"})
    due_yesterday = _prepared("compliance_refresh", data={"refresh_due_date": "2026-03-09"})

    assert due_today.state == "received"
    assert due_yesterday.state == "escalated"


# --- pilots -------------------------------------------------------------------------------------


def _pilot(**pilot) -> None:
    factories.workflow_variant(PILOT_KEY, pilot=pilot)


def _batch(client, external_ids: list[str]) -> list[str]:
    bodies = [
        factories.trigger_body_for(PILOT_KEY, customer={"external_id": external_id})
        for external_id in external_ids
    ]
    results = triggers_ingest(client=client, raw_triggers=bodies)
    assert {result.status for result in results} == {"created"}
    return [result.case_id for result in results]


def _admitted(case_ids) -> dict[str, bool]:
    """External id → admitted, read from the pilot events each case recorded."""
    events = CaseEvent.objects.filter(
        case_id__in=case_ids, kind__in=["pilot_admitted", "pilot_excluded"]
    ).select_related("case__customer")
    return {event.case.customer.external_id: event.kind == "pilot_admitted" for event in events}


def test_allow_list_admits_only_listed_customers():
    _pilot(mode="allow_list", allow_list=["cust-in", "cust-also-in"], fallback="escalate")
    client, _ = factories.api_client()
    ids = _batch(client, ["cust-in", "cust-out", "cust-also-in"])

    outcomes = [case_prepare(case=case_id).outcome for case_id in ids]

    assert outcomes == ["ready", "not_in_pilot", "ready"]
    out = Case.objects.get(pk=ids[1])
    assert out.state == "escalated"
    assert out.priority == 10
    assert out.escalation_reason == "not_in_pilot"
    assert _kinds(out) == ["triggered", "offer_computed", "pilot_excluded", "escalated"]
    assert out.events.get(kind="pilot_excluded").data == {
        "mode": "allow_list",
        "why": "customer not on the allow-list",
    }
    assert out.events.get(kind="escalated").data == {
        "reason": "not_in_pilot",
        "why": "customer not on the allow-list",
        "priority": 10,
    }
    assert Case.objects.get(pk=ids[0]).events.get(kind="pilot_admitted").data == {
        "mode": "allow_list",
        "why": "customer on the allow-list",
    }


def test_percentage_admits_about_its_share_and_always_the_same_customers():
    _pilot(mode="percentage", percentage=30, fallback="close")
    client, _ = factories.api_client()
    customers = [f"pct-{n:03d}" for n in range(300)]

    first = cases_prepare(case_ids=_batch(client, customers))
    admitted = _admitted(Case.objects.values_list("pk", flat=True))

    assert first == Counter(
        {"ready": sum(admitted.values()), "not_in_pilot": 300 - sum(admitted.values())}
    )
    assert 0.22 * 300 <= sum(admitted.values()) <= 0.38 * 300
    closed = Case.objects.filter(state="closed_by_rule")
    assert closed.count() == 300 - sum(admitted.values())
    assert {event.data["reason"] for event in CaseEvent.objects.filter(kind="closed_by_rule")} == {
        "not_in_pilot"
    }

    # A second trigger for the same customers gets the same answer, customer by customer.
    again_ids = _batch(client, customers[:60])
    cases_prepare(case_ids=again_ids)
    assert _admitted(again_ids) == {
        external_id: admitted[external_id] for external_id in customers[:60]
    }


@pytest.mark.parametrize(("percentage", "expected"), [(0, 0), (100, 20)])
def test_percentage_extremes(percentage, expected):
    _pilot(mode="percentage", percentage=percentage, fallback="close")
    client, _ = factories.api_client()

    outcomes = cases_prepare(case_ids=_batch(client, [f"x-{n}" for n in range(20)]))

    assert outcomes["ready"] == expected
    assert CaseEvent.objects.filter(kind="pilot_admitted").count() == expected
    assert CaseEvent.objects.filter(kind="pilot_excluded").count() == 20 - expected


@pytest.mark.parametrize("fallback", ["escalate", "close"])
def test_daily_cap_admits_exactly_n_then_falls_back(fallback):
    _pilot(mode="daily_cap", daily_cap=3, fallback=fallback)
    client, _ = factories.api_client()
    ids = _batch(client, [f"cap-{n}" for n in range(5)])

    outcomes = [case_prepare(case=case_id).outcome for case_id in ids]

    assert outcomes == ["ready", "ready", "ready", "not_in_pilot", "not_in_pilot"]
    states = [Case.objects.get(pk=case_id).state for case_id in ids]
    fallen = "escalated" if fallback == "escalate" else "closed_by_rule"
    assert states == ["received"] * 3 + [fallen] * 2
    assert [event.data["why"] for event in CaseEvent.objects.filter(kind__startswith="pilot_")] == [
        f"{n} of 3 admitted today" for n in (0, 1, 2, 3, 3)
    ]
    assert CaseEvent.objects.filter(kind="pilot_admitted").count() == 3
    assert CaseEvent.objects.filter(kind="pilot_excluded").count() == 2


def test_daily_cap_counts_only_today(monkeypatch):
    _pilot(mode="daily_cap", daily_cap=1, fallback="close")
    client, _ = factories.api_client()
    [first, second, next_day] = _batch(client, ["cap-a", "cap-b", "cap-c"])

    assert case_prepare(case=first).outcome == "ready"
    assert case_prepare(case=second).outcome == "not_in_pilot"
    tomorrow = timezone.now() + dt.timedelta(days=1)
    monkeypatch.setattr(timezone, "now", lambda: tomorrow)
    assert case_prepare(case=next_day).outcome == "ready"


def test_no_pilot_records_no_pilot_event(workflow):
    case = _prepared("promise_to_pay")

    assert not case.events.filter(kind__startswith="pilot_").exists()


def test_flagged_customer_outside_the_pilot_gets_the_pilot_fallback():
    # Outside the pilot the source keeps its own process; the pilot decides first.
    _pilot(mode="allow_list", allow_list=[], fallback="close")

    case = _prepared(PILOT_KEY, customer={"flags": ["vulnerable"]})

    assert case.state == "closed_by_rule"
    assert _kinds(case) == ["triggered", "offer_computed", "pilot_excluded", "closed_by_rule"]


# --- nothing to offer ---------------------------------------------------------------------------


@pytest.fixture
def plans_only():
    """promise_to_pay offering only a promise or a plan, so a case can get nothing."""
    spec = factories.workflow_spec("promise_to_pay")
    return factories.workflow_variant("promise_to_pay", actions=spec["actions"][:2])


@pytest.mark.parametrize(("balance", "priority"), [("2500.00", 40), ("2500.01", 70)])
def test_ineligible_follows_its_route_with_the_priority_rule(plans_only, balance, priority):
    case = factories.case_for("promise_to_pay", data={"balance": balance, "days_past_due": 120})

    result = case_prepare(case=case)

    assert result.outcome == "ineligible"
    assert result.case.state == "escalated"
    case.refresh_from_db()
    assert case.priority == priority
    assert case.escalation_reason == "ineligible"
    assert case.offer["actions"] == []
    event = case.events.get(kind="escalated")
    assert event.data == {
        "exception": "ineligible",
        "attempt": 1,
        "excluded": case.offer["excluded"],
        "reason": "ineligible",
        "priority": priority,
    }
    assert [item["action"] for item in event.data["excluded"]] == ["promise_to_pay", "payment_plan"]


# --- exception routes ---------------------------------------------------------------------------


def test_retry_within_max_retries_then_escalate():
    factories.workflow_shipped("failed_payment")  # payment_declined: retry, 2 at most
    case = _prepared("failed_payment")

    assert case_route_exception(case=case, exception_type="payment_declined", attempt=1) == "retry"
    assert case_route_exception(case=case, exception_type="payment_declined", attempt=2) == "retry"
    assert case.state == "received"
    assert case_route_exception(case=case, exception_type="payment_declined", attempt=3) == (
        "escalate"
    )

    case.refresh_from_db()
    assert case.state == "escalated"
    assert case.priority == 50
    retries = case.events.filter(kind="exception_retry")
    assert [event.data for event in retries] == [
        {"exception": "payment_declined", "attempt": 1},
        {"exception": "payment_declined", "attempt": 2},
    ]
    assert case.events.get(kind="escalated").data == {
        "exception": "payment_declined",
        "attempt": 3,
        "reason": "payment_declined",
        "priority": 50,
    }


@pytest.mark.parametrize(
    ("balance", "done"), [("1200.00", "offer_alternative"), ("150.00", "escalate")]
)
def test_offer_alternative_only_when_the_offer_has_it(workflow, balance, done):
    case = _prepared("promise_to_pay", data={"balance": balance, "days_past_due": 10})

    outcome = case_route_exception(
        case=case, exception_type="payment_declined", detail={"provider": "demo"}
    )

    assert outcome == done
    case.refresh_from_db()
    if done == "offer_alternative":
        assert case.state == "received"
        assert case.events.get(kind="alternative_offered").data == {
            "exception": "payment_declined",
            "attempt": 1,
            "provider": "demo",
            "action": "payment_plan",
        }
    else:
        assert case.state == "escalated"
        assert case.events.get(kind="escalated").data["reason"] == "payment_declined"


@pytest.mark.parametrize("state", ["received", "outreach", "engaged", "verified"])
def test_close_route_closes_an_open_case(state):
    factories.workflow_shipped("failed_payment")
    case = factories.case_for("failed_payment")
    for transition in factories.PATHS_TO_STATE[state]:
        case = case_transition(case=case, transition=transition)

    assert case_route_exception(case=case, exception_type="no_response") == "close"

    case.refresh_from_db()
    assert case.state == "closed_by_rule"
    assert case.events.get(kind="closed_by_rule").data == {
        "exception": "no_response",
        "attempt": 1,
        "reason": "No response; the billing system's own dunning continues.",
    }


def test_close_route_escalates_a_case_that_cannot_be_closed():
    factories.workflow_shipped("failed_payment")
    case = factories.case_for("failed_payment")
    case = case_transition(case=case, transition="start_outreach")
    case = case_transition(case=case, transition="engage")
    case = case_transition(case=case, transition="verify")
    case = case_transition(case=case, transition="submit_action")
    case = case_transition(case=case, transition="fail_writeback")

    assert case_route_exception(case=case, exception_type="no_response") == "escalate"
    case.refresh_from_db()
    assert case.state == "escalated"


@pytest.mark.parametrize(("days_past_due", "priority"), [(59, 30), (60, 60)])
def test_escalate_route_with_priority_rule(workflow, days_past_due, priority):
    case = _prepared("promise_to_pay", data={"days_past_due": days_past_due})

    assert case_route_exception(case=case, exception_type="no_response") == "escalate"

    case.refresh_from_db()
    assert case.state == "escalated"
    assert case.priority == priority
    assert case.escalation_reason == "no_response"


def test_escalate_route_with_fixed_priority(workflow):
    case = _prepared("promise_to_pay")

    assert case_route_exception(case=case, exception_type="system_unavailable") == "escalate"

    case.refresh_from_db()
    assert case.priority == 80


# --- once, and by the job -----------------------------------------------------------------------


def test_prepare_is_idempotent(workflow):
    case = factories.case_for("promise_to_pay")

    assert case_prepare(case=case).outcome == "ready"
    events = _kinds(case)
    offer = Case.objects.get(pk=case.pk).offer
    again = case_prepare(case=case.pk)

    assert again.outcome == "skipped"
    assert _kinds(case) == events
    assert Case.objects.get(pk=case.pk).offer == offer


def test_prepare_skips_a_case_that_moved_on(workflow):
    case = factories.case_in_state("escalated")

    assert case_prepare(case=case).outcome == "skipped"
    assert Case.objects.get(pk=case.pk).offer is None


def test_sweep_prepares_received_cases_older_than_two_minutes(workflow):
    old = factories.case_for("promise_to_pay")
    recent = factories.case_for("promise_to_pay")
    done = factories.case_for("promise_to_pay")
    case_prepare(case=done)
    Case.objects.filter(pk__in=[old.pk, done.pk]).update(
        triggered_at=timezone.now() - dt.timedelta(minutes=2, seconds=5)
    )

    assert prepare_pending_cases() == {"ready": 1}

    assert Case.objects.get(pk=old.pk).offer is not None
    assert Case.objects.get(pk=recent.pk).offer is None
    assert prepare_pending_cases() == {}


@pytest.mark.django_db(transaction=True)
def test_trigger_posted_through_the_api_is_prepared_on_commit(api, workflow):
    body = factories.trigger_body_for(
        "promise_to_pay", data={"balance": "6000.00", "days_past_due": 45}
    )

    created = api.post("/api/v1/triggers/", body, format="json")
    assert created.status_code == 201, created.json()
    detail = api.get(f"/api/v1/cases/{created.json()['id']}/")

    assert detail.status_code == 200
    answer = detail.json()
    assert answer["offer"]["policy"] == {"workflow": "promise_to_pay", "version": 1}
    assert [item["action"] for item in answer["offer"]["actions"]] == [
        "payment_plan",
        "dispute",
        "request_callback",
    ]
    assert answer["offer"]["excluded"][0]["action"] == "promise_to_pay"
    # Then outreach begins (tests/channels covers it); preparation comes first.
    assert [item["kind"] for item in answer["timeline"]][:2] == ["triggered", "offer_computed"]


@pytest.mark.django_db(transaction=True)
def test_batch_posted_through_the_api_is_prepared_on_commit(api, workflow):
    from channels.sequences import sequences_install_shipped

    sequences_install_shipped()
    bodies = [
        factories.trigger_body_for("promise_to_pay"),
        factories.trigger_body_for("promise_to_pay", customer={"flags": ["vulnerable"]}),
    ]

    response = api.post("/api/v1/triggers/batch/", {"triggers": bodies}, format="json")

    assert response.status_code == 200, response.json()
    assert response.json()["counts"]["created"] == 2
    states = dict(Case.objects.values_list("event_id", "state"))
    # The first is ready for outreach (already in it if it is daytime in London); the
    # vulnerable customer was forked to an agent before any message.
    assert states[bodies[0]["event_id"]] in ("received", "outreach")
    assert states[bodies[1]["event_id"]] == "escalated"
    assert Case.objects.filter(offer__isnull=True).count() == 0
