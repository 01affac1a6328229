"""Staff roles: the groups hold exactly what staff/roles.py says, and each role, signed in to
the admin, can do its job and gets 403 (or no button) for what it must not do."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from channels.models import MessageTemplate
from channels.sequences import sequences_install_shipped
from metrics.services import unit_cost_get
from policies.models import Workflow
from policies.services import (
    workflow_new_version,
    workflow_request_activation,
    workflows_install_shipped,
)
from staff.roles import PROJECT_APPS, ROLES, role_permission_labels
from tests import factories
from tests.channels.test_admin import template_data

pytestmark = pytest.mark.django_db


@pytest.fixture
def shipped(db) -> dict[str, Workflow]:
    factories.writeback_target_shipped()
    workflows = {workflow.key: workflow for workflow in workflows_install_shipped()}
    sequences_install_shipped()
    return workflows


@pytest.fixture
def draft(shipped) -> Workflow:
    return workflow_new_version(workflow=shipped["promise_to_pay"], user=factories.user())


@pytest.fixture
def template(shipped) -> MessageTemplate:
    return MessageTemplate.objects.filter(workflow_key="promise_to_pay", channel="sms").first()


def _url(name: str, *args) -> str:
    return reverse(name, args=args)


def _actions(client: Client, changelist: str) -> set[str]:
    """The admin actions a changelist offers this person."""
    page = client.get(reverse(changelist))
    assert page.status_code == 200
    form = page.context["action_form"]  # None when there is no action to offer
    return {value for value, _ in form.fields["action"].choices if value} if form else set()


# --- the definition -----------------------------------------------------------------------------


def _labels(permissions) -> set[str]:
    return {f"{p.content_type.app_label}.{p.codename}" for p in permissions}


def test_groups_hold_exactly_the_defined_permissions():
    """Also the guard for new models: a migration that adds one must apply the roles again
    (staff.roles.roles_apply), or the Auditor and Administrator miss it and this fails."""
    existing = _labels(Permission.objects.select_related("content_type"))
    for role in ROLES:
        group = Group.objects.get(name=role)
        held = _labels(group.permissions.select_related("content_type"))
        assert held == role_permission_labels(role, existing=existing), role


def test_least_privilege_boundaries():
    existing = _labels(Permission.objects.select_related("content_type"))
    agent, operations, risk, auditor = (
        role_permission_labels(role, existing=existing)
        for role in ("Agent", "Operations", "Risk", "Auditor")
    )
    assert not {p for p in agent if p.startswith(("policies.", "auth.", "metrics."))}
    assert not {p for p in agent if "template" in p or "sequence" in p}
    assert "policies.approve_workflow" not in operations
    assert "agents.approve_offer" not in operations
    assert not {p for p in operations if p.startswith("auth.")}
    assert {"policies.approve_workflow", "agents.approve_offer"} <= risk
    assert not {p for p in risk if p.split(".")[1].startswith(("add_", "change_", "delete_"))}
    assert all(p.split(".")[1].startswith("view_") for p in auditor)
    assert "staff.view_auditentry" in auditor
    assert {p.split(".")[0] for p in auditor} == set(PROJECT_APPS)


def test_sync_command_restores_a_group_changed_by_hand():
    agent = Group.objects.get(name="Agent")
    agent.permissions.add(Permission.objects.get(codename="change_workflow"))
    agent.permissions.remove(Permission.objects.get(codename="work_queue"))

    out = StringIO()
    call_command("staff", "roles", "sync", stdout=out)

    codenames = set(agent.permissions.values_list("codename", flat=True))
    assert "change_workflow" not in codenames and "work_queue" in codenames
    assert "Agent: 11 permissions" in out.getvalue()
    listing = StringIO()
    call_command("staff", "roles", "list", stdout=listing)
    assert "Administrator:" in listing.getvalue()


def test_a_role_naming_a_missing_permission_is_refused(monkeypatch):
    monkeypatch.setitem(ROLES, "Agent", ["agents.no_such_permission"])
    with pytest.raises(LookupError, match=r"agents\.no_such_permission"):
        role_permission_labels("Agent", existing={"agents.view_task"})


# --- Agent ----------------------------------------------------------------------------------------


def test_agent_works_the_queue_and_reads_cases_but_configures_nothing(as_role, draft, template):
    agent = as_role("Agent")
    case = factories.case()

    assert agent.get(_url("admin:agents_task_changelist")).status_code == 200
    assert agent.get(_url("admin:cases_case_change", case.pk)).status_code == 200
    assert agent.get(_url("admin:channels_message_changelist")).status_code == 200

    assert agent.get(_url("admin:policies_workflow_change", draft.pk)).status_code == 403
    assert agent.post(_url("admin:policies_workflow_change", draft.pk), {}).status_code == 403
    assert agent.get(_url("admin:channels_messagetemplate_changelist")).status_code == 403
    changed = template_data(template, body="Pay now {{ link }}")
    response = agent.post(_url("admin:channels_messagetemplate_change", template.pk), changed)
    assert response.status_code == 403
    for page in (
        "admin:channels_sequence_changelist",
        "admin:writeback_writebacktarget_changelist",
        "admin:metrics_unitcost_changelist",
        "admin:auth_user_changelist",
        "admin:staff_auditentry_changelist",
        "admin-metrics",
    ):
        assert agent.get(_url(page)).status_code == 403, page
    assert "redrive" not in _actions(agent, "admin:writeback_outcome_changelist")
    template.refresh_from_db()
    assert "Pay now" not in template.body


# --- Operations -----------------------------------------------------------------------------------


def test_operations_configure_but_neither_approve_nor_manage_people(
    as_role, draft, template, member
):
    operations = as_role("Operations")

    changed = template_data(template, body="Hello {{ customer.name }}, see {{ link }}")
    response = operations.post(_url("admin:channels_messagetemplate_change", template.pk), changed)
    assert response.status_code == 302
    template.refresh_from_db()
    assert template.body.startswith("Hello")
    assert operations.get(_url("admin:policies_workflow_change", draft.pk)).status_code == 200
    assert operations.get(_url("admin:policies_workflow_add")).status_code == 200
    assert operations.get(_url("admin:metrics_unitcost_changelist")).status_code == 200
    assert operations.get(_url("admin-metrics")).status_code == 200
    assert "reset_breaker" in _actions(operations, "admin:writeback_writebacktarget_changelist")

    approval = workflow_request_activation(workflow=draft, user=factories.user())
    approve = _url("admin:policies_workflowapproval_approve", approval.pk)
    assert operations.post(approve).status_code == 403
    draft.refresh_from_db()
    assert draft.status == Workflow.Status.PENDING_APPROVAL
    for page in (
        "admin:auth_user_changelist",
        "admin:auth_group_changelist",
        "admin:staff_auditentry_changelist",
        "admin:agents_task_changelist",
    ):
        assert operations.get(_url(page)).status_code == 403, page
    someone = member("Agent")
    assert operations.get(_url("admin:auth_user_change", someone.pk)).status_code == 403


# --- Risk -----------------------------------------------------------------------------------------


def test_risk_approves_but_cannot_edit(as_role, draft, template):
    risk = as_role("Risk")
    approval = workflow_request_activation(workflow=draft, user=factories.user())

    assert risk.get(_url("admin:policies_workflow_change", draft.pk)).status_code == 200
    response = risk.post(_url("admin:policies_workflowapproval_approve", approval.pk))
    assert response.status_code == 302
    draft.refresh_from_db()
    assert draft.status == Workflow.Status.ACTIVE

    assert risk.get(_url("admin:channels_messagetemplate_add")).status_code == 403
    changed = template_data(template, body="Changed by risk {{ link }}")
    response = risk.post(_url("admin:channels_messagetemplate_change", template.pk), changed)
    assert response.status_code == 403
    assert risk.get(_url("admin:auth_user_changelist")).status_code == 403
    assert risk.get(_url("admin-metrics")).status_code == 200


def test_risk_cannot_change_a_draft(as_role, draft):
    risk = as_role("Risk")
    response = risk.post(_url("admin:policies_workflow_change", draft.pk), {"name": "Risky"})
    assert response.status_code == 403
    draft.refresh_from_db()
    assert draft.name != "Risky"


# --- Auditor --------------------------------------------------------------------------------------


def test_auditor_reads_every_project_page(as_role, shipped):
    auditor = as_role("Auditor")
    factories.case()
    unit_cost_get()
    for model in admin.site._registry:
        if model._meta.app_label not in PROJECT_APPS:
            continue
        opts = model._meta
        response = auditor.get(_url(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
        # Sequence steps are listed on their sequence's page and redirect there.
        assert response.status_code in (200, 302), opts.label
    assert auditor.get(_url("admin-metrics")).status_code == 200
    assert auditor.get(_url("admin:staff_auditentry_changelist")).status_code == 200
    assert auditor.get(_url("admin:auth_user_changelist")).status_code == 403


def test_auditor_cannot_change_anything(as_role, draft, template):
    auditor = as_role("Auditor")
    case = factories.case()
    cost = unit_cost_get()
    target = draft.writeback_target

    posts = [
        _url("admin:policies_workflow_change", draft.pk),
        _url("admin:channels_messagetemplate_change", template.pk),
        _url("admin:cases_customer_change", case.customer_id),
        _url("admin:cases_case_change", case.pk),
        _url("admin:metrics_unitcost_change", cost.pk),
        _url("admin:policies_workflow_add"),
        _url("admin:channels_messagetemplate_add"),
        _url("admin:policies_workflow_new_version", draft.pk),
        _url("admin:policies_workflow_request_activation", draft.pk),
    ]
    for url in posts:
        assert auditor.post(url, {"name": "changed"}).status_code == 403, url
    # The read-only pages show no save button and the list pages no actions that write.
    page = auditor.get(_url("admin:channels_messagetemplate_change", template.pk))
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert not _actions(auditor, "admin:writeback_outcome_changelist")
    assert not _actions(auditor, "admin:writeback_writebacktarget_changelist")
    assert not _actions(auditor, "admin:writeback_reconciliationreport_changelist")
    assert not _actions(auditor, "admin:cases_apiclient_changelist")
    assert target  # the shipped workflow names a target the auditor could only read
    phone = _url("admin-channels-phone-customer", case.customer_id)
    assert auditor.get(phone).status_code == 200
    assert auditor.post(phone, {"text": "STOP"}).status_code == 403


# --- Administrator --------------------------------------------------------------------------------


def test_administrator_manages_people_and_devices(as_role, member):
    administrator = as_role("Administrator")
    someone = member("Agent")
    for page in (
        "admin:auth_user_changelist",
        "admin:auth_group_changelist",
        "admin:otp_totp_totpdevice_changelist",
        "admin:staff_auditentry_changelist",
    ):
        assert administrator.get(_url(page)).status_code == 200, page
    assert administrator.get(_url("admin:auth_user_change", someone.pk)).status_code == 200
    assert "reset_two_factor" in _actions(administrator, "admin:otp_totp_totpdevice_changelist")
