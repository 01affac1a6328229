"""Agents' services: tasks follow the case, callbacks land in the customer's window, and
every agent action leaves its events, its agent time and its audit entry, or nothing."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from agents import services
from agents.models import OfferProposal, Task, TaskKind
from agents.services import ActionRefused
from agents.sla import sla_hours
from cases.models import Actor, Case, CaseEvent, CaseOutcome
from cases.services import case_transition
from channels.models import InboundMessage, Message
from metrics.services import fact_build
from privacy.crypto import text_open
from staff.models import AuditEntry
from tests import factories
from tests.agents.conftest import escalated, staff_with
from writeback.models import Outcome

UTC = dt.UTC


def kinds(case) -> list[str]:
    return list(CaseEvent.objects.filter(case=case).values_list("kind", flat=True))


def last_event(case, kind: str) -> CaseEvent:
    return CaseEvent.objects.filter(case=case, kind=kind).order_by("-created_at", "-id").first()


# --- the task lifecycle -------------------------------------------------------------------


def test_escalation_opens_one_task_with_its_sla(escalated_case):
    [task] = Task.objects.filter(case=escalated_case)
    assert (task.kind, task.status, task.reason, task.priority) == (
        "exception",
        "open",
        "customer_reply",
        50,
    )
    assert task.due_at == task.created_at + dt.timedelta(hours=24)  # 40 ≤ 50 < 70 → 24 h


@pytest.mark.parametrize(("priority", "hours"), [(100, 4), (70, 4), (69, 24), (40, 24), (0, 72)])
def test_sla_hours_by_priority(settings, priority, hours):
    settings.AGENT_SLA_HOURS = "70:4,40:24,0:72"
    assert sla_hours(priority) == hours


def test_a_second_escalation_updates_the_open_task(workflow):
    case = factories.case_in_state("writeback_failed")
    [task] = Task.objects.filter(case=case, status="open")
    assert (task.reason, task.priority) == ("writeback_failed", 60)
    case_transition(
        case=case, transition="escalate", data={"reason": "system_unavailable", "priority": 80}
    )
    [again] = Task.objects.filter(case=case)
    assert again.pk == task.pk
    assert (again.reason, again.priority, again.status) == ("system_unavailable", 80, "open")
    assert again.due_at == again.created_at + dt.timedelta(hours=4)


def test_the_task_is_done_when_the_case_leaves_the_queue(escalated_case, agent):
    services.case_close(case=escalated_case, user=agent, reason="Paid at the branch")
    task = Task.objects.get(case=escalated_case)
    assert (task.status, task.done_reason) == ("done", "close_by_agent")
    assert task.done_at is not None


def test_transitions_outside_the_queue_touch_no_task(workflow):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    case = factories.case()
    with CaptureQueriesContext(connection) as queries:
        case_transition(case=case, transition="start_outreach")
    assert not [q for q in queries.captured_queries if "agents_task" in q["sql"]]
    assert not Task.objects.exists()


def test_backfill_opens_tasks_for_cases_already_waiting(workflow):
    import importlib

    from django.apps import apps

    backfill = importlib.import_module("agents.migrations.0003_backfill_tasks")
    waiting = escalated(reason="identity_failed", priority=75)
    failed = factories.case_in_state("writeback_failed")
    factories.case_in_state("verified")
    Task.objects.all().delete()  # as before the agents app existed
    backfill.forwards(apps, None)
    backfill.forwards(apps, None)  # idempotent
    tasks = {t.case_id: t for t in Task.objects.all()}
    assert set(tasks) == {waiting.pk, failed.pk}
    assert (tasks[waiting.pk].reason, tasks[waiting.pk].priority) == ("identity_failed", 75)
    escalated_at = last_event(waiting, "escalated").created_at
    assert tasks[waiting.pk].created_at == escalated_at
    assert tasks[waiting.pk].due_at == escalated_at + dt.timedelta(hours=4)
    assert tasks[failed.pk].reason == "writeback_failed"


# --- callbacks ------------------------------------------------------------------------------


def test_a_callback_request_is_due_in_the_customers_own_window(
    core_target, django_capture_on_commit_callbacks
):
    from policies.services import case_prepare
    from writeback.services import outcome_submit

    case = factories.case(customer={"timezone": "America/New_York"})
    case_prepare(case=case)
    for transition in ("start_outreach", "engage", "verify"):
        case = case_transition(case=case, transition=transition)
    day = (timezone.localdate() + dt.timedelta(days=2)).isoformat()
    with django_capture_on_commit_callbacks(execute=True):
        outcome_submit(
            case=case, action="request_callback", values={"date": day, "window": "09:00-12:00"}
        )
    task = Task.objects.get(case=case, kind=TaskKind.CALLBACK)
    zone = "America/New_York"
    from zoneinfo import ZoneInfo

    start = dt.datetime.fromisoformat(f"{day}T09:00").replace(tzinfo=ZoneInfo(zone))
    assert task.due_at == start.astimezone(UTC)
    assert task.window_end == (start + dt.timedelta(hours=3)).astimezone(UTC)
    assert task.status == "open"
    case.refresh_from_db()
    assert case.state == "resolved"  # the note reached the core; the call is still to make
    assert not task.is_overdue()
    assert task.is_overdue(task.window_end + dt.timedelta(minutes=1))


def test_callback_done_records_the_call(workflow, agent):
    case = factories.case_in_state("resolved")
    task = services.task_open_callback(
        case=Case.objects.select_related("customer").get(pk=case.pk),
        values={"date": "2026-12-01", "window": "12:00-17:00"},
    )
    with pytest.raises(ActionRefused, match="what came of the call"):
        services.task_callback_done(task=task, user=agent, note=" ")
    done = services.task_callback_done(task=task, user=agent, note="Agreed a plan by phone")
    assert (done.status, done.done_reason, done.assignee) == ("done", "callback_completed", agent)
    assert done.first_action_at is not None
    assert kinds(case)[-2:] == ["agent_claimed", "callback_completed"]
    # Sealed (encrypted) in the timeline; the agents' page opens it.
    note = last_event(case, "callback_completed").data["note"]
    assert note.startswith("encrypted:") and text_open(note) == "Agreed a plan by phone"


# --- claim, assign, unassign ---------------------------------------------------------------


def test_claim_assign_unassign(escalated_case, agent, other_agent):
    task = Task.objects.get(case=escalated_case)
    claimed = services.task_claim(task=task, user=agent)
    assert (claimed.assignee, claimed.first_action_at) == (agent, None)
    assert claimed.claimed_at is not None
    with pytest.raises(ActionRefused, match="ada-agent holds this task"):
        services.task_claim(task=task, user=other_agent)
    services.task_assign(task=task, user=agent, assignee=other_agent)
    assert Task.objects.get(pk=task.pk).assignee == other_agent
    services.task_unassign(task=task, user=other_agent)
    assert Task.objects.get(pk=task.pk).assignee is None
    events = CaseEvent.objects.filter(case=escalated_case, actor=Actor.AGENT)
    assert [(e.kind, e.data["user"]) for e in events] == [
        ("agent_claimed", "ada-agent"),
        ("agent_assigned", "ada-agent"),
        ("agent_unassigned", "bob-agent"),
    ]
    assert events[1].data["assignee"] == "bob-agent"
    audit = AuditEntry.objects.filter(target_id=str(escalated_case.pk)).order_by("pk")
    assert [a.action for a in audit] == ["agent_claim", "agent_assign", "agent_unassign"]


def test_only_queue_workers_may_be_assigned_or_act(escalated_case, agent):
    outsider = factories.user("no-queue")
    task = Task.objects.get(case=escalated_case)
    with pytest.raises(ActionRefused, match="cannot work the queue"):
        services.task_assign(task=task, user=agent, assignee=outsider)
    with pytest.raises(PermissionDenied):
        services.task_claim(task=task, user=outsider)
    with pytest.raises(PermissionDenied):
        services.case_note_add(case=escalated_case, user=outsider, text="hello")
    assert not CaseEvent.objects.filter(case=escalated_case, actor=Actor.AGENT).exists()


# --- notes, closing, agent time --------------------------------------------------------------


def test_a_note_claims_an_unheld_task_and_stamps_the_first_action(escalated_case, agent):
    services.case_note_add(case=escalated_case, user=agent, text="Customer is abroad")
    task = Task.objects.get(case=escalated_case)
    assert task.assignee == agent
    assert task.first_action_at is not None and task.claimed_at is not None
    first = task.first_action_at
    services.case_note_add(case=escalated_case, user=agent, text="Second note")
    assert Task.objects.get(pk=task.pk).first_action_at == first  # set once
    note = last_event(escalated_case, "agent_note")
    assert (note.actor, text_open(note.data["text"])) == ("agent", "Second note")
    assert note.data["text"].startswith("encrypted:")  # sealed in the timeline


def test_close_needs_a_reason_and_feeds_handle_time(escalated_case, agent):
    with pytest.raises(ActionRefused, match="reason"):
        services.case_close(case=escalated_case, user=agent, reason="  ")
    services.task_claim(task=Task.objects.get(case=escalated_case), user=agent)
    closed = services.case_close(case=escalated_case, user=agent, reason="Settled by phone")
    assert (closed.state, closed.outcome) == ("closed_by_agent", CaseOutcome.ESCALATED_WITH_CONTEXT)
    event = last_event(escalated_case, "closed_by_agent")
    # The agent's words are sealed in the timeline, as notes are, and open to staff.
    assert event.data["user"] == "ada-agent"
    assert event.data["reason"].startswith("encrypted:")
    assert text_open(event.data["reason"]) == "Settled by phone"
    entry = AuditEntry.objects.filter(action="agent_close").latest("id")
    assert text_open(entry.detail["reason"]) == "Settled by phone"
    task = Task.objects.get(case=escalated_case)
    assert task.claim_to_action is not None and task.handle_time() is not None
    # metrics read the same story from the timeline: claim → close is the handle time.
    events = CaseEvent.objects.filter(case=escalated_case).values_list(
        "kind", "actor", "data", "created_at"
    )
    case_row = {
        "id": closed.pk,
        "api_client_id": closed.api_client_id,
        "workflow__key": "promise_to_pay",
        "workflow__version": 1,
        "segment": "",
        "state": closed.state,
        "outcome": closed.outcome,
        "triggered_at": closed.triggered_at,
        "closed_at": closed.closed_at,
        "currency": "GBP",
    }
    fact, _ = fact_build(case_row, list(events), None)
    assert fact.agent_touched is True
    assert fact.handle_seconds is not None and fact.handle_seconds >= 0


def test_a_closed_case_cannot_be_closed_again(escalated_case, agent):
    services.case_close(case=escalated_case, user=agent, reason="Done")
    with pytest.raises(ActionRefused, match="cannot be closed"):
        services.case_close(case=escalated_case, user=agent, reason="Again")


# --- complete manually, correct, retry -------------------------------------------------------


def test_complete_manually_goes_through_the_outbox(
    core_target, escalated_case, agent, django_capture_on_commit_callbacks
):
    day = (timezone.localdate() + dt.timedelta(days=5)).isoformat()
    with django_capture_on_commit_callbacks(execute=True):
        outcome = services.case_complete(
            case=escalated_case,
            user=agent,
            action="promise_to_pay",
            values={"amount": "150.00", "date": day},
            reason="Agreed on the phone",
        )
    case = Case.objects.get(pk=escalated_case.pk)
    assert (case.state, case.outcome) == ("resolved", CaseOutcome.COMPLETED_BY_AGENT)
    assert (outcome.actor, Outcome.objects.get(pk=outcome.pk).state) == ("agent", "confirmed")
    completed = last_event(case, "completed_by_agent")
    assert completed.actor == "agent"
    assert (completed.data["user"], text_open(completed.data["reason"])) == (
        "ada-agent",
        "Agreed on the phone",
    )
    assert "agent_correction" not in kinds(case)  # the customer had submitted nothing
    assert Task.objects.get(case=case).done_reason == "complete_by_agent"


def test_changing_what_the_customer_submitted_is_a_correction(
    core_target, agent, demo_core, django_capture_on_commit_callbacks
):
    from policies.services import case_prepare
    from writeback.services import outcome_submit

    case = factories.case()
    case_prepare(case=case)
    for transition in ("start_outreach", "engage", "verify"):
        case = case_transition(case=case, transition=transition)
    day = (timezone.localdate() + dt.timedelta(days=3)).isoformat()
    core_target.max_attempts = 1
    core_target.save()
    demo_core.faults(down=True)  # the one attempt fails: writeback fails
    with django_capture_on_commit_callbacks(execute=True):
        outcome_submit(case=case, action="promise_to_pay", values={"amount": "100.00", "date": day})
    case.refresh_from_db()
    assert case.state == "escalated"  # writeback_failed, then the exception route
    demo_core.faults(down=False)
    with django_capture_on_commit_callbacks(execute=True):
        services.case_complete(
            case=case,
            user=agent,
            action="promise_to_pay",
            values={"amount": "120.00", "date": day},
            reason="Customer called to raise it",
        )
    correction = last_event(case, "agent_correction")
    assert correction.actor == "agent"
    assert correction.data["changes"] == {"amount": ["100.00", "120.00"]}
    assert text_open(correction.data["reason"]) == "Customer called to raise it"
    case.refresh_from_db()
    assert case.state == "resolved"


def test_retry_writeback(core_target, agent, demo_core, django_capture_on_commit_callbacks):
    from writeback.services import outcome_submit

    factories.workflow_variant(  # the route retries, so the case stays writeback_failed
        "promise_to_pay",
        exception_routes={
            **factories.workflow_spec("promise_to_pay")["exception_routes"],
            "system_unavailable": {"outcome": "retry", "max_retries": 3},
        },
    )
    case = factories.case_in_state("verified")
    core_target.max_attempts = 1
    core_target.save()
    demo_core.faults(down=True)
    with django_capture_on_commit_callbacks(execute=True):
        outcome_submit(
            case=case, action="promise_to_pay", values={"amount": "120.00", "date": "2026-12-01"}
        )
    case.refresh_from_db()
    assert case.state == "writeback_failed"
    assert Task.objects.get(case=case, status="open").reason == "writeback_failed"
    demo_core.faults(down=False)
    with django_capture_on_commit_callbacks(execute=True):
        services.case_retry_writeback(case=case, user=agent, reason="Core fixed")
    case.refresh_from_db()
    assert case.state == "resolved"
    redrive = CaseEvent.objects.filter(case=case, data__redrive=True).get()
    assert (redrive.actor, redrive.data["user"], text_open(redrive.data["reason"])) == (
        "agent",
        "ada-agent",
        "Core fixed",
    )


def test_retry_without_a_failed_writeback_is_refused(escalated_case, agent):
    with pytest.raises(ActionRefused, match="no failed writeback"):
        services.case_retry_writeback(case=escalated_case, user=agent)
    assert Task.objects.get(case=escalated_case).first_action_at is None  # nothing half-way


# --- alternative offers ----------------------------------------------------------------------


def test_an_offer_inside_policy_is_sent_at_once(
    escalated_case, agent, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        proposal = services.offer_propose(case=escalated_case, user=agent, action="dispute")
    assert (proposal.status, proposal.out_of_policy) == ("sent", False)
    case = Case.objects.get(pk=escalated_case.pk)
    assert case.state == "outreach"
    assert case.offer["actions"][0]["action"] == "dispute"
    assert case.offer["actions"][0]["recommended"] is True
    again = last_event(case, "offered_again")
    assert (again.actor, again.data["user"], again.data["out_of_policy"]) == (
        "agent",
        "ada-agent",
        False,
    )
    assert again.data["before"][0]["action"] == "promise_to_pay"
    assert again.data["after"][0]["action"] == "dispute"
    sent = last_event(case, "offer_link_sent")
    message = Message.objects.get(key=sent.data["message"])
    assert (message.purpose, message.status) == ("link", "sent")
    assert "another option" in message.body_masked
    assert Task.objects.get(case=case).done_reason == "offer_again"


def test_an_offer_outside_policy_needs_a_reason(escalated_case, agent, settings):
    settings.AGENT_OFFER_APPROVAL_LIMIT = Decimal("250.00")
    with pytest.raises(ActionRefused, match="outside the policy") as refused:
        services.offer_propose(
            case=escalated_case, user=agent, action="promise_to_pay", amount=Decimal("200.00")
        )
    assert refused.value.field == "reason"
    assert not OfferProposal.objects.exists()
    assert Case.objects.get(pk=escalated_case.pk).state == "escalated"


def test_an_offer_outside_policy_below_the_limit_goes_with_its_reason(
    escalated_case, agent, settings, django_capture_on_commit_callbacks
):
    settings.AGENT_OFFER_APPROVAL_LIMIT = Decimal("250.00")
    with django_capture_on_commit_callbacks(execute=True):
        proposal = services.offer_propose(
            case=escalated_case,
            user=agent,
            action="promise_to_pay",
            amount=Decimal("200.00"),
            reason="Hardship: half now",
        )
    assert (proposal.status, proposal.out_of_policy, proposal.amount) == (
        "sent",
        True,
        Decimal("200.00"),
    )
    case = Case.objects.get(pk=escalated_case.pk)
    assert case.offer["actions"][0]["bounds"]["max_amount"] == "200.00"
    assert text_open(last_event(case, "offered_again").data["reason"]) == "Hardship: half now"


def test_above_the_limit_an_approver_decides(
    escalated_case, agent, approver, settings, django_capture_on_commit_callbacks
):
    settings.AGENT_OFFER_APPROVAL_LIMIT = Decimal("250.00")
    proposal = services.offer_propose(
        case=escalated_case,
        user=agent,
        action="promise_to_pay",
        amount=Decimal("400.00"),
        reason="Longer date agreed",
    )
    assert proposal.status == "pending"
    assert Case.objects.get(pk=escalated_case.pk).state == "escalated"
    assert last_event(escalated_case, "offer_proposed").data["amount"] == "400.00"
    assert not Message.objects.filter(purpose="link").exists()
    with pytest.raises(ActionRefused, match="already waiting"):
        services.offer_propose(case=escalated_case, user=agent, action="dispute")
    with pytest.raises(PermissionDenied):
        services.offer_approve(proposal=proposal, user=agent)
    self_approver = staff_with("work_queue", "approve_offer", username="both-hats")
    mine = OfferProposal.objects.filter(pk=proposal.pk)
    mine.update(proposed_by=self_approver)
    with pytest.raises(ActionRefused, match="another approver"):
        services.offer_approve(proposal=proposal, user=self_approver)
    mine.update(proposed_by=agent)
    with django_capture_on_commit_callbacks(execute=True):
        approved = services.offer_approve(proposal=proposal, user=approver, note="OK")
    assert (approved.status, approved.decided_by) == ("sent", approver)
    case = Case.objects.get(pk=escalated_case.pk)
    assert case.state == "outreach"
    again = last_event(case, "offered_again")
    assert (again.data["user"], again.data["approved_by"]) == ("ada-agent", "rita-risk")
    assert Message.objects.filter(case=case, purpose="link").count() == 1


def test_decline_needs_a_note(escalated_case, agent, approver, settings):
    settings.AGENT_OFFER_APPROVAL_LIMIT = Decimal("10.00")
    proposal = services.offer_propose(
        case=escalated_case,
        user=agent,
        action="promise_to_pay",
        amount=Decimal("300.00"),
        reason="Asked for more time",
    )
    with pytest.raises(ActionRefused, match="why"):
        services.offer_decline(proposal=proposal, user=approver, note="")
    declined = services.offer_decline(proposal=proposal, user=approver, note="Too generous")
    assert declined.status == "declined"
    assert Case.objects.get(pk=escalated_case.pk).state == "escalated"
    assert text_open(last_event(escalated_case, "offer_declined").data["note"]) == "Too generous"
    assert not Message.objects.filter(purpose="link").exists()


def test_an_action_the_workflow_does_not_define_is_refused(escalated_case, agent):
    with pytest.raises(ActionRefused, match="does not define pay_now") as refused:
        services.offer_propose(
            case=escalated_case, user=agent, action="pay_now", amount=Decimal("5"), reason="x"
        )
    assert refused.value.field == "action"


def test_no_link_without_a_permitted_channel(workflow, agent):
    case = escalated(customer={"consent": {"sms": False, "email": False}})
    with pytest.raises(ActionRefused, match="cannot be sent a link"):
        services.offer_propose(case=case, user=agent, action="dispute")
    assert Case.objects.get(pk=case.pk).state == "escalated"


# --- replies ---------------------------------------------------------------------------------


def test_reply_by_sms(escalated_case, agent):
    message = services.case_reply(
        case=escalated_case, user=agent, channel="sms", text="We have paused reminders."
    )
    assert (message.channel, message.purpose, message.status) == ("sms", "reply", "sent")
    assert message.body_masked.startswith("We have paused reminders.")
    reply = last_event(escalated_case, "agent_reply")
    assert (reply.actor, reply.data["user"], reply.data["message"]) == (
        "agent",
        "ada-agent",
        message.key,
    )


def test_whatsapp_only_inside_its_24_hour_window(workflow, agent):
    case = escalated(customer={"whatsapp": "+447911123456", "consent": {"whatsapp": True}})
    with pytest.raises(ActionRefused, match="within 24 hours") as refused:
        services.case_reply(case=case, user=agent, channel="whatsapp", text="Hello")
    assert refused.value.field == "channel"
    assert not Message.objects.filter(purpose="reply").exists()
    InboundMessage.objects.create(
        channel="whatsapp",
        provider="outbox",
        provider_message_id="wa-1",
        sender="+447911123456",
        customer=case.customer,
        body="Can you help?",
        kind="free_text",
        received_at=timezone.now() - dt.timedelta(hours=23),
    )
    message = services.case_reply(case=case, user=agent, channel="whatsapp", text="Yes")
    assert message.channel == "whatsapp"


def test_no_reply_after_stop(workflow, agent):
    from channels.consent import consent_revoke

    case = escalated()
    consent_revoke(customer=case.customer, channel="sms", source="sms_reply_stop", detail="")
    with pytest.raises(ActionRefused, match="opted out"):
        services.case_reply(case=case, user=agent, channel="sms", text="Hello")
    assert not Message.objects.filter(purpose="reply").exists()
    assert "agent_reply" not in kinds(case)
