"""The sequence engine: timing across time zones and DST, date-anchored steps, quiet hours,
the frequency cap, max touches, the response window and abandonment."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from django.core.exceptions import ValidationError

from cases.models import Case, CaseEvent
from channels.models import CaseOutreach, Message, Sequence
from channels.sequences import sequence_export, sequence_import, sequences_install_shipped
from channels.services import cases_expire, outreach_advance, outreach_begin
from miniapp.services import link_issue, link_record_open
from policies.services import case_prepare
from tests import factories

UTC = dt.UTC


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(UTC)


@pytest.fixture
def shipped(db):
    for key in ("promise_to_pay", "compliance_refresh", "failed_payment"):
        factories.workflow_shipped(key)
    sequences_install_shipped()


def ready_case(triggered_at: dt.datetime, workflow: str = "promise_to_pay", **overrides) -> Case:
    case = factories.case_for(workflow, **overrides)
    Case.objects.filter(pk=case.pk).update(
        triggered_at=triggered_at, expires_at=triggered_at + dt.timedelta(days=7)
    )
    case_prepare(case=case.pk)
    outreach = outreach_begin(case=case.pk)
    assert outreach is not None
    CaseOutreach.objects.filter(pk=outreach.pk).update(next_due_at=triggered_at)
    return Case.objects.get(pk=case.pk)


def advance(case: Case, now: dt.datetime) -> str:
    return outreach_advance(outreach_id=case.outreach.pk, now=now)


def skips(case: Case, reason: str) -> list[CaseEvent]:
    return [
        e
        for e in CaseEvent.objects.filter(case=case, kind="outreach_skipped")
        if e.data["reason"] == reason
    ]


def test_first_step_is_queued_inside_the_contact_window(shipped):
    start = at("2026-11-23T10:00:00+00:00")  # 10:00 in London
    case = ready_case(start)
    assert advance(case, start) == "queued"
    [message] = Message.objects.filter(case=case)
    assert (message.channel, message.step_position, message.status) == ("sms", 1, "queued")
    assert message.variant in ("A", "B")
    case.refresh_from_db()
    assert case.state == "outreach"
    assert case.outreach.touches == 1


def test_a_repeated_advance_queues_nothing_twice(shipped):
    start = at("2026-11-23T10:00:00+00:00")
    case = ready_case(start)
    advance(case, start)
    # The job delivered again: nothing new is due.
    assert advance(case, start) == "not_due"
    assert Message.objects.filter(case=case).count() == 1


def test_a_step_due_in_quiet_hours_is_deferred_to_the_next_morning(shipped):
    late = at("2026-11-23T22:30:00+00:00")  # 22:30 in London
    case = ready_case(late)
    assert advance(case, late) == "deferred"
    assert not Message.objects.filter(case=case).exists()
    [event] = skips(case, "quiet_hours")
    assert event.data["deferred_until"] == "2026-11-24T08:00:00+00:00"
    case.outreach.refresh_from_db()
    assert case.outreach.next_due_at == at("2026-11-24T08:00:00+00:00")
    assert advance(case, at("2026-11-24T08:00:00+00:00")) == "queued"


def test_quiet_hours_follow_the_customers_zone_across_spring_forward(shipped):
    # New York springs forward at 02:00 on 8 March 2026: 08:00 local is 12:00 UTC that
    # morning, not 13:00 as the day before.
    early = at("2026-03-08T06:30:00+00:00")  # 01:30 EST
    case = ready_case(early, customer={"timezone": "America/New_York", "phone": "+12025550143"})
    assert advance(case, early) == "deferred"
    [event] = skips(case, "quiet_hours")
    assert event.data["deferred_until"] == "2026-03-08T12:00:00+00:00"
    assert advance(case, at("2026-03-08T11:59:00+00:00")) == "not_due"
    assert advance(case, at("2026-03-08T12:00:00+00:00")) == "queued"


def test_quiet_hours_across_fall_back(shipped):
    # London falls back on 25 October 2026: 08:00 local is 07:00 UTC on the 24th, 08:00 on the 25th.
    night = at("2026-10-24T21:30:00+00:00")  # 22:30 BST
    case = ready_case(night)
    advance(case, night)
    [event] = skips(case, "quiet_hours")
    assert event.data["deferred_until"] == "2026-10-25T08:00:00+00:00"


def test_a_step_relative_to_a_due_date_waits_for_it(shipped):
    start = at("2026-11-02T09:00:00+00:00")
    case = ready_case(
        start,
        workflow="compliance_refresh",
        data={"refresh_due_date": "2026-12-01"},
        customer={"timezone": "Europe/Madrid"},
    )
    assert advance(case, start) == "queued"  # step 1: at the trigger
    # Step 2: 7 days before the due date at 10:00 Madrid time (CET, UTC+1).
    assert advance(case, at("2026-11-20T00:00:00+00:00")) == "not_due"
    case.outreach.refresh_from_db()
    assert case.outreach.next_due_at == at("2026-11-24T09:00:00+00:00")
    assert advance(case, at("2026-11-24T09:00:00+00:00")) == "queued"
    assert list(
        Message.objects.filter(case=case)
        .order_by("step_position")
        .values_list("step_position", flat=True)
    ) == [1, 2]


def test_a_date_step_already_past_is_sent_at_once(shipped):
    start = at("2026-11-30T12:00:00+00:00")
    case = ready_case(start, workflow="compliance_refresh", data={"refresh_due_date": "2026-12-01"})
    advance(case, start)
    # Step 2 (7 days before) is already in the past, so it follows right after.
    assert advance(case, start + dt.timedelta(minutes=1)) == "queued"


def test_three_touches_then_the_response_window_then_no_response(shipped):
    start = at("2026-11-23T10:00:00+00:00")
    case = ready_case(start)
    moments = [start, start + dt.timedelta(days=2), start + dt.timedelta(days=4)]
    for moment in moments:
        assert advance(case, moment) == "queued"
    assert advance(case, moments[-1] + dt.timedelta(minutes=1)) == "waiting"
    outreach = CaseOutreach.objects.get(case=case)
    assert outreach.status == "awaiting_response"
    assert outreach.next_due_at == moments[-1] + dt.timedelta(hours=72)
    assert advance(case, moments[-1] + dt.timedelta(hours=71)) == "not_due"
    assert advance(case, moments[-1] + dt.timedelta(hours=72)) == "finished"
    case.refresh_from_db()
    assert case.state == "escalated"  # promise_to_pay routes no_response to an agent
    assert case.escalation_reason == "no_response"
    assert Message.objects.filter(case=case).count() == 3


def test_no_response_route_can_close(shipped):
    start = at("2026-11-23T10:00:00+00:00")
    case = ready_case(start, workflow="failed_payment")
    for days in (0, 1, 4):  # at once, a day later, three days after that
        assert advance(case, start + dt.timedelta(days=days)) == "queued"
    assert advance(case, start + dt.timedelta(days=4, minutes=1)) == "waiting"
    assert advance(case, start + dt.timedelta(days=7)) == "finished"
    case.refresh_from_db()
    assert case.state == "closed_by_rule"  # failed_payment: the biller's own dunning continues


def test_an_engaged_case_is_abandoned_when_its_link_expires(shipped):
    start = at("2026-11-23T10:00:00+00:00")
    case = ready_case(start)
    advance(case, start)
    link_record_open(link=link_issue(case=case).link)
    assert cases_expire(now=start + dt.timedelta(days=7, minutes=1)) == 1
    case.refresh_from_db()
    assert case.state == "abandoned"
    event = CaseEvent.objects.get(case=case, kind="abandoned")
    assert event.data == {"reason": "link_expired", "last_step": "opened"}


def test_the_frequency_cap_counts_every_workflow(shipped, settings):
    settings.OUTREACH_FREQUENCY_CAP = 2
    start = at("2026-11-23T10:00:00+00:00")
    client, _ = factories.api_client()
    customer = {"external_id": "cust-capped"}
    first = ready_case(start, client=client, customer=customer)
    second = ready_case(start, workflow="failed_payment", client=client, customer=customer)
    third = ready_case(start, workflow="compliance_refresh", client=client, customer=customer)
    assert advance(first, start) == "queued"
    assert advance(second, start + dt.timedelta(hours=1)) == "queued"
    assert advance(third, start + dt.timedelta(hours=2)) == "deferred"
    [event] = skips(third, "frequency_cap")
    # The oldest of the two leaves the 7-day window first.
    assert event.data["deferred_until"].startswith("2026-11-30T10:00")


def test_stop_mid_sequence_moves_to_the_next_permitted_channel(shipped):
    start = at("2026-11-23T10:00:00+00:00")
    case = ready_case(start)
    advance(case, start)
    customer = case.customer
    customer.consent["sms"] = {
        "value": False,
        "timestamp": start.isoformat(),
        "source": "sms_reply_stop",
    }
    customer.save(update_fields=["consent"])
    assert advance(case, start + dt.timedelta(days=2)) == "queued"
    second = Message.objects.get(case=case, step_position=2)
    assert second.channel == "email"
    fallback = CaseEvent.objects.get(case=case, kind="outreach_channel_fallback")
    assert fallback.data["refused"]["sms"] == "opted_out"


def test_without_any_permitted_channel_a_step_is_skipped_with_the_reason(shipped):
    start = at("2026-11-23T10:00:00+00:00")
    case = ready_case(start, customer={"consent": {"sms": False, "email": False}})
    advance(case, start)
    assert not Message.objects.filter(case=case).exists()
    reasons = [
        e.data["reason"] for e in CaseEvent.objects.filter(case=case, kind="outreach_skipped")
    ]
    assert reasons and set(reasons) == {"no_permitted_channel"}


def test_variants_are_stable_per_case_and_both_are_used(shipped):
    start = at("2026-11-23T10:00:00+00:00")
    labels = []
    for _ in range(24):
        case = ready_case(start)
        advance(case, start)
        labels.append(Message.objects.get(case=case).variant)
    assert set(labels) == {"A", "B"}


def test_send_rate_spaces_messages(shipped):
    Sequence.objects.filter(workflow_key="promise_to_pay").update(send_rate_per_minute=60)
    start = at("2026-11-23T10:00:00+00:00")
    cases = [ready_case(start) for _ in range(3)]
    for case in cases:
        advance(case, start)
    slots = sorted(Message.objects.values_list("not_before", flat=True))
    assert [(b - a).total_seconds() for a, b in itertools.pairwise(slots)] == [1.0, 1.0]


def test_a_workflow_without_a_sequence_goes_to_an_agent(db):
    factories.workflow_shipped("address_update")
    case = factories.case_for("address_update")
    case_prepare(case=case.pk)
    assert outreach_begin(case=case.pk) is None
    case.refresh_from_db()
    assert (case.state, case.escalation_reason) == ("escalated", "no_outreach_sequence")


def test_sequence_files_round_trip_and_refuse_bad_input(shipped):
    spec = sequence_export(workflow_key="promise_to_pay")
    assert sequence_import(spec=spec).steps.count() == 3
    assert sequence_export(workflow_key="promise_to_pay") == spec
    broken = {
        **spec,
        "steps": [
            {
                "channel": "sms",
                "anchor": "date_field",
                "anchor_field": "days_past_due",
                "variants": [{"template": "first_reminder", "weight": 60}],
            }
        ],
        "templates": [{"name": "first_reminder", "channel": "sms", "body": "No link here"}],
    }
    with pytest.raises(ValidationError) as caught:
        sequence_import(spec=broken)
    text = " ".join(caught.value.messages)
    assert "weights must add up to 100" in text
    assert "'days_past_due' is not a date field" in text
    assert "exactly one primary action" in text
    assert sequence_export(workflow_key="promise_to_pay") == spec  # nothing written


def test_a_stop_reply_mid_sequence_halts_sms_at_once(shipped):
    from channels.inbound import inbound_receive

    start = at("2026-11-23T10:00:00+00:00")
    case = ready_case(start, customer={"consent": {"sms": True}})
    advance(case, start)
    result = inbound_receive(
        channel="sms",
        provider="twilio",
        provider_message_id="SM-stop-1",
        sender=case.customer.phone,
        body=" Stop. ",
    )
    assert result.kind == "opt_out"
    # The queued first message is cancelled, and no later step uses SMS.
    assert Message.objects.get(case=case).status == "cancelled"
    assert advance(case, start + dt.timedelta(days=2)) in ("skipped", "waiting", "not_due")
    assert not Message.objects.filter(case=case, step_position=2).exists()
    reasons = {
        e.data["reason"] for e in CaseEvent.objects.filter(case=case, kind="outreach_skipped")
    }
    assert "opted_out" in reasons or "no_permitted_channel" in reasons
