"""The outreach admin: sequences and their validation, YAML export and import, the template
preview, the demo phone and its reply box, the read-only records and the contact ledger."""

from __future__ import annotations

import datetime as dt
import re
from urllib.parse import urlparse
from zoneinfo import ZoneInfo

import pytest
import yaml
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from cases.models import Case, CaseEvent, Customer
from channels.dispatch import messages_dispatch
from channels.models import (
    InboundMessage,
    Message,
    MessageTemplate,
    OutboxEntry,
    Sequence,
    SequenceStep,
    StepVariant,
)
from channels.sequences import sequence_export, sequences_install_shipped
from channels.services import outreach_advance, outreach_begin
from policies.services import case_prepare
from tests import factories
from tests.channels.test_dispatch import queued_case

LINK = re.compile(r'<a href="(http://[^"]+/m/[A-Za-z0-9_-]{40,}/)"')


@pytest.fixture
def shipped(db):
    factories.workflow_shipped("promise_to_pay")
    sequences_install_shipped()
    return Sequence.objects.get(workflow_key="promise_to_pay")


@pytest.fixture
def staff(db) -> Client:
    """An operations user with the channels permissions and read access to cases."""
    user = factories.user()
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="channels"),
        *Permission.objects.filter(content_type__app_label="cases", codename__startswith="view"),
    )
    client = Client()
    client.force_login(user)
    return client


def sequence_data(sequence: Sequence, **overrides) -> dict:
    """The sequence change form as the page posts it, with every step as it is saved."""
    steps = list(sequence.steps.all())
    data = {
        "name": sequence.name,
        "active": "on" if sequence.active else "",
        "contact_window_start": sequence.contact_window_start.strftime("%H:%M"),
        "contact_window_end": sequence.contact_window_end.strftime("%H:%M"),
        "max_touches": sequence.max_touches,
        "response_window_hours": sequence.response_window_hours,
        "send_rate_per_minute": sequence.send_rate_per_minute,
        "steps-TOTAL_FORMS": len(steps),
        "steps-INITIAL_FORMS": len(steps),
        "steps-MIN_NUM_FORMS": 0,
        "steps-MAX_NUM_FORMS": 1000,
    }
    for index, step in enumerate(steps):
        row = {
            "id": step.pk,
            "sequence": sequence.pk,
            "position": step.position,
            "channel": step.channel,
            "anchor": step.anchor,
            "anchor_field": step.anchor_field,
            "offset_days": step.offset_days,
            "offset_hours": step.offset_hours,
            "send_at": step.send_at.strftime("%H:%M") if step.send_at else "",
        }
        if step.fallback:
            row["fallback"] = "on"
        data.update({f"steps-{index}-{key}": value for key, value in row.items()})
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def variant_data(step: SequenceStep, rows: list[dict]) -> dict:
    saved = list(step.variants.all())
    data = {
        "variants-TOTAL_FORMS": len(rows),
        "variants-INITIAL_FORMS": len(saved),
        "variants-MIN_NUM_FORMS": 0,
        "variants-MAX_NUM_FORMS": 1000,
    }
    for index, row in enumerate(rows):
        if index < len(saved):
            row = {"id": saved[index].pk, **row}
        row = {"step": step.pk, **row}
        data.update({f"variants-{index}-{key}": value for key, value in row.items()})
    return data


def change_url(sequence: Sequence) -> str:
    return reverse("admin:channels_sequence_change", args=[sequence.pk])


def step_forms(response):
    [steps] = [f for f in response.context["inline_admin_formsets"] if f.formset.prefix == "steps"]
    return steps.formset.forms


# --- sequences -------------------------------------------------------------------------------


def test_sequence_list_shows_settings_and_missing_templates(shipped, staff):
    MessageTemplate.objects.filter(
        workflow_key="promise_to_pay", name="second_reminder", channel="whatsapp"
    ).delete()
    page = staff.get(reverse("admin:channels_sequence_changelist")).content.decode()
    assert "Arrears reminders" in page
    assert "08:00–21:00" in page
    assert "Step 2: no whatsapp template named &#x27;second_reminder&#x27;" in page


