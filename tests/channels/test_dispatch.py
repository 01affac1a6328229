"""Sending: record-then-send, retries without a duplicate, reconciliation after a crash,
fallback to the next channel, the WhatsApp window, and a real worker end to end."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.test import override_settings
from django.utils import timezone

from cases.models import Case, CaseEvent
from channels.dispatch import (
    LEASE,
    DispatchReport,
    _prepare,
    _save,
    _send_all,
    messages_claim,
    messages_dispatch,
    messages_reconcile,
)
from channels.models import CaseOutreach, InboundMessage, Message, OutboxEntry
from channels.sequences import sequences_install_shipped
from channels.services import outreach_advance, outreach_begin
from miniapp.services import link_resolve
from policies.services import case_prepare
from tests import factories
from tests.standins.smtp import SmtpStandIn
from tests.standins.twilio import TwilioStandIn
from tests.standins.whatsapp import WhatsAppStandIn
from tests.workers import wait_for

LINK = re.compile(r"http://[^\s]+/m/([A-Za-z0-9_-]{40,})/")


@pytest.fixture
def shipped(db):
    factories.workflow_shipped("promise_to_pay")
    sequences_install_shipped()


@pytest.fixture
def twilio():
    standin = TwilioStandIn(account_sid="AC123", auth_token="twilio-test-token")
    with (
        standin,
        override_settings(
            SMS_PROVIDER="twilio",
            TWILIO_API_BASE=standin.url,
            TWILIO_ACCOUNT_SID="AC123",
            TWILIO_AUTH_TOKEN="twilio-test-token",
            TWILIO_FROM_NUMBER="+15005550006",
        ),
    ):
        yield standin


def queued_case(**overrides) -> Case:
    """A case whose first step is queued now (inside the contact window for its zone)."""
    case = factories.case_for("promise_to_pay", **overrides)
    now = _daytime_for(case)
    Case.objects.filter(pk=case.pk).update(triggered_at=now, expires_at=now + dt.timedelta(days=7))
    case_prepare(case=case.pk)
    outreach = outreach_begin(case=case.pk)
    CaseOutreach.objects.filter(pk=outreach.pk).update(next_due_at=now)
    outreach_advance(outreach_id=outreach.pk, now=now)
    Message.objects.filter(case=case).update(not_before=timezone.now() - dt.timedelta(seconds=1))
    return Case.objects.get(pk=case.pk)


def _daytime_for(case: Case) -> dt.datetime:
    # Tests run at any hour: pretend it is midday in the customer's zone.
    from channels.contact_rules import customer_zone

    zone = customer_zone(case.customer)
    local_noon = timezone.now().astimezone(zone).replace(hour=12, minute=0)
    return local_noon.astimezone(dt.UTC)


def test_outbox_send_records_then_masks_the_link(shipped):
    case = queued_case()
    report = messages_dispatch()
    assert report.sent == 1
    message = Message.objects.get(case=case)
    assert message.status == "sent" and message.provider == "outbox"
    entry = OutboxEntry.objects.get(message_key=message.key)
    [token] = LINK.findall(entry.body)
    assert link_resolve(token=token).case_id == case.pk  # the customer's link works
    assert token not in message.body_masked and "/m/••••••/" in message.body_masked
    assert entry.body.endswith("Reply STOP to opt out")
    assert message.segments >= 1 and message.encoding == "GSM-7"
    sent = CaseEvent.objects.get(case=case, kind="message_sent")
    assert sent.data["step"] == 1 and sent.data["channel"] == "sms"
    assert "+44" not in str(sent.data)  # the ledger carries no phone number
    case.refresh_from_db()
    assert case.first_sent_at is not None


def test_twilio_sms_carries_the_case_link_and_a_status_callback(shipped, twilio):
    case = queued_case()
    assert messages_dispatch().sent == 1
    [sms] = twilio.messages
    assert sms["To"] == "+447911123456"
    [token] = LINK.findall(sms["Body"])
    assert link_resolve(token=token).case_id == case.pk
    assert sms["StatusCallback"].endswith("/channels/twilio/status/")
    message = Message.objects.get(case=case)
    assert message.provider_message_id.startswith("SM")


def test_a_transient_failure_is_retried_once_without_a_duplicate(shipped, twilio):
    case = queued_case()
    twilio.fail_next(1, status=503)
    report = messages_dispatch()
    assert (report.sent, report.retried) == (0, 1)
    message = Message.objects.get(case=case)
    assert message.status == "queued" and message.not_before > timezone.now()
    assert messages_dispatch().claimed == 0  # not before its backoff
    report = messages_dispatch(now=message.not_before + dt.timedelta(seconds=1))
    assert report.sent == 1
    assert len(twilio.messages) == 1
    kinds = list(CaseEvent.objects.filter(case=case).values_list("kind", flat=True))
    assert kinds.count("message_retry") == 1 and kinds.count("message_sent") == 1


def test_a_crash_after_the_provider_call_is_reconciled_not_resent(shipped, twilio):
    case = queued_case()
    # The worker claims, records and sends — and dies before recording the result.
    claimed_at = timezone.now()
    ids = messages_claim(limit=10, now=claimed_at)
    messages = list(Message.objects.filter(pk__in=ids).select_related("case", "customer"))
    prepared, _ = _prepare(messages, DispatchReport(), [])
    _save(messages)
    _send_all(prepared)
    assert len(twilio.messages) == 1
    # A restarted worker finds the row still `sending`; once its lease has run out it asks
    # Twilio, finds the message by its body, and marks it sent without sending again.
    assert messages_reconcile(now=claimed_at + LEASE - dt.timedelta(seconds=5)) == {}
    assert messages_reconcile(now=claimed_at + LEASE + dt.timedelta(seconds=1)) == {"found_sent": 1}
    message = Message.objects.get(case=case)
    assert message.status == "sent" and message.provider_message_id.startswith("SM")
    assert messages_dispatch(now=claimed_at + LEASE * 2).claimed == 0
    assert len(twilio.messages) == 1


def test_a_crash_before_the_provider_call_is_sent_once_after_reconciliation(shipped, twilio):
    case = queued_case()
    claimed_at = timezone.now()
    ids = messages_claim(limit=10, now=claimed_at)
    messages = list(Message.objects.filter(pk__in=ids).select_related("case", "customer"))
    _prepare(messages, DispatchReport(), [])
    _save(messages)  # recorded, never sent
    later = claimed_at + LEASE + dt.timedelta(seconds=1)
    assert messages_reconcile(now=later) == {"requeued": 1}
    assert messages_dispatch(now=later).sent == 1
    assert len(twilio.messages) == 1
    assert Message.objects.get(case=case).status == "sent"


def test_an_interrupted_email_is_not_repeated(shipped):
    with (
        SmtpStandIn() as smtp,
        override_settings(
            EMAIL_PROVIDER="smtp",
            EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
            EMAIL_HOST="127.0.0.1",
            EMAIL_PORT=smtp.port,
        ),
    ):
        case = queued_case(customer={"preferred_channel": "email"})
        claimed_at = timezone.now()
        ids = messages_claim(limit=10, now=claimed_at)
        messages = list(Message.objects.filter(pk__in=ids).select_related("case", "customer"))
        prepared, _ = _prepare(messages, DispatchReport(), [])
        _save(messages)
        _send_all(prepared)
        assert len(smtp.messages) == 1
        later = claimed_at + LEASE + dt.timedelta(seconds=1)
        assert messages_reconcile(now=later) == {"unconfirmed": 1}
        assert messages_dispatch(now=later).claimed == 0
        assert len(smtp.messages) == 1
        assert Message.objects.get(case=case).status == "unconfirmed"
        assert CaseEvent.objects.filter(case=case, kind="message_unconfirmed").exists()


def test_an_email_has_an_unsubscribe_link_and_header(shipped):
    with (
        SmtpStandIn() as smtp,
        override_settings(
            EMAIL_PROVIDER="smtp",
            EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
            EMAIL_HOST="127.0.0.1",
            EMAIL_PORT=smtp.port,
        ),
    ):
        queued_case(customer={"preferred_channel": "email"})
        assert messages_dispatch().sent == 1
        [email] = smtp.messages
        assert "/channels/unsubscribe/" in email["List-Unsubscribe"]
        assert email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert "/channels/unsubscribe/" in email.get_payload() if not email.is_multipart() else True


def test_a_permanent_failure_falls_back_to_the_next_permitted_channel(shipped, twilio):
    case = queued_case()
    twilio.fail_permanently(to="+447911123456", code=21211)
    report = messages_dispatch()
    assert (report.failed, report.fallbacks) == (1, 1)
    sms = Message.objects.get(case=case, channel="sms")
    assert sms.status == "failed" and "21211" in (
        sms.error + str(CaseEvent.objects.get(case=case, kind="message_failed").data)
    )
    # The email fallback goes out through the outbox (EMAIL_PROVIDER default).
    assert messages_dispatch().sent == 1
    email = Message.objects.get(case=case, channel="email")
    assert email.status == "sent" and email.step_position == 1
    assert CaseEvent.objects.filter(case=case, kind="message_fallback").count() == 1


def test_a_message_queued_before_stop_is_cancelled(shipped):
    case = queued_case()
    customer = case.customer
    customer.consent["sms"] = {
        "value": False,
        "timestamp": "2026-11-23T10:00:00+00:00",
        "source": "sms_reply_stop",
    }
    customer.save(update_fields=["consent"])
    report = messages_dispatch()
    assert (report.sent, report.cancelled) == (0, 1)
    assert Message.objects.get(case=case).status == "cancelled"
    assert not OutboxEntry.objects.exists()
    event = CaseEvent.objects.get(case=case, kind="message_cancelled")
    assert event.data["reason"] == "opted_out"


def test_whatsapp_outside_the_window_sends_the_approved_template(shipped):
    with (
        WhatsAppStandIn(token="wa-test-token") as standin,
        override_settings(
            WHATSAPP_PROVIDER="cloud_api",
            WHATSAPP_API_BASE=standin.url,
            WHATSAPP_TOKEN="wa-test-token",
            WHATSAPP_PHONE_NUMBER_ID="1234567890",
        ),
    ):
        whatsapp_customer = {
            "preferred_channel": "whatsapp",
            "whatsapp": "+447911123456",
            "consent": {"whatsapp": True, "sms": True},
        }
        case = queued_case(customer=whatsapp_customer)
        assert messages_dispatch().sent == 1
        [payload] = standin.messages
        assert payload["type"] == "template"
        assert payload["template"]["name"] == "arrears_reminder"
        params = [p["text"] for p in payload["template"]["components"][0]["parameters"]]
        assert any(LINK.search(p) for p in params)
        assert Message.objects.get(case=case).whatsapp_template == "arrears_reminder"

        # The customer writes to us: for 24 hours free-form text is allowed.
        second = queued_case(customer={**whatsapp_customer, "external_id": "wa-2"})
        InboundMessage.objects.create(
            channel="whatsapp",
            provider="cloud_api",
            provider_message_id="wamid.in-1",
            sender="+447911123456",
            customer=second.customer,
            body="hi",
            kind="free_text",
        )
        assert messages_dispatch().sent == 1
        assert standin.messages[-1]["type"] == "text"
        assert LINK.search(standin.messages[-1]["text"]["body"])


def test_an_undelivered_receipt_falls_back_to_the_next_channel(shipped, twilio):
    from channels.inbound import message_status_update

    case = queued_case()
    assert messages_dispatch().sent == 1
    sms = Message.objects.get(case=case, channel="sms")
    message_status_update(
        provider="twilio",
        provider_message_id=sms.provider_message_id,
        status="undelivered",
        error_code="30003",
    )
    sms.refresh_from_db()
    assert sms.status == "undelivered"
    assert messages_dispatch().sent == 1
    assert Message.objects.get(case=case, channel="email").status == "sent"


def test_no_answer_is_checked_with_the_provider_before_a_second_attempt(shipped, twilio, settings):
    settings.OUTREACH_PROVIDER_TIMEOUT = 0.3
    # Twilio takes the message but answers too late: we time out, yet it was sent.
    twilio.delay = 1.0
    case = queued_case()
    report = messages_dispatch()
    assert report.retried == 1
    message = Message.objects.get(case=case)
    assert message.status == "sending"  # held for a check, not re-queued
    event = CaseEvent.objects.get(case=case, kind="message_retry")
    assert event.data["reason"] == "checking_first"
    assert wait_for(lambda: len(twilio.messages) == 1, timeout=5)
    twilio.delay = 0
    later = message.lease_until + dt.timedelta(seconds=1)
    assert messages_reconcile(now=later) == {"found_sent": 1}
    assert messages_dispatch(now=later).claimed == 0
    assert len(twilio.messages) == 1
    assert Message.objects.get(case=case).status == "sent"
