"""Four eyes: a change to a live workflow is a new draft version; its author (or whoever
asks for activation) cannot approve it; a second approver can, and the previous version
retires while its running cases keep it."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from cases.models import Case
from policies.models import ExceptionRoute, ForkRule, Workflow, WorkflowAction, WorkflowApproval
from policies.services import (
    ApprovalError,
    case_prepare,
    workflow_approve,
    workflow_export,
    workflow_import,
    workflow_new_version,
    workflow_reject,
    workflow_request_activation,
)
from tests import factories

pytestmark = pytest.mark.django_db

AUTHOR_CANNOT = "The author of a change cannot approve it; ask a second approver."
STRICTER = "data.days_past_due < 60 && data.balance <= 5000.0"


@pytest.fixture
def author():
    # An approver too: the rule is about who wrote the change, not what they may do.
    return factories.user("author", approver=True)


@pytest.fixture
def active(workflow):
    return workflow


@pytest.fixture
def draft(active, author):
    """v2 of promise_to_pay, by `author`: promises only below 60 days past due."""
    draft = workflow_new_version(workflow=active, user=author)
    spec = workflow_export(workflow=draft)
    spec["actions"][0]["eligible_when"] = STRICTER
    return workflow_import(spec=spec, user=factories.user("someone-else"))


def test_new_version_copies_the_blueprint(active):
    person = factories.user()

    draft = workflow_new_version(workflow=active, user=person)

    assert (draft.key, draft.version, draft.status) == ("promise_to_pay", 2, "draft")
    assert draft.created_by == person
    assert workflow_export(workflow=draft) == workflow_export(workflow=active)
    for related in ("actions", "fork_rules", "exception_routes"):
        assert getattr(draft, related).count() == getattr(active, related).count() > 0
    assert not WorkflowAction.objects.filter(workflow=draft, pk__in=active.actions.values("pk"))
    # Asking again while the draft is open returns it rather than a third version.
    assert workflow_new_version(workflow=active, user=factories.user()) == draft


def test_editing_the_draft_leaves_the_active_version_alone(active, draft, author):
    assert draft.version == 2
    assert draft.created_by == author  # editing a draft does not change its author
    assert draft.actions.get(action="promise_to_pay").eligible_when == STRICTER
    assert active.actions.get(action="promise_to_pay").eligible_when == (
        "data.days_past_due < 90 && data.balance <= 5000.0"
    )
    active.refresh_from_db()
    assert active.status == "active"


def test_author_cannot_approve(draft, author):
    approval = workflow_request_activation(workflow=draft, user=author)

    with pytest.raises(ApprovalError, match=AUTHOR_CANNOT):
        workflow_approve(approval=approval, user=author)

    approval.refresh_from_db()
    assert approval.decision == "pending"
    draft.refresh_from_db()
    assert draft.status == "pending_approval"


def test_requester_cannot_approve(draft):
    requester = factories.user("requester", approver=True)
    approval = workflow_request_activation(workflow=draft, user=requester)

    with pytest.raises(ApprovalError, match=AUTHOR_CANNOT):
        workflow_approve(approval=approval, user=requester)


def test_author_cannot_approve_even_as_superuser(active):
    boss = get_user_model().objects.create_superuser(username="boss", password="x")
    draft = workflow_new_version(workflow=active, user=boss)
    approval = workflow_request_activation(workflow=draft, user=boss)

    with pytest.raises(ApprovalError, match=AUTHOR_CANNOT):
        workflow_approve(approval=approval, user=boss)


def test_approver_needs_the_permission(draft, author):
    approval = workflow_request_activation(workflow=draft, user=author)
    colleague = factories.user("colleague")

    with pytest.raises(ApprovalError) as caught:
        workflow_approve(approval=approval, user=colleague)

    assert str(caught.value) == "Approving workflows needs the approver permission (Risk role)."
    draft.refresh_from_db()
    assert draft.status == "pending_approval"


def test_second_approver_activates_and_the_old_version_retires(active, draft, author):
    client, _ = factories.api_client()
    running = factories.case_for("promise_to_pay", client, data={"days_past_due": 70})
    approval = workflow_request_activation(workflow=draft, user=author)
    approver = factories.user("approver", approver=True)

    workflow_approve(approval=approval, user=approver, note="Checked against the policy.")

    draft.refresh_from_db()
    active.refresh_from_db()
    assert draft.status == "active"
    assert draft.activated_at is not None
    assert active.status == "retired"
    assert list(
        Workflow.objects.filter(key="promise_to_pay", status="active").values_list(
            "version", flat=True
        )
    ) == [2]

    # The running case keeps v1 and its rules; a new trigger gets v2 and its rules.
    running.refresh_from_db()
    assert running.workflow_id == active.pk
    case_prepare(case=running)
    running.refresh_from_db()
    assert running.offer["policy"] == {"workflow": "promise_to_pay", "version": 1}
    assert running.offer["actions"][0]["action"] == "promise_to_pay"

    new = factories.case_for("promise_to_pay", client, data={"days_past_due": 70})
    assert new.workflow_id == draft.pk
    case_prepare(case=new)
    new.refresh_from_db()
    assert new.offer["policy"] == {"workflow": "promise_to_pay", "version": 2}
    assert new.offer["excluded"][0] == {
        "action": "promise_to_pay",
        "rule": STRICTER,
        "reason": "rule is false",
    }


def test_approval_keeps_who_when_and_what_changed(draft, author):
    approval = workflow_request_activation(workflow=draft, user=author)
    approver = factories.user("approver", approver=True)

    workflow_approve(approval=approval, user=approver, note="Fine.")

    approval.refresh_from_db()
    assert approval.requested_by == author
    assert approval.requested_at is not None
    assert approval.decision == "approved"
    assert approval.decided_by == approver
    assert approval.decided_at >= approval.requested_at
    assert approval.note == "Fine."
    assert list(approval.summary) == ["actions"]
    before, after = approval.summary["actions"]["before"], approval.summary["actions"]["after"]
    assert before[0]["eligible_when"] == "data.days_past_due < 90 && data.balance <= 5000.0"
    assert after[0]["eligible_when"] == STRICTER
    assert before[1:] == after[1:]


def test_a_decided_request_cannot_be_decided_again(draft, author):
    approval = workflow_request_activation(workflow=draft, user=author)
    workflow_approve(approval=approval, user=factories.user(approver=True))

    with pytest.raises(ApprovalError, match="decided already"):
        workflow_approve(approval=approval, user=factories.user(approver=True))
    with pytest.raises(ApprovalError, match="decided already"):
        workflow_reject(approval=approval, user=factories.user(approver=True), note="Too late.")


def test_reject_returns_the_draft_for_more_work(active, draft, author):
    approval = workflow_request_activation(workflow=draft, user=author)
    reviewer = factories.user("reviewer", approver=True)

    workflow_reject(approval=approval, user=reviewer, note="60 days is too strict.")

    approval.refresh_from_db()
    draft.refresh_from_db()
    active.refresh_from_db()
    assert (approval.decision, approval.decided_by, approval.note) == (
        "rejected",
        reviewer,
        "60 days is too strict.",
    )
    assert approval.decided_at is not None
    assert draft.status == "draft"
    assert active.status == "active"
    # It can be sent again; the new request stands on its own.
    again = workflow_request_activation(workflow=draft, user=author)
    assert again.pk != approval.pk
    assert again.decision == "pending"


def test_a_new_request_supersedes_a_pending_one(draft, author):
    first = workflow_request_activation(workflow=draft, user=author)
    second = workflow_request_activation(workflow=draft, user=author)

    first.refresh_from_db()
    assert first.decision == "rejected"
    assert first.note == "Superseded by a new request."
    assert second.decision == "pending"
    assert WorkflowApproval.objects.filter(workflow=draft, decision="pending").count() == 1


def test_only_a_draft_can_be_sent(active, author):
    with pytest.raises(ApprovalError, match="Only a draft can be sent for approval"):
        workflow_request_activation(workflow=active, user=author)


def test_rule_broken_after_the_request_blocks_approval(draft, author):
    approval = workflow_request_activation(workflow=draft, user=author)
    ForkRule.objects.create(workflow=draft, name="Oops", when="data.nope", reason="No.")

    with pytest.raises(ApprovalError, match="Fork rule 'Oops'"):
        workflow_approve(approval=approval, user=factories.user(approver=True))

    draft.refresh_from_db()
    assert draft.status == "pending_approval"
    assert Workflow.objects.get(key="promise_to_pay", status="active").version == 1


def test_gaps_block_the_request(draft, author):
    ExceptionRoute.objects.filter(workflow=draft, exception_type="no_response").delete()

    with pytest.raises(ApprovalError) as caught:
        workflow_request_activation(workflow=draft, user=author)

    assert str(caught.value) == (
        "Not ready to launch: Choose an exception route for “No response”."
    )
    assert not WorkflowApproval.objects.exists()


def test_first_version_of_a_new_workflow_also_needs_four_eyes(author):
    spec = factories.workflow_spec("address_update")
    draft = workflow_import(spec=spec, user=author)
    approval = workflow_request_activation(workflow=draft, user=author)

    assert approval.summary == {"new_workflow": True}
    with pytest.raises(ApprovalError, match=AUTHOR_CANNOT):
        workflow_approve(approval=approval, user=author)
    workflow_approve(approval=approval, user=factories.user(approver=True))
    draft.refresh_from_db()
    assert draft.status == "active"
    assert Case.objects.count() == 0


def test_an_editor_of_the_draft_cannot_approve_it(active, author):
    """Four eyes covers everyone who changed the version, not only its creator."""
    editor = factories.user("editor", approver=True)
    draft = workflow_new_version(workflow=active, user=author)
    spec = workflow_export(workflow=draft)
    spec["actions"][0]["eligible_when"] = STRICTER
    workflow_import(spec=spec, user=editor)
    approval = workflow_request_activation(workflow=draft, user=author)

    with pytest.raises(ApprovalError, match=AUTHOR_CANNOT):
        workflow_approve(approval=approval, user=editor)

    workflow_approve(approval=approval, user=factories.user("second", approver=True))
    draft.refresh_from_db()
    assert draft.status == "active"