def test_sequence_change_page_renders_and_saves(shipped, staff):
    response = staff.get(change_url(shipped))
    page = response.content.decode()
    assert response.status_code == 200
    assert "Edit variants" in page
    assert "A: first_reminder (50%), B: first_reminder_short (50%)" in page
    [step_two] = [s for s in shipped.steps.all() if s.position == 2]

    response = staff.post(
        change_url(shipped),
        sequence_data(shipped, name="Arrears, gently", **{"steps-1-offset_days": 3}),
    )

    assert response.status_code == 302, response.context and step_forms(response)
    shipped.refresh_from_db()
    step_two.refresh_from_db()
    assert shipped.name == "Arrears, gently"
    assert step_two.offset_days == 3
    assert step_two.variants.get().template_name == "second_reminder"


def test_two_steps_swap_positions(shipped, staff):
    first, second = list(shipped.steps.all())[:2]
    response = staff.post(
        change_url(shipped),
        sequence_data(shipped, **{"steps-0-position": 2, "steps-1-position": 1}),
    )
    assert response.status_code == 302
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.position, second.position) == (2, 1)
    assert second.variants.get().template_name == "second_reminder"


def test_new_step_sends_the_chosen_template(shipped, staff):
    data = sequence_data(shipped)
    data.update(
        {
            "steps-TOTAL_FORMS": 4,
            "steps-3-sequence": shipped.pk,
            "steps-3-position": 4,
            "steps-3-channel": "sms",
            "steps-3-fallback": "on",
            "steps-3-anchor": "previous",
            "steps-3-offset_days": 1,
            "steps-3-offset_hours": 0,
            "steps-3-first_template": "last_reminder",
        }
    )
    assert staff.post(change_url(shipped), data).status_code == 302
    step = shipped.steps.get(position=4)
    assert [(v.label, v.template_name, v.weight) for v in step.variants.all()] == [
        ("A", "last_reminder", 100)
    ]


def test_a_viewer_sees_the_sequence_without_editing_it(shipped, db):
    viewer = factories.user()
    viewer.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="channels", codename__in=["view_sequence", "view_sequencestep"]
        )
    )
    client = Client()
    client.force_login(viewer)
    html = client.get(change_url(shipped)).content.decode()
    assert "A: first_reminder (50%), B: first_reminder_short (50%)" in html
    assert 'name="_save"' not in html
    step = shipped.steps.get(position=1)
    assert (
        client.get(reverse("admin:channels_sequencestep_change", args=[step.pk])).status_code == 200
    )
    assert client.post(change_url(shipped), sequence_data(shipped, name="x")).status_code == 403


def test_unknown_date_field_and_missing_template_are_field_errors(shipped, staff):
    before = sequence_export(workflow_key="promise_to_pay")
    data = sequence_data(
        shipped,
        **{
            "steps-1-anchor": "date_field",
            "steps-1-anchor_field": "birthday",
            "steps-1-offset_days": -2,
            "steps-2-channel": "sms",
            "steps-2-fallback": None,
        },
    )
    data.update(
        {
            "steps-TOTAL_FORMS": 4,
            "steps-3-sequence": shipped.pk,
            "steps-3-position": 4,
            "steps-3-channel": "sms",
            "steps-3-anchor": "trigger",
            "steps-3-offset_days": 0,
            "steps-3-offset_hours": 0,
        }
    )
    MessageTemplate.objects.filter(name="last_reminder", channel="sms").delete()
    before = sequence_export(workflow_key="promise_to_pay")

    response = staff.post(change_url(shipped), data)

    assert response.status_code == 200
    forms = step_forms(response)
    assert forms[1].errors["anchor_field"] == [
        "'birthday' is not a date field of the workflow's contract (due_date)."
    ]
    assert "Variants: no sms template named 'last_reminder'." in forms[2].non_field_errors()
    assert forms[3].errors["first_template"] == ["Choose the template this step sends."]
    assert sequence_export(workflow_key="promise_to_pay") == before


