"""outcome_submit and delivery to the demo core: each action's operations, proof by
read-back, double submits, the agent's path, and refusals that write nothing."""

from __future__ import annotations

import hashlib

import pytest

from cases.models import Actor, Case, CaseEvent, CaseOutcome
from cases.services import IllegalTransition
from tests import factories
from tests.writeback.conftest import case_ready, submit
from writeback.models import Operation, Outcome
from writeback.outbox import outcome_deliver
from writeback.services import OutcomeExists, OutcomeRefused


def test_submit_delivers_proves_and_resolves(
    core_target, verified_case, demo_core, django_capture_on_commit_callbacks
):
    outcome = submit(verified_case, django_capture_on_commit_callbacks, submission_key="tap-1")
    outcome.refresh_from_db()
    verified_case.refresh_from_db()
    assert outcome.state == Outcome.State.CONFIRMED
    assert verified_case.state == "resolved"
    assert verified_case.outcome == CaseOutcome.RESOLVED_IN_MESSAGE
    [operation] = outcome.operations.all()
    assert operation.status == Operation.Status.CONFIRMED
    assert operation.target_reference.startswith("ARR-")
    stats = demo_core.stats()
    assert (stats["arrangements"], stats["duplicates"], stats["unkeyed"]) == (1, 0, 0)
    events = list(verified_case.events.values_list("kind", "data"))
    assert [kind for kind, _ in events[-4:]] == [
        "action_submitted",
        "writeback_attempt",
        "writeback_attempt",
        "writeback_confirmed",
    ]
    send, read_back = events[-3][1], events[-2][1]
    assert (send["step"], send["status"], send["result"]) == ("send", 201, "ok")
    assert (read_back["step"], read_back["status"]) == ("read_back", 200)
    assert events[-1][1]["references"] == {"arrangement": operation.target_reference}
    # The customer's choices stay on the outcome, not in the timeline.
    assert "120.00" not in str([data for _, data in events])


def test_double_submit_with_one_key_gives_one_outcome(
    core_target, verified_case, demo_core, django_capture_on_commit_callbacks
):
    first = submit(verified_case, django_capture_on_commit_callbacks, submission_key="tap")
    again = submit(verified_case, django_capture_on_commit_callbacks, submission_key="tap")
    assert again.pk == first.pk
    with pytest.raises(OutcomeExists, match="already has an outcome"):
        submit(
            verified_case,
            django_capture_on_commit_callbacks,
            action="dispute",
            values={"reason": "I have already paid", "note": ""},
            submission_key="other-tab",
        )
    assert Outcome.objects.filter(case=verified_case).count() == 1
    assert demo_core.stats()["arrangements"] == 1


def test_agent_completes_an_escalated_case(
    core_target, demo_core, django_capture_on_commit_callbacks
):
    case = factories.case_in_state("escalated")
    outcome = submit(case, django_capture_on_commit_callbacks, actor=Actor.AGENT)
    case.refresh_from_db()
    assert outcome.actor == Actor.AGENT
    assert case.state == "resolved"
    assert case.outcome == CaseOutcome.COMPLETED_BY_AGENT
    assert case.events.filter(kind="completed_by_agent").exists()


def test_customer_cannot_submit_an_escalated_case(core_target, django_capture_on_commit_callbacks):
    case = factories.case_in_state("escalated")
    events = CaseEvent.objects.count()
    with pytest.raises(IllegalTransition):
        submit(case, django_capture_on_commit_callbacks)
    assert Outcome.objects.count() == 0
    assert CaseEvent.objects.count() == events


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"action": "fly_to_the_moon"}, "Unknown action"),
        (
            {"action": "pay_now", "values": {"amount": "10.00", "card": "4242 4242 4242 4242"}},
            "card number",
        ),
        ({"action": "upload_documents", "values": {}}, "at least one document"),
        (
            {"action": "upload_documents", "values": {}, "documents": [{"name": "a.pdf"}]},
            "Document 1",
        ),
        ({"actor": Actor.SYSTEM}, "customer or by an agent"),
    ],
)
def test_bad_submissions_are_refused_and_write_nothing(
    core_target, verified_case, kwargs, message, django_capture_on_commit_callbacks
):
    events = CaseEvent.objects.count()
    with pytest.raises(OutcomeRefused, match=message):
        submit(verified_case, django_capture_on_commit_callbacks, **kwargs)
    verified_case.refresh_from_db()
    assert verified_case.state == "verified"
    assert (Outcome.objects.count(), CaseEvent.objects.count()) == (0, events)


def test_an_action_the_case_was_not_offered_is_refused(
    core_target, verified_case, django_capture_on_commit_callbacks
):
    Case.objects.filter(pk=verified_case.pk).update(
        offer={"actions": [{"action": "dispute"}], "policy_version": 1}
    )
    with pytest.raises(OutcomeRefused, match="not offered"):
        submit(verified_case, django_capture_on_commit_callbacks)


