"""Every metric and flag against the hand-built data set (tests/metrics/conftest.py)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from metrics.selectors import (
    Scope,
    metrics_cohorts,
    metrics_funnel,
    metrics_readiness,
    metrics_summary,
    percentile,
)
from metrics.services import case_facts_rebuild
from tests.metrics.builder import HOUR, Timeline

pytestmark = pytest.mark.django_db


def _all(dataset) -> Scope:
    return Scope(since=dataset["w1"] - dt.timedelta(days=1), until=timezone.now())


def test_percentile_matches_percentile_cont():
    assert percentile([], 0.5) is None
    assert percentile([7], 0.9) == 7
    assert percentile([7860, 18000, 21600], 0.5) == 18000
    assert percentile([7860, 18000, 21600], 0.9) == pytest.approx(20880)
    assert percentile([1, 2, 3, 4], 0.5) == 2.5


def test_summary_figures(dataset):
    overall = metrics_summary(scope=_all(dataset))["overall"]
    assert overall["cases"] == 7
    assert overall["completed"] == 3
    assert overall["completion_rate"] == 0.4286
    assert overall["time_to_resolution"] == {
        "cases": 3,
        "median_seconds": 18000.0,
        "p90_seconds": 20880.0,
    }
    assert overall["time_to_action"] == {
        "cases": 3,
        "median_seconds": 1200.0,
        "p90_seconds": 1680.0,
    }
    assert overall["agent_handle_time"] == {
        "cases": 1,
        "median_seconds": 900.0,
        "p90_seconds": 900.0,
    }
    assert overall["writeback"] == {
        "finished": 4,
        "first_attempt": 2,
        "eventual": 3,
        "first_attempt_rate": 0.5,
        "eventual_rate": 0.75,
    }
    assert (overall["closed"], overall["deflected"], overall["deflection_rate"]) == (5, 4, 0.8)
    assert (overall["manual_touch"], overall["manual_touch_rate"]) == (1, 0.1429)
    assert overall["exceptions"] == {
        "total": 3,
        "cases": 2,
        "share": 0.2857,
        "by_type": {"identity_failed": 1, "payment_declined": 2},
    }
    # The failed writeback's promise (G, 80.00) is not value: it never reached the core.
    assert overall["value"] == {
        "GBP": {"promised": "100.00", "paid": "50.00", "arranged": "300.00"}
    }
    assert overall["cost"] == {
        "currency": "GBP",
        "messages": {"sms": 5, "email": 1, "whatsapp": 1},
        "message_cost": "0.23",
        "agent_minutes": "15.0",
        "agent_cost": "7.50",
        "total": "7.73",
        "per_resolved_case": "2.58",
        "agent_handled_per_case": "6.00",
        "agent_handled_total": "42.00",
    }


def test_breakdown_by_channel_step_variant_segment(dataset):
    def rows(by):
        result = metrics_summary(scope=_all(dataset), by=by)["breakdown"]
        return {row["group"]: (row["cases"], row["completed"]) for row in result["rows"]}

    # Attribution: the step message before the first open, else the last one sent (C: step 2).
    assert rows("channel") == {"": (1, 0), "email": (1, 1), "sms": (4, 2), "whatsapp": (1, 0)}
    assert rows("step") == {None: (1, 0), 1: (5, 3), 2: (1, 0)}
    assert rows("variant") == {"": (1, 0), "A": (4, 2), "B": (2, 1)}
    assert rows("segment") == {"business": (1, 0), "retail": (5, 2), "vip": (1, 1)}
    sms = next(
        row
        for row in metrics_summary(scope=_all(dataset), by="channel")["breakdown"]["rows"]
        if row["group"] == "sms"
    )
    assert sms["time_to_resolution"]["median_seconds"] == pytest.approx((7860 + 21600) / 2)
    assert sms["exceptions"]["by_type"] == {"identity_failed": 1, "payment_declined": 2}
    assert sms["value"] == {"GBP": {"promised": "100.00", "arranged": "300.00"}}
    assert sms["cost"]["messages"] == {"sms": 5, "email": 0, "whatsapp": 0}


def test_funnel_counts_and_conversion(dataset):
    steps = metrics_funnel(scope=_all(dataset))["overall"]
    assert [(s["stage"], s["cases"]) for s in steps] == [
        ("triggered", 7),
        ("sent", 6),
        ("delivered", 6),
        ("opened", 5),
        ("verified", 3),
        ("option_chosen", 3),
        ("submitted", 3),
        ("written_back", 2),
    ]
    assert [s["conversion"] for s in steps] == [None, 0.8571, 1.0, 0.8333, 0.6, 1.0, 1.0, 0.6667]
    assert steps[-1]["of_triggered"] == 0.2857
    by_channel = metrics_funnel(scope=_all(dataset), by="channel")["breakdown"]["rows"]
    email = next(row for row in by_channel if row["group"] == "email")
    assert [s["cases"] for s in email["steps"]] == [1] * 8


def test_weekly_cohorts(dataset):
    cohorts = metrics_cohorts(scope=_all(dataset))
    assert cohorts == [
        {
            "week_start": dataset["w1"].date().isoformat(),
            "cases": 4,
            "outcomes": {"resolved_in_message": 2, "abandoned": 1, "completed_by_agent": 1},
        },
        {
            "week_start": dataset["w2"].date().isoformat(),
            "cases": 3,
            "outcomes": {"closed_by_rule": 1, "open": 1, "writeback_failed": 1},
        },
    ]


def test_period_and_workflow_filters(dataset):
    week_two = Scope(since=dataset["w2"], until=dataset["w2"] + dt.timedelta(days=7))
    assert metrics_summary(scope=week_two)["overall"]["cases"] == 3
    other = Scope(workflow_key="failed_payment", since=dataset["w1"], until=timezone.now())
    assert metrics_summary(scope=other)["overall"]["cases"] == 0


def test_readiness_shares_split_and_flags(dataset):
    [item] = metrics_readiness(now=timezone.now())
    assert item["workflow"] == "promise_to_pay"
    assert item["cases"] == 7
    assert item["shares"] == {
        "completed_by_rule": 0.2857,
        "completed_with_agent": 0.1429,
        "abandoned": 0.1429,
    }
    assert item["split"] == {
        "completed_by_rule": 0.2857,
        "routed_as_exception": 0.1429,
        "handled_by_agent": 0.1429,
        "other": 0.4285,
    }
    flags = {flag["key"]: (flag["value"], flag["raised"]) for flag in item["flags"]}
    assert flags == {
        "routine_share": (0.2857, False),
        "abandonment_after_first_message": (0.1667, False),
        "agent_corrections": (0.25, True),
        "writeback_success": (0.75, True),
        "manual_touch_not_falling": (0.1429, False),
        "engaged_needing_agent": (0.2, False),  # 1 of 5: the flag is for more than 20%
        "exception_share": (0.2857, False),
    }


def test_no_cases(db, unit_costs):
    case_facts_rebuild()
    scope = Scope(since=timezone.now() - dt.timedelta(days=30), until=timezone.now())
    overall = metrics_summary(scope=scope, by="channel")
    assert overall["overall"]["cases"] == 0
    assert overall["overall"]["completion_rate"] is None
    assert overall["overall"]["time_to_resolution"]["median_seconds"] is None
    assert overall["overall"]["cost"]["per_resolved_case"] is None
    assert overall["overall"]["value"] == {}
    assert overall["breakdown"]["rows"] == []
    assert [s["cases"] for s in metrics_funnel(scope=scope)["overall"]] == [0] * 8
    assert metrics_cohorts(scope=scope) == []
    assert metrics_readiness(now=timezone.now()) == []


def test_all_abandoned(db, workflow, client_and_key, unit_costs):
    client, _ = client_and_key
    start = timezone.now() - dt.timedelta(days=3)
    t = Timeline(workflow=workflow, client=client)
    for _ in range(4):
        case = t.case(start, state="abandoned", outcome="abandoned", closed_at=start + 72 * HOUR)
        t.sent(case, start + HOUR, "sms", 1, "A")
        t.event(case, "abandoned", start + 72 * HOUR, reason="no_response")
    t.save()
    case_facts_rebuild()
    overall = metrics_summary(scope=Scope(since=start, until=timezone.now()))["overall"]
    assert (overall["cases"], overall["completed"], overall["completion_rate"]) == (4, 0, 0.0)
    assert overall["deflection_rate"] == 1.0
    assert overall["writeback"]["eventual_rate"] is None
    assert overall["cost"]["message_cost"] == "0.16"
    assert overall["cost"]["per_resolved_case"] is None
    [item] = metrics_readiness(now=timezone.now())
    flags = {flag["key"]: flag["raised"] for flag in item["flags"]}
    assert flags["abandonment_after_first_message"] is True
    assert flags["writeback_success"] is False  # no writeback finished: nothing to judge
    assert item["split"]["other"] == 1.0


@pytest.mark.parametrize(("touched_now", "raised"), [(2, True), (1, False)])
def test_manual_touch_not_falling_over_two_cycles(
    db, workflow, client_and_key, touched_now, raised
):
    client, _ = client_and_key
    now = timezone.now()
    t = Timeline(workflow=workflow, client=client)
    # Manual touch by cycle, oldest first: 1 of 4, 2 of 4, then 2 of 4 (no fall: pause
    # expansion) or 1 of 4 (it fell: no flag).
    for days_ago, touched in ((75, 1), (45, 2), (15, touched_now)):
        for index in range(4):
            case = t.case(now - dt.timedelta(days=days_ago), state="escalated")
            if index < touched:
                t.event(case, "agent_note", now - dt.timedelta(days=days_ago - 1), actor="agent")
    t.save()
    case_facts_rebuild()
    [item] = metrics_readiness(now=now)
    assert item["manual_touch_by_cycle"] == [0.25, 0.5, touched_now / 4]
    flag = next(f for f in item["flags"] if f["key"] == "manual_touch_not_falling")
    assert flag["raised"] is raised
