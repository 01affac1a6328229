"""The staff audit trail: admin edits leave who, what and before/after (never a secret);
sign-in and lockout events leave security entries; entries cannot be changed or removed by
any path; the trail streams from the events export to Auditors only."""

from __future__ import annotations

import csv
import io
import json

import pytest
import yaml
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from channels.models import MessageTemplate
from channels.sequences import sequence_export, sequences_install_shipped
from miniapp.identity import known_facts_verify
from policies.models import Workflow
from policies.services import workflow_new_version
from staff.models import AuditEntry
from staff.services import audit_record
from tests import factories
from tests.channels.test_admin import template_data
from tests.policies.test_admin import _form_data, _row

pytestmark = pytest.mark.django_db

PASSWORD = "a-staff-password-for-tests"


@pytest.fixture
def draft(workflow) -> Workflow:
    return workflow_new_version(workflow=workflow, user=factories.user())


@pytest.fixture
def operations(member):
    return member("Operations", "olive")


@pytest.fixture
def as_operations(operations) -> Client:
    client = Client()
    client.force_login(operations)
    return client


def _changes(**filters) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(kind="change", **filters).order_by("id"))


# --- changes made in the admin --------------------------------------------------------------------


def test_a_workflow_edit_records_before_and_after(draft, operations, as_operations):
    url = reverse("admin:policies_workflow_change", args=[draft.pk])
    data = _form_data(as_operations.get(url))
    row = _row(data, "actions", "action", "promise_to_pay")
    before_rule = data[f"actions-{row}-eligible_when"]
    data[f"actions-{row}-eligible_when"] = "data.days_past_due < 60"
    data["completion_definition"] = "The promise is on the account."
    old_definition = draft.completion_definition

    assert as_operations.post(url, data).status_code == 302

    [workflow_entry] = _changes(target_type="policies.workflow", target_id=str(draft.pk))
    assert workflow_entry.user == operations and workflow_entry.username == "olive"
    assert workflow_entry.action == "change"
    assert workflow_entry.changes == {
        "completion_definition": [old_definition, "The promise is on the account."]
    }
    assert workflow_entry.ip_address == "127.0.0.1"
    [action_entry] = _changes(target_type="policies.workflowaction")
    assert action_entry.changes == {"eligible_when": [before_rule, "data.days_past_due < 60"]}
    assert action_entry.target_repr == "Promise to pay"


def test_template_add_change_and_delete(workflow, as_operations):
    sequences_install_shipped()
    template = MessageTemplate.objects.filter(workflow_key="promise_to_pay").first()
    old_body = template.body
    change = reverse("admin:channels_messagetemplate_change", args=[template.pk])
    new_body = "Hi {{ customer.name }}: {{ link }}"
    assert as_operations.post(change, template_data(template, body=new_body)).status_code == 302
    [edit] = _changes(target_type="channels.messagetemplate", action="change")
    assert edit.changes == {"body": [old_body, new_body]}

    added = template_data(template, name="extra_nudge", body="Nudge {{ link }}")
    assert (
        as_operations.post(reverse("admin:channels_messagetemplate_add"), added).status_code == 302
    )
    [add] = _changes(target_type="channels.messagetemplate", action="add")
    assert add.changes["name"] == [None, "extra_nudge"]

    extra = MessageTemplate.objects.get(name="extra_nudge")
    delete = reverse("admin:channels_messagetemplate_delete", args=[extra.pk])
    assert as_operations.post(delete, {"post": "yes"}).status_code == 302
    [removed] = _changes(target_type="channels.messagetemplate", action="delete")
    assert removed.target_id == str(extra.pk)
    assert removed.changes["body"] == ["Nudge {{ link }}", None]


def test_a_sequence_file_import_is_recorded(workflow, as_operations):
    sequences_install_shipped()
    spec = sequence_export(workflow_key="promise_to_pay")
    spec["name"] = "Imported reminders"
    upload = SimpleUploadedFile("seq.yaml", yaml.safe_dump(spec).encode())

    answer = as_operations.post(reverse("admin:channels_sequence_import"), {"file": upload})

    assert answer.status_code == 302
    [entry] = _changes(action="import")
    assert entry.target_type == "channels.sequence" and entry.username == "olive"
    assert ["first_reminder", "sms", "en"] in entry.detail["templates"]
    # The sequence row was replaced in place: its entry shows the name before and after.
    [renamed] = [e for e in _changes(target_type="channels.sequence") if "name" in e.changes]
    assert renamed.action == "change"
    assert renamed.changes["name"][1] == "Imported reminders"
    assert renamed.changes["name"][0] != "Imported reminders"
    assert _changes(target_type="channels.messagetemplate", action="delete")


