"""The case state machine: every legal transition writes exactly one CaseEvent with the state,
illegal ones write nothing, and neither the state nor the timeline can be edited by hand."""

from __future__ import annotations

import pytest
from django.db import transaction
from django_fsm import ConcurrentTransition

from cases.models import Actor, Case, CaseEvent, CaseOutcome
from cases.services import IllegalTransition, case_record_event, case_transition
from tests import factories

pytestmark = pytest.mark.django_db

OPEN = ("received", "outreach", "engaged", "verified")

# (transition, source, target, event kind, actor the transition records by default)
LEGAL = [
    ("start_outreach", "received", "outreach", "outreach_started", Actor.SYSTEM),
    ("engage", "received", "engaged", "engaged", Actor.CUSTOMER),
    ("engage", "outreach", "engaged", "engaged", Actor.CUSTOMER),
    ("verify", "engaged", "verified", "verified", Actor.CUSTOMER),
    ("submit_action", "engaged", "action_submitted", "action_submitted", Actor.CUSTOMER),
    ("submit_action", "verified", "action_submitted", "action_submitted", Actor.CUSTOMER),
    ("complete_by_agent", "escalated", "action_submitted", "completed_by_agent", Actor.AGENT),
    ("confirm_writeback", "action_submitted", "resolved", "writeback_confirmed", Actor.SYSTEM),
    ("fail_writeback", "action_submitted", "writeback_failed", "writeback_failed", Actor.SYSTEM),
    ("retry_writeback", "writeback_failed", "action_submitted", "writeback_retried", Actor.AGENT),
    *[
        ("escalate", source, "escalated", "escalated", Actor.SYSTEM)
        for source in (*OPEN, "writeback_failed")
    ],
    *[("abandon", source, "abandoned", "abandoned", Actor.SYSTEM) for source in OPEN],
    *[
        ("close_by_rule", source, "closed_by_rule", "closed_by_rule", Actor.SYSTEM)
        for source in OPEN
    ],
    *[
        ("cancel", source, "cancelled", "cancelled", Actor.API)
        for source in (*OPEN, "escalated", "writeback_failed")
    ],
    ("close_by_agent", "escalated", "closed_by_agent", "closed_by_agent", Actor.AGENT),
    ("close_by_agent", "writeback_failed", "closed_by_agent", "closed_by_agent", Actor.AGENT),
]


def _fresh(case: Case) -> Case:
    return Case.objects.get(pk=case.pk)


@pytest.mark.parametrize(
    ("transition", "source", "target", "kind", "actor"),
    LEGAL,
    ids=[f"{row[0]}-from-{row[1]}" for row in LEGAL],
)
def test_legal_transition_writes_one_event(workflow, transition, source, target, kind, actor):
    case = factories.case_in_state(source)
    assert case.state == source
    before = list(CaseEvent.objects.filter(case=case).values_list("pk", flat=True))

    returned = case_transition(case=case, transition=transition, data={"note": "why"})

    stored = _fresh(case)
    assert returned.state == stored.state == target
    new_events = list(CaseEvent.objects.filter(case=case).exclude(pk__in=before))
    assert len(new_events) == 1
    [event] = new_events
    assert (event.kind, event.actor, event.data) == (kind, actor, {"note": "why"})


@pytest.mark.parametrize("transition", ["escalate", "abandon", "cancel"])
def test_transition_records_the_given_actor(workflow, transition):
    case = factories.case()
    case_transition(case=case, transition=transition, actor=Actor.AGENT)
    assert CaseEvent.objects.filter(case=case).last().actor == Actor.AGENT


def test_a_failing_event_write_rolls_the_state_back(workflow):
    """The state and its event commit together: an event that cannot be stored (here, data
    that is not JSON) leaves the case where it was."""
    case = factories.case()
    events_before = CaseEvent.objects.filter(case=case).count()
    with pytest.raises(TypeError):
        case_transition(case=case, transition="start_outreach", data={"bad": object()})
    assert _fresh(case).state == "received"
    assert CaseEvent.objects.filter(case=case).count() == events_before


def test_state_and_event_share_the_callers_transaction(workflow):
    case = factories.case()
    events_before = CaseEvent.objects.filter(case=case).count()

    class Undo(Exception):
        pass

    with pytest.raises(Undo), transaction.atomic():
        case_transition(case=case, transition="start_outreach")
        assert _fresh(case).state == "outreach"
        raise Undo
    assert _fresh(case).state == "received"
    assert CaseEvent.objects.filter(case=case).count() == events_before


