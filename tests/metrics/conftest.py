"""The hand-built data set of tests/metrics: seven promise_to_pay cases across two weeks,
one per kind of ending. docs/metrics.md defines each figure; the expected values in the
tests are worked out from the timelines below."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from metrics.models import UnitCost
from metrics.services import case_facts_rebuild
from tests import factories
from tests.metrics.builder import HOUR, MINUTE, Timeline


def _monday(days_ago: int) -> dt.datetime:
    day = (timezone.now() - dt.timedelta(days=days_ago)).date()
    day -= dt.timedelta(days=day.weekday())
    return dt.datetime.combine(day, dt.time(9, 0), tzinfo=dt.UTC)


@pytest.fixture
def unit_costs(db):
    return UnitCost.objects.create(
        currency="GBP",
        sms_message=Decimal("0.04"),
        email_message=Decimal("0.001"),
        whatsapp_message=Decimal("0.03"),
        agent_minute=Decimal("0.50"),
        agent_minutes_per_case=Decimal("12"),
    )


@pytest.fixture
def client_and_key(db):
    return factories.api_client()


@pytest.fixture
def dataset(db, workflow, client_and_key, unit_costs):
    """Week 1 (a Monday about two weeks ago): A resolved, B resolved after a writeback
    retry, C abandoned after two messages, D escalated and completed by an agent.
    Week 2: E closed by a rule before outreach, F open after two exception routes,
    G writeback failed for good."""
    client, _ = client_and_key
    w1 = _monday(14)
    w2 = w1 + dt.timedelta(days=7)
    t = Timeline(workflow=workflow, client=client)

    a = t.case(w1, state="resolved", outcome="resolved_in_message", closed_at=w1 + 131 * MINUTE)
    t.event(a, "outreach_started", w1 + 1 * MINUTE)
    t.sent(a, w1 + HOUR, "sms", 1, "A")
    t.event(a, "message_status", w1 + 61 * MINUTE, status="delivered", channel="sms")
    t.event(a, "engaged", w1 + 2 * HOUR, actor="customer")
    t.event(a, "link_opened", w1 + 2 * HOUR + MINUTE, actor="customer")
    t.event(a, "verified", w1 + 125 * MINUTE, actor="customer")
    t.event(a, "option_chosen", w1 + 126 * MINUTE, actor="customer")
    t.event(a, "action_submitted", w1 + 130 * MINUTE, actor="customer", action="promise_to_pay")
    t.event(a, "writeback_attempt", w1 + 131 * MINUTE, attempt=1, result="ok", step="send")
    t.event(a, "writeback_confirmed", w1 + 131 * MINUTE)
    t.outcome(a, "promise_to_pay", {"amount": "100.00"}, state="confirmed", attempts=1)

    b = t.case(w1, state="resolved", outcome="resolved_in_message", closed_at=w1 + 5 * HOUR)
    t.sent(b, w1 + HOUR, "email", 1, "B")
    t.event(b, "engaged", w1 + 3 * HOUR, actor="customer")
    t.event(b, "verified", w1 + 3 * HOUR + 5 * MINUTE, actor="customer")
    t.event(b, "option_chosen", w1 + 3 * HOUR + 6 * MINUTE, actor="customer")
    t.event(b, "action_submitted", w1 + 3 * HOUR + 20 * MINUTE, actor="customer")
    t.event(b, "writeback_attempt", w1 + 3 * HOUR + 21 * MINUTE, attempt=1, result="retry")
    t.event(b, "writeback_attempt", w1 + 5 * HOUR, attempt=2, result="ok")
    t.event(b, "writeback_confirmed", w1 + 5 * HOUR)
    t.outcome(b, "pay_now", {"amount": "50.00"}, state="confirmed", attempts=2)

    c = t.case(w1, state="abandoned", outcome="abandoned", closed_at=w1 + 72 * HOUR)
    t.sent(c, w1 + HOUR, "sms", 1, "A")
    t.event(c, "message_status", w1 + 61 * MINUTE, status="delivered", channel="sms")
    t.sent(c, w1 + 24 * HOUR, "sms", 2, "A")
    t.event(c, "abandoned", w1 + 72 * HOUR, reason="no_response", last_step=2)

    d = t.case(
        w1, state="resolved", outcome="completed_by_agent", closed_at=w1 + 6 * HOUR, segment="vip"
    )
    t.sent(d, w1 + HOUR, "sms", 1, "A")
    t.event(d, "engaged", w1 + 2 * HOUR, actor="customer")
    t.event(d, "verification_failed", w1 + 2 * HOUR + MINUTE, actor="customer")
    t.event(d, "escalated", w1 + 2 * HOUR + 2 * MINUTE, exception="identity_failed", priority=60)
    t.event(d, "agent_claimed", w1 + 5 * HOUR, actor="agent")
    t.event(d, "agent_correction", w1 + 5 * HOUR + 5 * MINUTE, actor="agent")
    t.event(d, "completed_by_agent", w1 + 5 * HOUR + 15 * MINUTE, actor="agent")
    t.event(d, "writeback_attempt", w1 + 6 * HOUR, attempt=1, result="ok")
    t.event(d, "writeback_confirmed", w1 + 6 * HOUR)
    t.outcome(d, "payment_plan", {"total": "300.00"}, state="confirmed", attempts=1)

    e = t.case(
        w2, state="closed_by_rule", outcome="closed_by_rule", closed_at=w2, segment="business"
    )
    t.event(e, "closed_by_rule", w2 + MINUTE, reason="insolvency", rule="no_insolvency")

    f = t.case(w2, state="engaged")
    t.sent(f, w2 + HOUR, "sms", 1, "B")
    t.event(f, "engaged", w2 + 2 * HOUR, actor="customer")
    t.event(f, "exception_retry", w2 + 3 * HOUR, exception="payment_declined", attempt=1)
    t.event(f, "alternative_offered", w2 + 4 * HOUR, exception="payment_declined")

    g = t.case(w2, state="writeback_failed", outcome="writeback_failed")
    t.sent(g, w2 + HOUR, "whatsapp", 1, "A")
    t.event(g, "engaged", w2 + 2 * HOUR, actor="customer")
    t.event(g, "verified", w2 + 2 * HOUR + MINUTE, actor="customer")
    t.event(g, "option_chosen", w2 + 2 * HOUR + 2 * MINUTE, actor="customer")
    t.event(g, "action_submitted", w2 + 2 * HOUR + 30 * MINUTE, actor="customer")
    t.event(g, "writeback_attempt", w2 + 2 * HOUR + 31 * MINUTE, attempt=1, result="permanent")
    t.event(g, "writeback_failed", w2 + 2 * HOUR + 31 * MINUTE)
    t.outcome(g, "promise_to_pay", {"amount": "80.00"}, state="failed", attempts=1)

    t.save()
    case_facts_rebuild()
    return {
        "w1": w1,
        "w2": w2,
        "client": client,
        "cases": dict(zip("abcdefg", t.cases, strict=True)),
    }