def test_user_changes_record_groups_and_hide_the_password(member):
    administrator = member("Administrator", "root")
    person = factories.user("pat")
    client = Client()
    client.force_login(administrator)

    password_url = reverse("admin:auth_user_password_change", args=[person.pk])
    new_password = "Another-long-password-42"
    answer = client.post(
        password_url,
        {"password1": new_password, "password2": new_password, "usable_password": "true"},
    )
    assert answer.status_code == 302
    person.refresh_from_db()
    [entry] = _changes(target_type="auth.user", target_id=str(person.pk))
    assert entry.changes == {"password": "(hidden)"}
    assert person.password not in json.dumps(entry.changes)

    person.groups.add(Group.objects.get(name="Risk"))  # outside a request: not recorded
    assert len(_changes(target_type="auth.user")) == 1
    joined = person.date_joined
    data = {
        "username": "pat",
        "is_active": "on",
        "is_staff": "on",
        "date_joined_0": joined.date().isoformat(),
        "date_joined_1": joined.strftime("%H:%M:%S"),
        "groups": [str(Group.objects.get(name="Agent").pk)],
    }
    answer = client.post(reverse("admin:auth_user_change", args=[person.pk]), data)
    assert answer.status_code == 302
    groups = [
        e.changes["groups"] for e in _changes(target_type="auth.user") if "groups" in e.changes
    ]
    assert groups[0][0] == ["Risk"] and groups[-1][1] == ["Agent"]


def test_changes_outside_admin_requests_are_not_tracked(draft):
    draft.name = "Renamed by a job"
    draft.save()
    assert not AuditEntry.objects.filter(kind="change").exists()


def test_the_service_records_case_actions_and_hides_secrets(workflow):
    case = factories.case()
    agent = factories.user("alex")
    entry = audit_record(
        user=agent,
        action="agent_note",
        target=case,
        changes={"offer": [{"a": 1}, {"a": 2}], "api_token": ["x", "y"]},
        detail={"reason": "customer called", "password": "hunter2"},
    )
    entry.refresh_from_db()
    assert (entry.kind, entry.username, entry.target_type) == ("change", "alex", "cases.case")
    assert entry.target_id == str(case.pk)
    assert entry.changes == {"offer": [{"a": 1}, {"a": 2}], "api_token": "(hidden)"}
    assert entry.detail == {"reason": "customer called", "password": "(hidden)"}


def test_a_customers_personal_fields_are_masked(workflow):
    # An erasure cannot reach an append-only row, so personal values never enter one.
    case = factories.case()
    customer = case.customer
    entry = audit_record(
        user=factories.user("alex"),
        action="change",
        target=customer,
        changes={
            "name": ["Ada Lovelace", "Ada King"],
            "phone": ["+447700900123", "+447700900456"],
            "address": [{"lines": ["1 Main St"]}, {"lines": ["2 Main St"]}],
            "locale": ["en", "en-GB"],
        },
    )
    entry.refresh_from_db()
    assert entry.changes == {
        "name": "(personal data)",
        "phone": "(personal data)",
        "address": "(personal data)",
        "locale": ["en", "en-GB"],
    }
    assert customer.name not in entry.target_repr and customer.external_id not in entry.target_repr


# --- security events ------------------------------------------------------------------------------


@pytest.fixture
def dana(db):
    user = factories.user("dana")
    user.set_password(PASSWORD)
    user.save()
    return user


def test_login_failed_login_and_logout_are_recorded(dana, fresh_counters):
    client = Client()
    login = reverse("admin:login")
    client.post(login, {"username": "dana", "password": "wrong-guess"})
    client.post(login, {"username": "nobody", "password": "wrong-guess"})
    client.post(login, {"username": "dana", "password": PASSWORD})
    client.post(reverse("admin:logout"))

    entries = list(AuditEntry.objects.filter(kind="security").order_by("id"))
    assert [(e.action, e.username) for e in entries] == [
        ("login_failed", "dana"),
        ("login_failed", "nobody"),
        ("login", "dana"),
        ("logout", "dana"),
    ]
    assert entries[0].user == dana and entries[1].user is None
    assert all(e.ip_address == "127.0.0.1" for e in entries)
    assert "wrong-guess" not in json.dumps([e.detail for e in entries])


@override_settings(STAFF_2FA_REQUIRED=True)
def test_a_wrong_two_factor_code_is_recorded(dana):
    from django_otp.plugins.otp_totp.models import TOTPDevice

    TOTPDevice.objects.create(user=dana, name="phone", confirmed=True)
    client = Client()
    client.force_login(dana)
    client.post(reverse("staff-2fa-verify"), {"token": "000000"})
    entry = AuditEntry.objects.get(action="otp_failed")
    assert (entry.kind, entry.user, entry.target_type) == ("security", dana, "otp_totp.totpdevice")


def test_a_customer_code_lockout_is_recorded(workflow):
    case = factories.case_in_state("engaged")
    for _ in range(5):
        known_facts_verify(case=case, answers={"postcode": "ZZ9 9ZZ"})
    entry = AuditEntry.objects.get(action="customer_code_lockout")
    assert (entry.kind, entry.user, entry.username) == ("security", None, "")
    assert (entry.target_type, entry.target_id) == ("cases.case", str(case.pk))
    assert entry.detail == {"factor": "known_fact", "failures": 5}