# --- milestones and outcomes ------------------------------------------------------------------


def test_happy_path_sets_milestones_in_order_and_resolves_in_message(workflow):
    case = factories.case()
    assert case.outcome == ""
    assert case.opened_at is case.verified_at is case.submitted_at is None

    for transition in ("start_outreach", "engage", "verify", "submit_action"):
        case = case_transition(case=case, transition=transition)
    case = case_transition(case=case, transition="confirm_writeback")

    stored = _fresh(case)
    assert stored.state == "resolved"
    assert stored.outcome == CaseOutcome.RESOLVED_IN_MESSAGE
    assert stored.is_terminal
    stamps = [
        stored.triggered_at,
        stored.opened_at,
        stored.verified_at,
        stored.submitted_at,
        stored.written_back_at,
    ]
    assert None not in stamps
    assert stamps == sorted(stamps)
    assert stored.closed_at >= stored.written_back_at
    kinds = list(CaseEvent.objects.filter(case=case).values_list("kind", flat=True))
    assert kinds == [
        "triggered",
        "outreach_started",
        "engaged",
        "verified",
        "action_submitted",
        "writeback_confirmed",
    ]


def test_engage_keeps_the_first_open_time(workflow):
    case = factories.case_in_state("outreach")
    case = case_transition(case=case, transition="engage")
    first_open = _fresh(case).opened_at
    assert first_open is not None
    case = case_transition(case=case, transition="escalate")
    assert _fresh(case).opened_at == first_open


def test_agent_completion_resolves_as_completed_by_agent(workflow):
    case = factories.case_in_state("escalated")
    assert case.outcome == CaseOutcome.ESCALATED_WITH_CONTEXT
    assert case.closed_at is None

    case = case_transition(case=case, transition="complete_by_agent")
    assert _fresh(case).submitted_at is not None
    case = case_transition(case=case, transition="confirm_writeback")

    stored = _fresh(case)
    assert stored.state == "resolved"
    assert stored.outcome == CaseOutcome.COMPLETED_BY_AGENT
    assert stored.written_back_at is not None
    assert stored.closed_at is not None


def test_agent_completion_stays_agents_through_a_failed_writeback(workflow):
    case = factories.case_in_state("escalated")
    for transition in ("complete_by_agent", "fail_writeback", "retry_writeback"):
        case = case_transition(case=case, transition=transition)
    case = case_transition(case=case, transition="confirm_writeback")
    assert _fresh(case).outcome == CaseOutcome.COMPLETED_BY_AGENT


def test_writeback_failure_and_retry(workflow):
    case = factories.case_in_state("action_submitted")
    case = case_transition(case=case, transition="fail_writeback", data={"error": "timeout"})
    stored = _fresh(case)
    assert stored.state == "writeback_failed"
    assert stored.outcome == CaseOutcome.WRITEBACK_FAILED
    assert stored.closed_at is None  # not over: an agent or a retry still has to act
    assert not stored.is_terminal

    case = case_transition(case=case, transition="retry_writeback")
    stored = _fresh(case)
    assert stored.state == "action_submitted"
    assert stored.outcome == ""
    case = case_transition(case=case, transition="confirm_writeback")
    assert _fresh(case).outcome == CaseOutcome.RESOLVED_IN_MESSAGE


@pytest.mark.parametrize(
    ("state", "outcome"),
    [
        ("abandoned", CaseOutcome.ABANDONED),
        ("closed_by_rule", CaseOutcome.CLOSED_BY_RULE),
        ("cancelled", CaseOutcome.CANCELLED),
        ("closed_by_agent", CaseOutcome.ESCALATED_WITH_CONTEXT),
    ],
)
def test_closing_transitions_set_outcome_and_closed_at(workflow, state, outcome):
    stored = _fresh(factories.case_in_state(state))
    assert stored.state == state
    assert stored.outcome == outcome
    assert stored.closed_at is not None
    assert stored.is_terminal


def test_escalation_keeps_the_case_open(workflow):
    stored = _fresh(factories.case_in_state("escalated"))
    assert stored.outcome == CaseOutcome.ESCALATED_WITH_CONTEXT
    assert stored.closed_at is None
    assert not stored.is_terminal


# --- illegal transitions ------------------------------------------------------------------------