def test_a_sequence_keeps_at_least_one_step(shipped, staff):
    data = sequence_data(shipped)
    for index in range(3):
        data[f"steps-{index}-DELETE"] = "on"
    response = staff.post(change_url(shipped), data)
    assert response.status_code == 200
    assert "A sequence needs at least one step." in response.content.decode()
    assert shipped.steps.count() == 3


def test_sequence_for_an_unknown_workflow_is_refused(shipped, staff):
    response = staff.post(
        reverse("admin:channels_sequence_add"),
        {
            "workflow_key": "no_such_workflow",
            "name": "Typo",
            "contact_window_start": "08:00",
            "contact_window_end": "21:00",
            "max_touches": 3,
            "response_window_hours": 72,
            "send_rate_per_minute": 0,
            "steps-TOTAL_FORMS": 0,
            "steps-INITIAL_FORMS": 0,
        },
    )
    assert response.status_code == 200
    assert "No workflow has the key &#x27;no_such_workflow&#x27;" in response.content.decode()
    assert not Sequence.objects.filter(workflow_key="no_such_workflow").exists()


# --- variants --------------------------------------------------------------------------------


def test_variant_weights_must_add_up_to_100(shipped, staff):
    step = shipped.steps.get(position=1)
    url = reverse("admin:channels_sequencestep_change", args=[step.pk])
    assert "Variants of step 1 of Arrears reminders" in staff.get(url).content.decode()

    response = staff.post(
        url,
        variant_data(
            step,
            [
                {"label": "A", "template_name": "first_reminder", "weight": 60},
                {"label": "B", "template_name": "first_reminder_short", "weight": 30},
            ],
        ),
    )

    assert response.status_code == 200
    [variants] = response.context["inline_admin_formsets"]
    assert variants.formset.forms[0].errors["weight"] == [
        "Weights must add up to 100 (they add up to 90)."
    ]
    assert sorted(step.variants.values_list("weight", flat=True)) == [50, 50]


def test_variants_are_saved_and_lead_back_to_the_sequence(shipped, staff):
    step = shipped.steps.get(position=1)
    response = staff.post(
        reverse("admin:channels_sequencestep_change", args=[step.pk]),
        variant_data(
            step,
            [
                {"label": "A", "template_name": "first_reminder", "weight": 70},
                {"label": "B", "template_name": "first_reminder_short", "weight": 30},
            ],
        ),
    )
    assert response.status_code == 302
    assert response["Location"] == change_url(shipped)
    assert list(step.variants.values_list("label", "weight")) == [("A", 70), ("B", 30)]


# --- export and import -----------------------------------------------------------------------


def test_yaml_export_and_import_round_trip(shipped, staff):
    original = sequence_export(workflow_key="promise_to_pay")
    response = staff.post(
        reverse("admin:channels_sequence_changelist"),
        {"action": "export_yaml", "_selected_action": [shipped.pk]},
    )
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="promise_to_pay.yaml"'
    exported = response.content
    assert yaml.safe_load(exported) == original

    StepVariant.objects.filter(step__sequence=shipped).update(weight=50)
    shipped.steps.filter(position=3).delete()
    MessageTemplate.objects.filter(workflow_key="promise_to_pay", channel="email").delete()

    response = staff.post(
        reverse("admin:channels_sequence_import"),
        {"file": SimpleUploadedFile("promise_to_pay.yaml", exported)},
    )

    assert response.status_code == 302
    assert sequence_export(workflow_key="promise_to_pay") == original


