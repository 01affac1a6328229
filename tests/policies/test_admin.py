"""The operations admin for workflows: editing a draft's blueprint with precise rule errors,
read-only live versions, the launch gate, four-eyes approval, preview, dry run and
pause/resume, each behind the right permission."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from policies.models import ForkRule, Workflow, WorkflowAction, WorkflowApproval
from policies.services import (
    workflow_export,
    workflow_new_version,
    workflow_request_activation,
    workflows_install_shipped,
)
from tests import factories

pytestmark = pytest.mark.django_db

SHIPPED_KEYS = ["address_update", "compliance_refresh", "failed_payment", "promise_to_pay"]


# --- users, clients and data ------------------------------------------------------------------


@pytest.fixture
def shipped() -> dict[str, Workflow]:
    return {workflow.key: workflow for workflow in workflows_install_shipped()}


@pytest.fixture
def editor():
    return get_user_model().objects.create_superuser(
        "editor", "editor@example.com", "not-used-password"
    )


def _staff_user(username: str, *codenames: str):
    user = get_user_model().objects.create_user(username, is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="policies", codename__in=codenames)
    )
    return user


@pytest.fixture
def approver():
    return _staff_user(
        "approver",
        "approve_workflow",
        "view_workflow",
        "change_workflow",
        "view_workflowapproval",
        "change_workflowapproval",
    )


def _logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def as_editor(editor) -> Client:
    return _logged_in(editor)


@pytest.fixture
def as_approver(approver) -> Client:
    return _logged_in(approver)


@pytest.fixture
def draft(shipped, editor) -> Workflow:
    """Version 2 of promise_to_pay, a draft copied from the active version 1."""
    return workflow_new_version(workflow=shipped["promise_to_pay"], user=editor)


def _url(name: str, workflow: Workflow | WorkflowApproval) -> str:
    model = "workflow" if isinstance(workflow, Workflow) else "workflowapproval"
    return reverse(f"admin:policies_{model}_{name}", args=[workflow.pk])


def _messages(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def _form_data(response) -> dict[str, Any]:
    """What a browser would POST for the change form exactly as it was rendered."""
    forms = [response.context["adminform"].form]
    for inline in response.context["inline_admin_formsets"]:
        forms.append(inline.formset.management_form)
        forms.extend(inline.formset.forms)
    data: dict[str, Any] = {}
    for form in forms:
        for bound in form:
            value = bound.value()
            if bound.field.show_hidden_initial:
                data[bound.html_initial_name] = "" if value is None else value
            if value is False or value is None:
                continue
            data[bound.html_name] = "on" if value is True else value
    return data


def _row(data: dict[str, Any], prefix: str, field: str, value: str) -> int:
    """The index of the inline row whose `field` is `value`."""
    for key, given in data.items():
        match = re.fullmatch(rf"{prefix}-(\d+)-{field}", key)
        if match and given == value:
            return int(match.group(1))
    raise AssertionError(f"no {prefix} row with {field}={value!r}")


def _inline(response, prefix: str):
    return next(
        inline.formset
        for inline in response.context["inline_admin_formsets"]
        if inline.formset.prefix == prefix
    )


# --- list and change pages --------------------------------------------------------------------


def test_changelist_lists_every_shipped_workflow_and_filters_by_status(shipped, as_editor):
    response = as_editor.get(reverse("admin:policies_workflow_changelist"))
    assert response.status_code == 200
    for key in SHIPPED_KEYS:
        assert key in response.content.decode()

    drafts = as_editor.get(reverse("admin:policies_workflow_changelist") + "?status__exact=draft")
    assert list(drafts.context["cl"].result_list) == []


def test_changelist_shows_the_pending_approval_count(draft, editor, as_editor):
    workflow_request_activation(workflow=draft, user=editor)
    response = as_editor.get(reverse("admin:policies_workflow_changelist"))
    assert "1 approval request pending" in response.content.decode()


@pytest.mark.parametrize("key", SHIPPED_KEYS)
def test_change_page_of_each_shipped_workflow(shipped, as_editor, key):
    response = as_editor.get(_url("change", shipped[key]))
    assert response.status_code == 200
    page = response.content.decode()
    assert "Ready to launch" in page
    assert "Create new draft version" in page
    assert "running cases keep theirs" in page


def test_draft_change_page_shows_the_action_catalogue(draft, as_editor):
    page = as_editor.get(_url("change", draft)).content.decode()
    assert "Action catalogue" in page
    assert "Latest promise date, in days from today" in page  # promise_to_pay's max_days
    assert "The uploaded files with their SHA-256" in page  # evidence kind "documents"
    assert "Request activation" in page


def test_saving_a_draft_changes_its_blueprint(draft, as_editor):
    data = _form_data(as_editor.get(_url("change", draft)))
    row = _row(data, "actions", "action", "promise_to_pay")
    data[f"actions-{row}-eligible_when"] = "data.days_past_due < 60"
    data["completion_definition"] = "The promise is recorded on the account."

    response = as_editor.post(_url("change", draft), data)

    assert response.status_code == 302, response.context and response.context["errors"]
    draft.refresh_from_db()
    assert draft.completion_definition == "The promise is recorded on the account."
    action = draft.actions.get(action="promise_to_pay")
    assert action.eligible_when == "data.days_past_due < 60"
    assert action.evidence == ["amount", "date", "consent_text"]  # order kept


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("data.days_past_due <", "Promise to pay: eligible when: syntax error in"),
        (
            "data.nope > 1",
            "Promise to pay: eligible when: `data.nope > 1` uses data.nope, which this "
            "workflow does not have",
        ),
        (
            "data.balance",
            "Promise to pay: eligible when: `data.balance` gives float on sample data; it "
            "must give true or false.",
        ),
    ],
    ids=["syntax", "unknown-field", "wrong-type"],
)
def test_broken_rule_is_refused_on_its_row_and_nothing_is_written(draft, as_editor, rule, message):
    before = (workflow_export(workflow=draft), draft.updated_at)
    data = _form_data(as_editor.get(_url("change", draft)))
    row = _row(data, "actions", "action", "promise_to_pay")
    data[f"actions-{row}-eligible_when"] = rule
    data["completion_definition"] = "Changed in the same post."

    response = as_editor.post(_url("change", draft), data)

    assert response.status_code == 200
    errors = _inline(response, "actions").forms[row].non_field_errors()
    assert any(error.startswith(message) for error in errors), errors
    assert message.split("`")[0] in response.content.decode()
    draft.refresh_from_db()
    assert (workflow_export(workflow=draft), draft.updated_at) == before


def test_fork_rule_error_is_on_its_when_field(draft, as_editor):
    data = _form_data(as_editor.get(_url("change", draft)))
    row = _row(data, "fork_rules", "name", "High balance")
    data[f"fork_rules-{row}-when"] = "data.balance + 1 > 10000.0"  # a double plus an int

    response = as_editor.post(_url("change", draft), data)

    assert response.status_code == 200
    [error] = _inline(response, "fork_rules").forms[row].errors["when"]
    assert error.startswith("High balance: `data.balance + 1 > 10000.0` mixes types")


def test_rules_are_checked_against_the_contract_posted_with_them(draft, as_editor):
    data = _form_data(as_editor.get(_url("change", draft)))
    contract = [spec for spec in draft.contract if spec["name"] != "days_past_due"]
    data["contract"] = json.dumps(contract)

    response = as_editor.post(_url("change", draft), data)

    assert response.status_code == 200
    row = _row(data, "actions", "action", "promise_to_pay")
    errors = _inline(response, "actions").forms[row].non_field_errors()
    assert any("uses data.days_past_due, which this workflow does not have" in e for e in errors)
    draft.refresh_from_db()
    assert any(spec["name"] == "days_past_due" for spec in draft.contract)


def test_rules_that_fit_only_the_new_contract_are_accepted(draft, as_editor):
    data = _form_data(as_editor.get(_url("change", draft)))
    data["contract"] = json.dumps([*draft.contract, {"name": "hardship", "type": "boolean"}])
    row = _row(data, "actions", "action", "payment_plan")
    data[f"actions-{row}-eligible_when"] = "data.hardship || data.balance >= 200.0"

    response = as_editor.post(_url("change", draft), data)

    assert response.status_code == 302
    assert "data.hardship" in draft.actions.get(action="payment_plan").eligible_when


def test_broken_contract_is_reported_on_the_contract_field(draft, as_editor):
    data = _form_data(as_editor.get(_url("change", draft)))
    data["contract"] = json.dumps([{"name": "balance"}, "days_past_due"])

    response = as_editor.post(_url("change", draft), data)

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["contract"]
    assert any(error.startswith("fields[0].type: Unknown type None") for error in errors)
    assert any(error.startswith("fields[1]: Each field must be an object") for error in errors)


def test_new_action_row_takes_the_catalogue_identity_level(draft, as_editor):
    data = _form_data(as_editor.get(_url("change", draft)))
    row = int(data["actions-TOTAL_FORMS"])
    data["actions-TOTAL_FORMS"] = row + 1
    data.update(
        {
            f"actions-{row}-workflow": draft.pk,
            f"actions-{row}-action": "update_payment_method",
            f"actions-{row}-position": 9,
            f"actions-{row}-eligible_when": "true",
            f"actions-{row}-identity_level": "",
            f"actions-{row}-params": "{}",
            f"actions-{row}-evidence": ["payment_reference", "consent_text"],
        }
    )

    response = as_editor.post(_url("change", draft), data)

    assert response.status_code == 302
    added = draft.actions.get(action="update_payment_method")
    assert added.identity_level == "otp"
    assert added.evidence == ["payment_reference", "consent_text"]


def test_add_a_workflow_as_a_draft(editor, as_editor):
    data = _form_data(as_editor.get(reverse("admin:policies_workflow_add")))
    data.update(
        key="hardship_review",
        name="Hardship review",
        contract=json.dumps([{"name": "balance", "type": "decimal"}]),
    )

    response = as_editor.post(reverse("admin:policies_workflow_add"), data)

    assert response.status_code == 302
    workflow = Workflow.objects.get(key="hardship_review")
    assert (workflow.version, workflow.status, workflow.created_by) == (1, "draft", editor)

    again = as_editor.post(reverse("admin:policies_workflow_add"), data)
    assert again.status_code == 200
    assert (
        again.context["adminform"]
        .form.errors["key"][0]
        .startswith("A workflow with this key exists")
    )


# --- read-only versions and new drafts --------------------------------------------------------


def test_active_version_is_read_only(shipped, as_editor):
    active = shipped["promise_to_pay"]
    response = as_editor.get(_url("change", active))
    page = response.content.decode()
    assert 'name="_save"' not in page
    assert 'name="actions-0-eligible_when"' not in page
    assert 'name="contract"' not in page
    assert "data.days_past_due &lt; 90 &amp;&amp; data.balance &lt;= 5000.0" in page
    assert not response.context["has_delete_permission"]

    assert as_editor.post(_url("change", active), {"name": "Renamed"}).status_code == 403
    assert as_editor.post(_url("delete", active), {"post": "yes"}).status_code == 403
    active.refresh_from_db()
    assert active.name == "Promise to pay"


def test_create_new_draft_version_makes_version_2(shipped, editor, as_editor):
    active = shipped["promise_to_pay"]
    response = as_editor.post(_url("new_version", active))

    draft = Workflow.objects.get(key="promise_to_pay", version=2)
    assert response.status_code == 302
    assert response["Location"] == _url("change", draft)
    assert draft.status == Workflow.Status.DRAFT
    assert draft.created_by == editor
    assert workflow_export(workflow=draft) == workflow_export(workflow=active)
    active.refresh_from_db()
    assert active.status == Workflow.Status.ACTIVE

    page = as_editor.get(_url("change", draft)).content.decode()
    assert 'name="_save"' in page
    assert 'name="actions-0-eligible_when"' in page


def test_state_changing_buttons_need_post(shipped, as_editor):
    assert as_editor.get(_url("new_version", shipped["promise_to_pay"])).status_code == 405
    assert not Workflow.objects.filter(version=2).exists()


# --- launch gate and request activation -------------------------------------------------------


def test_request_activation_with_gaps_shows_them(draft, as_editor):
    Workflow.objects.filter(pk=draft.pk).update(writeback_target="", completion_definition="")
    page = as_editor.get(_url("change", draft)).content.decode()
    assert "Ready to launch" not in page
    assert "Attach a writeback target (where outcomes are posted)." in page
    assert "Write the one-sentence completion definition" in page

    response = as_editor.post(_url("request_activation", draft), follow=True)

    [message] = _messages(response)
    assert message.startswith("Not ready to launch:")
    assert "Attach a writeback target (where outcomes are posted)." in message
    draft.refresh_from_db()
    assert draft.status == Workflow.Status.DRAFT
    assert not WorkflowApproval.objects.exists()


def test_request_activation_sends_a_ready_draft_for_approval(draft, editor, as_editor):
    response = as_editor.post(_url("request_activation", draft))

    assert response.status_code == 302
    draft.refresh_from_db()
    assert draft.status == Workflow.Status.PENDING_APPROVAL
    approval = WorkflowApproval.objects.get(workflow=draft)
    assert approval.requested_by == editor
    assert approval.decision == WorkflowApproval.Decision.PENDING
    page = as_editor.get(_url("change", draft)).content.decode()
    assert 'name="_save"' not in page  # awaiting approval: read-only
    assert _url("change", approval) in page


# --- four-eyes approval -----------------------------------------------------------------------


@pytest.fixture
def changed_request(draft, editor) -> WorkflowApproval:
    """v2 with a changed rule, sent for approval by its author, the editor."""
    WorkflowAction.objects.filter(workflow=draft, action="promise_to_pay").update(
        eligible_when="data.days_past_due < 60"
    )
    return workflow_request_activation(workflow=draft, user=editor)


def test_approval_page_shows_what_changed_before_and_after(changed_request, as_approver):
    response = as_approver.get(_url("change", changed_request))
    assert response.status_code == 200
    page = response.content.decode()
    assert "Promise to pay › eligible when" in page
    assert "data.days_past_due &lt; 90 &amp;&amp; data.balance &lt;= 5000.0" in page  # before
    assert "data.days_past_due &lt; 60" in page  # after
    assert '"before"' not in page
    assert 'value="Approve"' in page and 'value="Reject"' in page

    listing = as_approver.get(reverse("admin:policies_workflowapproval_changelist"))
    assert "Actions" in listing.content.decode()


def test_author_cannot_approve(changed_request, as_editor):
    response = as_editor.post(_url("approve", changed_request), follow=True)

    assert _messages(response) == [
        "The author of a change cannot approve it; ask a second approver."
    ]
    changed_request.refresh_from_db()
    assert changed_request.decision == WorkflowApproval.Decision.PENDING
    assert changed_request.workflow.status == Workflow.Status.PENDING_APPROVAL


def test_approver_activates_v2_and_retires_v1(shipped, changed_request, approver, as_approver):
    response = as_approver.post(
        _url("approve", changed_request), {"note": "Checked with Risk."}, follow=True
    )

    assert response.status_code == 200
    v1 = Workflow.objects.get(key="promise_to_pay", version=1)
    v2 = Workflow.objects.get(key="promise_to_pay", version=2)
    assert (v1.status, v2.status) == (Workflow.Status.RETIRED, Workflow.Status.ACTIVE)
    assert v2.activated_at is not None
    changed_request.refresh_from_db()
    assert changed_request.decision == WorkflowApproval.Decision.APPROVED
    assert changed_request.decided_by == approver
    assert changed_request.decided_at is not None
    assert changed_request.note == "Checked with Risk."

    page = response.content.decode()
    assert "Approved" in page
    assert 'value="Approve"' not in page  # decided: no more buttons
    # The record stays: nobody can delete it, not even a superuser.
    editor_client = _logged_in(get_user_model().objects.get(username="editor"))
    assert editor_client.post(_url("delete", changed_request), {"post": "yes"}).status_code == 403
    assert WorkflowApproval.objects.filter(pk=changed_request.pk).exists()


def test_approve_needs_the_approver_permission(changed_request):
    viewer = _staff_user("viewer", "view_workflow", "view_workflowapproval")
    client = _logged_in(viewer)
    page = client.get(_url("change", changed_request)).content.decode()
    assert 'value="Approve"' not in page

    assert client.post(_url("approve", changed_request)).status_code == 403
    assert client.post(_url("reject", changed_request)).status_code == 403
    changed_request.refresh_from_db()
    assert changed_request.decision == WorkflowApproval.Decision.PENDING


def test_reject_returns_the_version_to_draft(changed_request, approver, as_approver):
    response = as_approver.post(_url("reject", changed_request), {"note": "Keep 90 days."})

    assert response.status_code == 302
    changed_request.refresh_from_db()
    assert changed_request.decision == WorkflowApproval.Decision.REJECTED
    assert changed_request.decided_by == approver
    assert changed_request.note == "Keep 90 days."
    workflow = changed_request.workflow
    assert workflow.status == Workflow.Status.DRAFT
    assert Workflow.objects.get(key="promise_to_pay", version=1).status == "active"
    # A draft with an approval record keeps it: the draft cannot be deleted.
    editor_client = _logged_in(get_user_model().objects.get(username="editor"))
    assert editor_client.post(_url("delete", workflow), {"post": "yes"}).status_code == 403


# --- preview ----------------------------------------------------------------------------------


def _prefilled_trigger(client: Client, workflow: Workflow) -> dict[str, Any]:
    response = client.get(_url("preview", workflow))
    assert response.status_code == 200
    return json.loads(response.context["form"]["trigger"].value())


@pytest.mark.parametrize("key", SHIPPED_KEYS)
def test_preview_prefills_a_valid_sample_for_each_shipped_workflow(shipped, as_editor, key):
    trigger = _prefilled_trigger(as_editor, shipped[key])

    response = as_editor.post(_url("preview", shipped[key]), {"trigger": json.dumps(trigger)})

    assert "trigger_errors" not in response.context
    assert response.context["offer"]["actions"]


def test_preview_shows_the_offer_for_a_sample_trigger(shipped, as_approver):
    workflow = shipped["promise_to_pay"]
    trigger = _prefilled_trigger(as_approver, workflow)
    trigger["customer"]["flags"] = ["vulnerable"]
    trigger["data"].update(balance="6000.00", days_past_due=22, currency="GBP")

    response = as_approver.post(_url("preview", workflow), {"trigger": json.dumps(trigger)})

    page = response.content.decode()
    offer = response.context["offer"]
    assert [action["label"] for action in offer["actions"]] == [
        "Payment plan",
        "Dispute",
        "Request a callback",
    ]
    assert "12 monthly payments of 500.00 GBP (last 500.00)" in page
    assert "09:00-12:00, 12:00-17:00, 17:00-20:00" in page
    # promise_to_pay is left out by its rule, which the page names
    [excluded] = offer["excluded"]
    assert excluded["label"] == "Promise to pay"
    assert "data.days_past_due &lt; 90 &amp;&amp; data.balance &lt;= 5000.0" in page
    assert "rule is false" in page
    assert [fork.name for fork in offer["forks"]] == ["Customer needs extra care"]
    assert "Vulnerable or bereaved customers are handled by a trained agent" in page
    assert '"actions"' not in page  # readable HTML, not the offer's JSON


def test_preview_shows_field_errors_for_a_bad_trigger(shipped, as_editor):
    workflow = shipped["promise_to_pay"]
    trigger = _prefilled_trigger(as_editor, workflow)
    trigger["data"]["balance"] = "lots"
    del trigger["data"]["currency"]

    response = as_editor.post(_url("preview", workflow), {"trigger": json.dumps(trigger)})

    errors = dict(response.context["trigger_errors"])
    assert errors["data.balance"] == ["Must be a number, e.g. 1250.00."]
    assert errors["data.currency"] == ["This field is required."]
    assert "data.balance" in response.content.decode()
    assert "offer" not in response.context


def test_preview_survives_a_fork_rule_that_fails_on_the_data(draft, as_editor):
    ForkRule.objects.create(
        workflow=draft, name="Balance per day", when="100 / data.days_past_due > 1", reason="x"
    )
    draft.save()  # a new updated_at: the blueprint is compiled again
    trigger = _prefilled_trigger(as_editor, draft)
    trigger["data"]["days_past_due"] = 0

    response = as_editor.post(_url("preview", draft), {"trigger": json.dumps(trigger)})

    assert response.status_code == 200
    assert response.context["offer"]["forks"] == []


@pytest.mark.parametrize(
    ("text", "error"),
    [("{not json", "Enter a valid JSON."), ("[1, 2]", "Paste one JSON object")],
)
def test_preview_refuses_text_that_is_not_a_trigger_object(shipped, as_editor, text, error):
    response = as_editor.post(_url("preview", shipped["promise_to_pay"]), {"trigger": text})

    assert response.status_code == 200
    assert response.context["form"].errors["trigger"][0].startswith(error)


# --- dry run ----------------------------------------------------------------------------------


def test_dry_run_counts_offers_and_forks(shipped, as_approver):
    client, _ = factories.api_client()
    factories.case(client)
    factories.case(client, data={"balance": "6000.00"})  # promise_to_pay's rule is false
    factories.case(client, customer={"flags": ["vulnerable"]})
    factories.case(client, data={"balance": "150.00"})  # too small for a plan

    response = as_approver.get(_url("dry_run", shipped["promise_to_pay"]))

    assert response.status_code == 200
    result = response.context["result"]
    assert result["cases"] == 4
    offered = {label: count for label, count, _ in result["offered"]}
    assert offered == {
        "Promise to pay": 3,
        "Payment plan": 3,
        "Dispute": 4,
        "Request a callback": 4,
        "Nothing to offer": 0,
    }
    forked = {name: count for name, _, count, _ in result["forked"]}
    assert forked == {
        "Customer needs extra care": 1,
        "Complaint or insolvency open": 0,
        "High balance": 0,
    }
    assert result["not_forked"] == 3
    assert "75%" in response.content.decode()


# --- pause and resume -------------------------------------------------------------------------


def test_pause_and_resume(shipped, as_editor):
    workflow = shipped["failed_payment"]

    as_editor.post(_url("pause", workflow))
    workflow.refresh_from_db()
    assert workflow.status == Workflow.Status.PAUSED
    page = as_editor.get(_url("change", workflow)).content.decode()
    assert ">Resume</button>" in page and ">Pause</button>" not in page

    response = as_editor.post(_url("pause", workflow), follow=True)
    assert _messages(response) == ["Only an active workflow can be paused."]

    as_editor.post(_url("resume", workflow))
    workflow.refresh_from_db()
    assert workflow.status == Workflow.Status.ACTIVE


# --- who may open what ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "method"),
    [
        ("preview", "get"),
        ("dry_run", "get"),
        ("new_version", "post"),
        ("request_activation", "post"),
        ("pause", "post"),
        ("resume", "post"),
    ],
)
def test_custom_views_need_staff_and_the_model_permission(shipped, name, method):
    workflow = shipped["promise_to_pay"]
    url = _url(name, workflow)

    not_staff = get_user_model().objects.create_user("customer-support")
    response = getattr(_logged_in(not_staff), method)(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))

    no_permission = _staff_user("no-permission")
    assert getattr(_logged_in(no_permission), method)(url).status_code == 403

    # view is enough to look, not to change
    viewer = _staff_user("viewer", "view_workflow")
    expected = 200 if method == "get" else 403
    assert getattr(_logged_in(viewer), method)(url).status_code == expected
    workflow.refresh_from_db()
    assert workflow.status == Workflow.Status.ACTIVE
    assert not Workflow.objects.filter(version=2).exists()


def test_viewer_sees_a_draft_read_only(draft):
    viewer = _logged_in(_staff_user("viewer", "view_workflow"))
    page = viewer.get(_url("change", draft)).content.decode()
    assert 'name="_save"' not in page
    assert "Request activation" not in page