# --- append-only ----------------------------------------------------------------------------------


def test_entries_cannot_be_changed_or_deleted(dana):
    entry = audit_record(user=dana, action="login", target=None)
    entry.action = "logout"
    with pytest.raises(RuntimeError, match="append-only"):
        entry.save()
    with pytest.raises(RuntimeError, match="append-only"):
        entry.delete()
    with pytest.raises(RuntimeError, match="append-only"):
        AuditEntry.objects.filter(pk=entry.pk).update(action="logout")
    with pytest.raises(RuntimeError, match="append-only"):
        AuditEntry.objects.all().delete()
    assert AuditEntry.objects.get(pk=entry.pk).action == "login"


def test_the_admin_offers_no_way_to_change_an_entry(dana, admin_client):
    entry = audit_record(user=dana, action="login", target=None)
    change = reverse("admin:staff_auditentry_change", args=[entry.pk])
    page = admin_client.get(change)
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert admin_client.post(change, {"action": "logout"}).status_code == 403
    delete = reverse("admin:staff_auditentry_delete", args=[entry.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert admin_client.get(reverse("admin:staff_auditentry_add")).status_code == 403
    listing = admin_client.get(reverse("admin:staff_auditentry_changelist"))
    assert listing.context["action_form"] is None  # no "delete selected"
    assert "stream=audit&amp;format=csv" in listing.content.decode()
    assert AuditEntry.objects.filter(pk=entry.pk, action="login").exists()


def test_deleting_a_user_keeps_their_entries(dana):
    entry = audit_record(user=dana, action="login", target=None)
    dana.delete()
    entry.refresh_from_db()
    assert (entry.user, entry.username) == (None, "dana")


def test_the_list_filters_and_searches(dana, as_role):
    audit_record(user=dana, action="login", target=None)
    audit_record(user=None, username="mallory", action="login_failed", target=None)
    auditor = as_role("Auditor")
    listing = reverse("admin:staff_auditentry_changelist")
    failed = auditor.get(listing, {"action": "login_failed"})
    assert [e.username for e in failed.context["cl"].result_list] == ["mallory"]
    found = auditor.get(listing, {"q": "dana", "kind__exact": "security"})
    assert {e.action for e in found.context["cl"].result_list} == {"login"}


# --- the export -----------------------------------------------------------------------------------


def _lines(response) -> list[dict]:
    return [json.loads(line) for line in b"".join(response.streaming_content).splitlines()]


def test_auditors_stream_the_trail(dana, as_role):
    first = audit_record(user=dana, action="login", target=None)
    second = audit_record(
        user=dana, action="change", target=dana, changes={"email": ["", "d@example.com"]}
    )
    auditor = as_role("Auditor")  # its force_login is a third entry
    url = reverse("api:events-export")

    answer = auditor.get(url, {"stream": "audit"})
    assert answer.status_code == 200
    assert answer["Content-Type"] == "application/x-ndjson"
    rows = _lines(answer)
    assert [row["id"] for row in rows][:2] == [str(first.pk), str(second.pk)]
    assert rows[1]["changes"] == {"email": ["", "d@example.com"]}
    assert rows[1]["target_type"] == "auth.user" and rows[1]["username"] == "dana"

    resumed = _lines(auditor.get(url, {"stream": "audit", "after": first.pk}))
    assert resumed[0]["id"] == str(second.pk)
    later = timezone.now() + timezone.timedelta(days=1)
    assert _lines(auditor.get(url, {"stream": "audit", "since": later.isoformat()})) == []

    table = auditor.get(url, {"stream": "audit", "format": "csv"})
    reader = list(csv.reader(io.StringIO(b"".join(table.streaming_content).decode())))
    assert reader[0][:4] == ["id", "created_at", "kind", "action"]
    assert reader[1][3] == "login"

    assert auditor.get(url, {"stream": "everything"}).status_code == 400
    assert auditor.get(url, {"stream": "audit", "after": "x"}).status_code == 400


def test_only_auditors_and_administrators_get_the_trail(dana, as_role, api):
    url = reverse("api:events-export")
    assert as_role("Agent").get(url, {"stream": "audit"}).status_code == 403
    assert as_role("Operations").get(url, {"stream": "audit"}).status_code == 403
    assert as_role("Administrator").get(url, {"stream": "audit"}).status_code == 200
    refused = api.get(url, {"stream": "audit"})
    assert refused.status_code == 403
    assert "API keys cannot read it" in refused.json()["detail"]
    assert APIClient().get(url, {"stream": "audit"}).status_code == 401
    # The default stream is the API key's case events, as before; staff sessions get none.
    assert api.get(url).status_code == 200
    assert as_role("Auditor").get(url).status_code == 403


@override_settings(STAFF_2FA_REQUIRED=True)
def test_the_trail_needs_a_verified_session_when_two_factor_is_on(as_role):
    assert (
        as_role("Auditor").get(reverse("api:events-export"), {"stream": "audit"}).status_code == 403
    )