def test_import_lists_every_problem_and_writes_nothing(shipped, staff):
    before = sequence_export(workflow_key="promise_to_pay")
    templates = MessageTemplate.objects.count()
    spec = {
        **before,
        "name": "Changed",
        "steps": [
            {
                "channel": "sms",
                "anchor": "trigger",
                "variants": [
                    {"label": "A", "template": "first_reminder", "weight": 60},
                    {"label": "B", "template": "first_reminder_short", "weight": 30},
                ],
            },
            {
                "channel": "sms",
                "anchor": "date_field",
                "anchor_field": "birthday",
                "variants": [{"template": "second_reminder"}],
            },
        ],
    }
    upload = SimpleUploadedFile("bad.yaml", yaml.safe_dump(spec).encode())

    response = staff.post(reverse("admin:channels_sequence_import"), {"file": upload})

    page = response.content.decode()
    assert response.status_code == 400
    assert "Nothing was imported" in page
    assert "weights must add up to 100 (they add up to 90)" in page
    assert "&#x27;birthday&#x27; is not a date field" in page
    assert sequence_export(workflow_key="promise_to_pay") == before
    assert MessageTemplate.objects.count() == templates


def test_import_refuses_a_file_that_is_not_yaml(shipped, staff):
    upload = SimpleUploadedFile("bad.yaml", b"workflow: [unclosed")
    response = staff.post(reverse("admin:channels_sequence_import"), {"file": upload})
    assert response.status_code == 400
    assert "The file is not valid YAML" in response.content.decode()


# --- templates and their preview -------------------------------------------------------------


def template_data(template: MessageTemplate, **overrides) -> dict:
    data = {
        "workflow_key": template.workflow_key,
        "name": template.name,
        "channel": template.channel,
        "locale": template.locale,
        "subject": template.subject,
        "body": template.body,
        "whatsapp_template_name": template.whatsapp_template_name,
        "whatsapp_language": template.whatsapp_language,
        "whatsapp_parameters": "[]",
    }
    return {**data, **overrides}


@pytest.fixture
def sms_template(shipped) -> MessageTemplate:
    return MessageTemplate.objects.get(
        workflow_key="promise_to_pay", name="first_reminder", channel="sms", locale="en"
    )


def segments(html: str) -> int:
    return int(re.search(r"Segments</dt>\s*<dd><strong>(\d+)</strong>", html).group(1))


def preview(staff: Client, template: MessageTemplate, body: str, **headers) -> str:
    url = reverse("admin:channels_messagetemplate_preview", args=[template.pk])
    response = staff.post(url, template_data(template, body=body), **headers)
    assert response.status_code == 200
    return response.content.decode()


def test_live_preview_shows_the_text_its_encoding_and_segments(sms_template, staff):
    page = staff.get(reverse("admin:channels_messagetemplate_change", args=[sms_template.pk]))
    html = page.content.decode()
    assert (
        'hx-post="' + reverse("admin:channels_messagetemplate_preview", args=[sms_template.pk])
        in html
    )
    assert "django_htmx/htmx-2.min.js" in html
    assert "<script>" not in html  # CSP: no inline script

    gsm = preview(
        staff,
        sms_template,
        "Hi {{ customer.first_name }}, pay here: {{ link }}",
        HTTP_HX_REQUEST="true",
    )
    assert "Hi Sample, pay here: http://" in gsm  # no case yet: a sample from the contract
    assert "GSM-7" in gsm
    assert segments(gsm) == 1
    assert "Reply STOP to opt out" in gsm  # the opt-out line is counted as sent

    ucs2 = preview(staff, sms_template, "We’re here to help: {{ link }}", HTTP_HX_REQUEST="true")
    assert "UCS-2" in ucs2
    assert "because of “’”" in ucs2

    long_body = "Your balance is overdue, please choose a date. " * 12 + "{{ link }}"
    over = preview(staff, sms_template, long_body, HTTP_HX_REQUEST="true")
    assert segments(over) == 5
    assert "over 3" in over


def test_a_new_template_previews_before_it_is_saved(shipped, staff):
    add = staff.get(reverse("admin:channels_messagetemplate_add")).content.decode()
    url = reverse("admin:channels_messagetemplate_preview")
    assert f'hx-post="{url}"' in add
    data = {
        "workflow_key": "promise_to_pay",
        "name": "nudge",
        "channel": "sms",
        "locale": "en",
        "body": "Still there? {{ link }}",
        "whatsapp_parameters": "[]",
    }
    html = staff.post(url, data, HTTP_HX_REQUEST="true").content.decode()
    assert "Still there? http://" in html and segments(html) == 1
    assert not MessageTemplate.objects.filter(name="nudge").exists()