ILLEGAL = [
    ("received", "verify"),
    ("received", "submit_action"),
    ("received", "confirm_writeback"),
    ("outreach", "start_outreach"),
    ("engaged", "engage"),
    ("verified", "complete_by_agent"),
    ("action_submitted", "cancel"),
    ("action_submitted", "escalate"),
    ("action_submitted", "abandon"),
    ("writeback_failed", "confirm_writeback"),
    ("escalated", "engage"),
    ("escalated", "abandon"),
    ("resolved", "cancel"),
    ("resolved", "escalate"),
    ("abandoned", "engage"),
    ("cancelled", "cancel"),
    ("closed_by_agent", "retry_writeback"),
    ("escalated", "close_by_rule"),
    ("closed_by_rule", "escalate"),
]


@pytest.mark.parametrize(("state", "transition"), ILLEGAL, ids=[f"{s}-{t}" for s, t in ILLEGAL])
def test_illegal_transition_raises_and_writes_nothing(workflow, state, transition):
    case = factories.case_in_state(state)
    stored_before = _fresh(case)
    events_before = list(CaseEvent.objects.filter(case=case).values_list("pk", "kind"))

    with pytest.raises(IllegalTransition) as caught:
        case_transition(case=case, transition=transition)

    label = transition.replace("_", " ")
    assert str(caught.value) == f"A case in state {state!r} cannot {label}."
    assert caught.value.state == state
    assert caught.value.transition == transition
    stored = _fresh(case)
    assert stored.state == state
    assert stored.outcome == stored_before.outcome
    assert stored.updated_at == stored_before.updated_at
    assert list(CaseEvent.objects.filter(case=case).values_list("pk", "kind")) == events_before


@pytest.mark.parametrize("name", ["save", "delete", "no_such_transition", "_record"])
def test_only_transitions_can_be_named(workflow, name):
    case = factories.case()
    with pytest.raises(ValueError, match="is not a case transition"):
        case_transition(case=case, transition=name)
    assert _fresh(case).state == "received"
    assert CaseEvent.objects.filter(case=case).count() == 1


def test_case_transition_reads_the_current_state_not_the_callers_copy(workflow):
    case = factories.case()
    stale = _fresh(case)
    case_transition(case=case, transition="cancel")
    assert stale.state == "received"
    with pytest.raises(IllegalTransition, match="'cancelled' cannot start outreach"):
        case_transition(case=stale, transition="start_outreach")


def test_case_transition_accepts_a_case_id(workflow):
    case = factories.case()
    returned = case_transition(case=case.pk, transition="start_outreach")
    assert returned.state == _fresh(case).state == "outreach"


# --- nothing edits the state or the timeline by hand -------------------------------------------


def test_state_cannot_be_assigned(workflow):
    case = factories.case()
    with pytest.raises(AttributeError, match="Direct state modification is not allowed"):
        case.state = "resolved"
    loaded = _fresh(case)
    with pytest.raises(AttributeError):
        loaded.state = "resolved"
    assert _fresh(case).state == "received"


def test_refresh_from_db_still_works_on_the_protected_state(workflow):
    case = factories.case()
    copy = _fresh(case)
    case_transition(case=case, transition="start_outreach")
    copy.refresh_from_db()
    assert copy.state == "outreach"


def test_a_stale_copy_cannot_overwrite_a_newer_state(workflow):
    """Without the service's row lock, ConcurrentTransitionMixin still refuses to save a
    transition over a state that changed since the instance was read."""
    case = factories.case()
    stale = _fresh(case)
    case_transition(case=case, transition="escalate")
    stale.abandon()
    with pytest.raises(ConcurrentTransition):
        stale.save()
    assert _fresh(case).state == "escalated"
    assert not CaseEvent.objects.filter(case=case, kind="abandoned").exists()


def test_case_events_cannot_be_changed(workflow):
    case = factories.case()
    event = CaseEvent.objects.get(case=case)
    event.kind = "forged"
    with pytest.raises(RuntimeError, match="append-only"):
        event.save()
    with pytest.raises(RuntimeError, match="append-only"):
        event.delete()
    with pytest.raises(RuntimeError, match="append-only"):
        CaseEvent.objects.filter(pk=event.pk).update(kind="forged")
    with pytest.raises(RuntimeError, match="append-only"):
        CaseEvent.objects.filter(pk=event.pk).delete()
    assert CaseEvent.objects.get(pk=event.pk).kind == "triggered"


def test_events_can_be_recorded_without_a_state_change(workflow):
    case = factories.case()
    event = case_record_event(case=case, kind="message_sent", actor=Actor.SYSTEM, data={"n": 1})
    assert event.pk is not None
    assert _fresh(case).state == "received"
    kinds = list(CaseEvent.objects.filter(case=case).values_list("kind", flat=True))
    assert kinds == ["triggered", "message_sent"]
