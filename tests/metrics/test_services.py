"""Facts follow the timeline: the refresh job, the rebuild, and real transitions."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from cases.models import CaseEvent
from cases.services import case_record_event, case_transition
from metrics.models import CaseFact, RefreshMark
from metrics.services import SETTLE_SECONDS, case_facts_rebuild, case_facts_refresh_due
from tests import factories

pytestmark = pytest.mark.django_db


def test_refresh_follows_real_transitions(workflow):
    case = factories.case_in_state("engaged")
    assert case_facts_refresh_due() == 1
    fact = CaseFact.objects.get(case=case)
    assert (fact.opened, fact.stage, fact.resolved) == (True, 3, False)
    case = case_transition(case=case, transition="verify")
    case = case_transition(case=case, transition="submit_action")
    case = case_transition(case=case, transition="confirm_writeback")
    case_facts_refresh_due()
    fact.refresh_from_db()
    assert (fact.resolved, fact.submitted, fact.outcome) == (True, True, "resolved_in_message")
    assert fact.resolution_seconds is not None and fact.resolution_seconds >= 0


def test_mark_waits_for_young_events_and_passes_settled_ones(workflow):
    case = factories.case_in_state("outreach")
    case_facts_refresh_due()
    # Every event is younger than the settling time: all are read again next run.
    assert RefreshMark.objects.get().last_event_id < CaseEvent.objects.order_by("id").first().id
    old = timezone.now() - dt.timedelta(seconds=SETTLE_SECONDS + 60)
    CaseEvent.objects.bulk_create(
        [CaseEvent(case=case, kind="escalated", actor="system", data={}, created_at=old)]
    )
    case_facts_refresh_due()
    assert CaseFact.objects.get(case=case).escalated is True


def test_rebuild_equals_refresh(dataset):
    before = {
        fact.case_id: (fact.stage, fact.resolved, fact.exceptions, fact.handle_seconds)
        for fact in CaseFact.objects.all()
    }
    case = dataset["cases"]["f"]
    case_record_event(case=case, kind="agent_note", actor="agent", data={})
    case_facts_refresh_due()
    assert CaseFact.objects.get(case=case).agent_touched is True
    case_facts_rebuild()
    after = {
        fact.case_id: (fact.stage, fact.resolved, fact.exceptions, fact.handle_seconds)
        for fact in CaseFact.objects.all()
    }
    assert after == before
    assert CaseFact.objects.get(case=case).agent_touched is True