def test_preview_renders_against_the_latest_case(sms_template, staff):
    case = factories.case_for("promise_to_pay", customer={"name": "Grace Hopper"})
    html = preview(
        staff, sms_template, "Hi {{ customer.first_name }}: {{ data.balance }} {{ link }}"
    )
    assert "Hi Grace: 420.50 http://" in html
    assert str(case.pk) in html


def test_preview_lists_a_missing_link_and_a_syntax_error(sms_template, staff):
    html = preview(staff, sms_template, "No link here {% if %}")
    assert "put {{ link }} in the body once (found 0)" in html
    assert "Template error" in html


def test_preview_without_javascript_shows_the_form_again_and_saves_nothing(sms_template, staff):
    url = reverse("admin:channels_messagetemplate_change", args=[sms_template.pk])
    body = "Ça va? {{ link }}"
    response = staff.post(url, {**template_data(sms_template, body=body), "_preview": "Preview"})
    html = response.content.decode()
    assert response.status_code == 200
    assert "GSM-7" in html and "UCS-2" not in html  # "Ç" is in the GSM alphabet
    assert segments(html) == 1
    assert "Ça va? {{ link }}</textarea>" in html
    sms_template.refresh_from_db()
    assert sms_template.body != body


def test_a_template_without_its_link_is_refused(sms_template, staff):
    url = reverse("admin:channels_messagetemplate_change", args=[sms_template.pk])
    response = staff.post(url, template_data(sms_template, body="Please pay today."))
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["body"] == [
        "A message carries exactly one primary action: put {{ link }} in the body once (found 0)."
    ]
    sms_template.refresh_from_db()
    assert "{{ link }}" in sms_template.body


def test_template_saves_and_an_email_needs_a_subject(shipped, staff):
    email = MessageTemplate.objects.get(name="second_reminder", channel="email")
    url = reverse("admin:channels_messagetemplate_change", args=[email.pk])
    response = staff.post(url, template_data(email, subject=""))
    assert response.context["adminform"].form.errors["subject"] == ["An email needs a subject."]
    response = staff.post(url, template_data(email, subject="A reminder, {{ customer.name }}"))
    assert response.status_code == 302
    email.refresh_from_db()
    assert email.subject == "A reminder, {{ customer.name }}"


def test_template_list_shows_segments_and_the_over_limit_badge(sms_template, staff):
    MessageTemplate.objects.filter(pk=sms_template.pk).update(
        body="Your balance is overdue, please choose a date. " * 12 + "{{ link }}"
    )
    page = staff.get(
        reverse("admin:channels_messagetemplate_changelist") + "?channel__exact=sms"
    ).content.decode()
    assert "5 (GSM-7)" in page
    assert "over 3" in page


# --- read-only records -----------------------------------------------------------------------


def test_message_admin_is_read_only(shipped, staff):
    case = queued_case()
    message = Message.objects.get(case=case)
    url = reverse("admin:channels_message_change", args=[message.pk])
    page = staff.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    assert message.key in html
    assert 'name="_save"' not in html
    assert staff.get(reverse("admin:channels_message_changelist")).status_code == 200
    assert staff.get(reverse("admin:channels_message_add")).status_code == 403
    assert staff.post(url, {"status": "failed"}).status_code == 403
    delete = reverse("admin:channels_message_delete", args=[message.pk])
    assert staff.post(delete, {"post": "yes"}).status_code == 403
    message.refresh_from_db()
    assert message.status == "queued"
    for name in ("inboundmessage", "caseoutreach"):
        assert staff.get(reverse(f"admin:channels_{name}_changelist")).status_code == 200
        assert staff.get(reverse(f"admin:channels_{name}_add")).status_code == 403


# --- the demo phone --------------------------------------------------------------------------