def test_a_workflow_without_a_known_target_is_refused(
    core_target, verified_case, django_capture_on_commit_callbacks
):
    verified_case.workflow.__class__.objects.filter(pk=verified_case.workflow_id).update(
        writeback_target="nowhere"
    )
    with pytest.raises(OutcomeRefused, match="'nowhere' does not exist"):
        submit(verified_case, django_capture_on_commit_callbacks)


def _stored_document(settings, tmp_path, name: str, content: bytes) -> dict:
    from django.core.files.base import ContentFile

    from miniapp.storage import private_storage

    settings.PRIVATE_MEDIA_ROOT = tmp_path / "media"
    path = private_storage().save(f"uploads/{name}", ContentFile(content))
    return {
        "name": name,
        "content_type": "application/pdf",
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
        "path": path,
        "document_type": "proof_of_address",
    }


ACTIONS = [
    ("promise_to_pay", "payment_plan", None, {"arrangements": 1}),
    ("promise_to_pay", "dispute", None, {"notes": 1, "flags": 1}),
    ("promise_to_pay", "request_callback", None, {"notes": 1}),
    ("failed_payment", "pay_now", None, {"payments": 1}),
    ("failed_payment", "update_payment_method", None, {"notes": 1}),
    ("address_update", "update_contact_details", {"address": "2 New Road, Leeds"}, None),
    ("address_update", "update_contact_details", {"unchanged": True}, {"notes": 1}),
    ("address_update", "attestation", None, {"notes": 1}),
    ("compliance_refresh", "upload_documents", None, {"documents": 2}),
]
VALUES = {
    "payment_plan": {
        "instalments": 3,
        "instalment_amount": "140.17",
        "schedule": [
            {"date": "2026-12-01", "amount": "140.17"},
            {"date": "2027-01-01", "amount": "140.17"},
            {"date": "2027-02-01", "amount": "140.16"},
        ],
    },
    "dispute": {"reason": "I have already paid", "note": "Paid by transfer in May."},
    "request_callback": {"date": "2026-12-02", "window": "09:00-12:00"},
    "pay_now": {"amount": "120.00", "provider_reference": "pi_123", "card_last4": "4242"},
    "update_payment_method": {"provider_reference": "seti_456", "card_last4": "4242"},
    "attestation": {"typed_name": "Ada Lovelace", "statement": "It is all true."},
    "upload_documents": {},
}


@pytest.mark.parametrize(("workflow_key", "action", "values", "records"), ACTIONS)
def test_every_shipped_action_reaches_the_core(
    core_target,
    demo_core,
    workflow_key,
    action,
    values,
    records,
    settings,
    tmp_path,
    django_capture_on_commit_callbacks,
):
    case = case_ready(workflow_key)
    documents = None
    if action == "upload_documents":
        documents = [
            _stored_document(settings, tmp_path, "bill.pdf", b"%PDF-1.4 electricity bill"),
            _stored_document(settings, tmp_path, "passport.pdf", b"%PDF-1.4 passport scan"),
        ]
    outcome = submit(
        case,
        django_capture_on_commit_callbacks,
        action=action,
        values=values or VALUES[action],
        documents=documents,
    )
    outcome.refresh_from_db()
    case.refresh_from_db()
    assert (outcome.state, case.state) == ("confirmed", "resolved"), outcome.last_error
    assert set(outcome.operations.values_list("status", flat=True)) == {"confirmed"}
    stats = demo_core.stats()
    for kind, count in (records or {"contact_updates": 1}).items():
        assert stats[kind] == count, kind
    assert stats["duplicates"] == 0
    account = demo_core_account(demo_core, case.data["account_reference"])
    if action == "update_contact_details" and values.get("address"):
        assert account["contact"]["address"] == "2 New Road, Leeds"
    if action == "dispute":
        assert "dispute_open" in account["flags"]


def demo_core_account(demo_core, reference: str) -> dict:
    from config.http import http_request

    answer = http_request(
        "GET",
        f"{demo_core.url}/accounts/{reference}",
        headers={"Authorization": "Bearer test-core-token"},
    )
    return answer.json()


def test_a_confirmed_outcome_is_not_delivered_again(
    core_target, verified_case, demo_core, django_capture_on_commit_callbacks
):
    outcome = submit(verified_case, django_capture_on_commit_callbacks)
    requests = demo_core.stats()["requests"]
    assert outcome_deliver(outcome_id=outcome.pk) == "not_claimed"
    assert outcome_deliver(outcome_id=outcome.pk) == "not_claimed"
    assert demo_core.stats()["requests"] == requests
    assert demo_core.stats()["arrangements"] == 1
