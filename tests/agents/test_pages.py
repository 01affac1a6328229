"""The agent's case page: what it shows, the same queries for 10 or 200 events, and each
form's errors with nothing written."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from agents.models import OfferProposal, Task
from cases.models import Actor, Case, CaseEvent
from cases.services import case_record_event
from tests import factories
from tests.agents.conftest import escalated


def page_url(case, action: str = "") -> str:
    return f"/admin/agents/case/{case.pk}/" + (f"{action}/" if action else "")


@pytest.fixture
def agent_client(client, agent):
    client.force_login(agent)
    return client


def test_the_page_tells_the_story(escalated_case, agent_client):
    case_record_event(
        case=escalated_case,
        kind="validation_failed",
        actor=Actor.CUSTOMER,
        data={"action": "promise_to_pay", "errors": {"amount": ["Enter an amount from 105.13"]}},
    )
    case_record_event(
        case=escalated_case,
        kind="inbound_message",
        actor=Actor.CUSTOMER,
        data={"channel": "sms", "kind": "free_text", "text": "Can I pay next month?"},
    )
    response = agent_client.get(page_url(escalated_case))
    assert response.status_code == 200
    page = response.content.decode()
    for text in (
        "Escalated to an agent",
        "customer_reply",
        "account reference",  # trigger data as fields
        "420.50",
        "Policy promise_to_pay version 1",
        "Promise to pay (recommended)",
        "Customer&#x27;s Promise to pay was refused: amount: Enter an amount from 105.13",
        "Customer wrote by SMS: “Can I pay next month?”",
        "What went wrong",
        "Complete for the customer",
    ):
        assert text in page, text
    assert "{&quot;" not in page  # no raw JSON


def test_the_case_admin_links_to_the_page(escalated_case, admin_client):
    page = admin_client.get(f"/admin/cases/case/{escalated_case.pk}/change/").content.decode()
    assert page_url(escalated_case) in page
    queue = admin_client.get("/admin/agents/task/").content.decode()
    assert page_url(escalated_case) in queue


def _page_queries(client, case) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(page_url(case))
    assert response.status_code == 200
    return len(queries)


def _add_events(case, count: int) -> None:
    kinds = [
        ("message_sent", {"channel": "sms", "purpose": "step", "step": 1, "message": "k"}),
        ("link_opened", {"link_id": 1}),
        ("verification_failed", {"factor": "code", "failures": 1, "locked": False}),
        ("agent_note", {"user": "ada-agent", "text": "looked"}),
        ("writeback_attempt", {"operation": "arrangement", "step": "send", "result": "retry"}),
    ]
    CaseEvent.objects.bulk_create(
        CaseEvent(case=case, kind=kind, actor=Actor.SYSTEM, data=data)
        for kind, data in (kinds[i % len(kinds)] for i in range(count))
    )


def test_the_page_runs_the_same_queries_for_10_or_200_events(workflow, agent_client):
    few, many = escalated(), escalated()
    _add_events(few, 10 - few.events.count())
    _add_events(many, 200 - many.events.count())
    assert (few.events.count(), many.events.count()) == (10, 200)
    _page_queries(agent_client, few)  # warm per-process caches (blueprints)
    assert _page_queries(agent_client, few) == _page_queries(agent_client, many)


def test_viewers_read_but_cannot_act(escalated_case, client):
    from tests.agents.conftest import staff_with

    auditor = factories.user("auditor")
    from django.contrib.auth.models import Permission

    auditor.user_permissions.add(Permission.objects.get(codename="view_case"))
    client.force_login(auditor)
    page = client.get(page_url(escalated_case))
    assert page.status_code == 200
    assert "Complete for the customer" not in page.content.decode()
    assert client.post(page_url(escalated_case, "note"), {"note-text": "x"}).status_code == 403
    client.force_login(staff_with(username="no-perms"))
    assert client.get(page_url(escalated_case)).status_code == 403


def test_unknown_case_and_action(escalated_case, agent_client):
    assert (
        agent_client.get("/admin/agents/case/01890000-0000-7000-8000-000000000000/").status_code
        == 404
    )
    assert agent_client.post(page_url(escalated_case, "fly")).status_code == 404
    assert agent_client.get(page_url(escalated_case, "note")).status_code == 405


def test_note_and_close_from_the_page(escalated_case, agent_client):
    response = agent_client.post(page_url(escalated_case, "note"), {"note-text": "Rang, no answer"})
    assert response.status_code == 302
    assert escalated_case.events.filter(kind="agent_note").exists()
    response = agent_client.post(page_url(escalated_case, "close"), {"close-reason": ""})
    assert response.status_code == 400
    assert "This field is required" in response.content.decode()
    assert Case.objects.get(pk=escalated_case.pk).state == "escalated"
    response = agent_client.post(page_url(escalated_case, "close"), {"close-reason": "Paid"})
    assert response.status_code == 302
    assert Case.objects.get(pk=escalated_case.pk).state == "closed_by_agent"


def test_claim_from_the_page(escalated_case, agent_client, agent):
    task = Task.objects.get(case=escalated_case)
    response = agent_client.post(page_url(escalated_case, "claim"), {"task": task.pk})
    assert response.status_code == 302
    assert Task.objects.get(pk=task.pk).assignee == agent
    response = agent_client.post(page_url(escalated_case, "claim"), {"task": 999999})
    assert response.status_code == 400
    assert "not open on this case" in response.content.decode()


def test_complete_form_uses_the_offer_bounds(escalated_case, agent_client):
    far = (timezone.localdate() + dt.timedelta(days=90)).isoformat()
    response = agent_client.post(
        page_url(escalated_case, "complete"),
        {
            "action": "promise_to_pay",
            "complete-amount": "9999.00",
            "complete-date": far,
            "complete-submission_key": "k1",
        },
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert "Ensure this value is less than or equal to 420.50" in page
    assert Case.objects.get(pk=escalated_case.pk).state == "escalated"
    response = agent_client.post(page_url(escalated_case, "complete"), {"action": "pay_now"})
    assert response.status_code == 400
    assert "Choose one of the actions offered" in response.content.decode()


def test_complete_from_the_page(
    core_target, escalated_case, agent_client, django_capture_on_commit_callbacks
):
    day = (timezone.localdate() + dt.timedelta(days=3)).isoformat()
    with django_capture_on_commit_callbacks(execute=True):
        response = agent_client.post(
            page_url(escalated_case, "complete"),
            {
                "action": "dispute",
                "complete-reason": "I have already paid",
                "complete-note": "Receipt seen",
                "complete-submission_key": "k2",
            },
        )
    assert response.status_code == 302, response.content.decode()[:2000]
    case = Case.objects.get(pk=escalated_case.pk)
    assert case.state == "resolved"
    assert case.events.get(kind="completed_by_agent").data["user"] == "ada-agent"
    assert day  # the dispute takes no date


def test_out_of_policy_offer_without_reason_is_a_form_error(escalated_case, agent_client):
    response = agent_client.post(
        page_url(escalated_case, "offer"), {"offer-action": "promise_to_pay", "offer-amount": "300"}
    )
    assert response.status_code == 400
    assert "outside the policy" in response.content.decode()
    assert not OfferProposal.objects.exists()


def test_whatsapp_refusal_is_shown_and_enforced(workflow, agent_client):
    case = escalated(customer={"whatsapp": "+447911123456", "consent": {"whatsapp": True}})
    page = agent_client.get(page_url(case)).content.decode()
    assert "WhatsApp allows free text only within 24 hours" in page
    response = agent_client.post(
        page_url(case, "reply"), {"reply-channel": "whatsapp", "reply-text": "Hello"}
    )
    assert response.status_code == 400
    assert "within 24 hours" in response.content.decode()