def test_phone_lists_outbox_messages_with_working_links(shipped, staff):
    case = queued_case()
    messages_dispatch()
    entry = OutboxEntry.objects.get()

    listing = staff.get(reverse("admin-channels-phone")).content.decode()
    assert reverse("admin-channels-phone-customer", args=[case.customer_id]) in listing

    page = staff.get(reverse("admin-channels-phone-customer", args=[case.customer_id]))
    html = page.content.decode()
    [link] = LINK.findall(html)
    assert link in entry.body
    assert Client().get(urlparse(link).path).status_code == 200  # the mini-app opens
    assert "Reply as the customer" in html


def test_phone_is_for_staff_only(db):
    customer_url = reverse("admin-channels-phone-customer", args=[1])
    for url in (reverse("admin-channels-phone"), customer_url):
        response = Client().get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")
    outsider = factories.user()
    outsider.is_staff = False
    outsider.save()
    client = Client()
    client.force_login(outsider)
    assert client.get(reverse("admin-channels-phone"))["Location"].startswith("/admin/login/")


def test_replying_stop_from_the_phone_revokes_consent(shipped, staff):
    case = queued_case()
    url = reverse("admin-channels-phone-customer", args=[case.customer_id])

    response = staff.post(url, {"text": "STOP"}, follow=True)

    html = response.content.decode()
    assert "Received as “Opt-out keyword”" in html
    customer = Customer.objects.get(pk=case.customer_id)
    assert customer.consent["sms"]["value"] is False
    inbound = InboundMessage.objects.get()
    assert (inbound.provider, inbound.sender, inbound.body) == ("outbox", customer.phone, "STOP")
    assert Message.objects.get(purpose="reply").body_masked.startswith("Closeloop Bank: you will")
    assert CaseEvent.objects.filter(case=case, kind="consent_revoked").exists()
    assert "STOP" in html  # the customer's own bubble


def test_an_empty_reply_is_refused(shipped, staff):
    case = queued_case()
    url = reverse("admin-channels-phone-customer", args=[case.customer_id])
    response = staff.post(url, {"text": "  "})
    assert response.status_code == 200
    assert "This field is required." in response.content.decode()
    assert not InboundMessage.objects.exists()


def test_the_phone_is_linked_from_the_index_and_the_customer(shipped, staff):
    case = queued_case()
    phone = reverse("admin-channels-phone-customer", args=[case.customer_id])
    customer_page = staff.get(reverse("admin:cases_customer_change", args=[case.customer_id]))
    assert phone in customer_page.content.decode()
    assert reverse("admin-channels-phone") in staff.get(reverse("admin:index")).content.decode()


# --- the contact ledger ----------------------------------------------------------------------


def test_ledger_shows_why_a_message_was_not_sent(shipped, staff):
    case = factories.case_for("promise_to_pay")
    night = dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.UTC)  # 02:00 in London
    Case.objects.filter(pk=case.pk).update(
        triggered_at=night, expires_at=night + dt.timedelta(days=7)
    )
    case_prepare(case=case.pk)
    outreach = outreach_begin(case=case.pk)
    outreach.next_due_at = night
    outreach.save()
    assert outreach_advance(outreach_id=outreach.pk, now=night) == "deferred"
    recorded = CaseEvent.objects.get(case=case, kind="outreach_skipped").created_at
    london = ZoneInfo("Europe/London")

    for url in (
        reverse("admin:cases_case_change", args=[case.pk]),
        reverse("admin:cases_customer_change", args=[case.customer_id]),
    ):
        html = staff.get(url).content.decode()
        assert "Contact ledger" in html
        assert "<code>outreach_skipped</code>" in html
        assert "reason: <strong>quiet_hours</strong>" in html
        assert "deferred until: <strong>2026-11-23 08:00 GMT</strong>" in html
        assert f"<td>{recorded.astimezone(london):%Y-%m-%d %H:%M}</td>" in html
        assert f"<td>{recorded.astimezone(dt.UTC):%Y-%m-%d %H:%M}</td>" in html
