"""Consent the customer changes: revoking cancels queued outreach at once, restoring is
recorded, both are idempotent and on every open case's timeline; the unsubscribe link."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.core import signing
from django.test import override_settings

from cases.models import CaseEvent, Customer
from channels.consent import (
    UNSUBSCRIBE_SALT,
    consent_restore,
    consent_revoke,
    unsubscribe_resolve,
    unsubscribe_token,
    unsubscribe_url,
)
from channels.contact_rules import channel_refusal
from channels.models import Message
from tests import factories


@pytest.fixture(autouse=True)
def _workflow(workflow):
    """Cases are created through the trigger path, which needs the active workflow."""
    return workflow


def message(case, key: str, *, channel: str = "sms", status: str = "queued", **fields) -> Message:
    return Message.objects.create(
        key=key,
        case=case,
        customer=case.customer,
        workflow_key=case.workflow.key,
        channel=channel,
        to=case.customer.phone if channel != "email" else case.customer.email,
        status=status,
        **fields,
    )


def events(case, kind: str) -> list[CaseEvent]:
    return list(CaseEvent.objects.filter(case=case, kind=kind))


def test_revoke_records_consent_cancels_queued_and_tells_every_open_case():
    client, _ = factories.api_client()
    case = factories.case_in_state("outreach", client)
    customer = case.customer
    # More cases for the same customer record: same client, same external id.
    same = {"external_id": customer.external_id}
    escalated = factories.case_in_state("escalated", client, customer=same)
    closed = factories.case_in_state("cancelled", client, customer=same)
    assert escalated.customer_id == closed.customer_id == customer.pk
    queued_sms = message(case, "k1")
    queued_email = message(case, "k2", channel="email")
    sent_sms = message(case, "k3", status="sent")
    reply_sms = message(case, "k4", purpose="reply")

    assert consent_revoke(customer=customer, channel="sms", source="sms_reply_stop") is True

    customer.refresh_from_db()
    entry = customer.consent["sms"]
    assert entry["value"] is False
    assert entry["source"] == "sms_reply_stop"
    assert entry["timestamp"].endswith("Z")
    assert dt.datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00"))
    assert channel_refusal(customer, "sms") == "opted_out"
    assert customer.consent["email"]["value"] is True

    queued_sms.refresh_from_db()
    assert (queued_sms.status, queued_sms.error) == ("cancelled", "opted out")
    for untouched, status in ((queued_email, "queued"), (sent_sms, "sent"), (reply_sms, "queued")):
        untouched.refresh_from_db()
        assert untouched.status == status
    [cancelled] = events(case, "message_cancelled")
    assert cancelled.data == {
        "message": "k1",
        "channel": "sms",
        "purpose": "step",
        "reason": "opted_out",
    }

    for open_case in (case, escalated):
        [event] = events(open_case, "consent_revoked")
        assert event.actor == "customer"
        assert event.data == {"channel": "sms", "source": "sms_reply_stop"}
    assert events(closed, "consent_revoked") == []


def test_revoking_twice_records_once_and_restore_records_once():
    case = factories.case()
    customer = case.customer
    assert consent_revoke(customer=customer, channel="sms", source="sms_reply_stop")
    assert not consent_revoke(customer=customer, channel="sms", source="free_text_reply")
    assert len(events(case, "consent_revoked")) == 1
    assert Customer.objects.get(pk=customer.pk).consent["sms"]["source"] == "sms_reply_stop"

    assert consent_restore(customer=customer, channel="sms", source="sms_reply_start")
    assert not consent_restore(customer=customer, channel="sms", source="sms_reply_start")
    [restored] = events(case, "consent_restored")
    assert restored.data == {"channel": "sms", "source": "sms_reply_start"}
    customer.refresh_from_db()
    assert customer.has_consent("sms")
    assert channel_refusal(customer, "sms") == ""


def test_restore_on_a_channel_never_consented_records_the_yes():
    case = factories.case()
    assert "whatsapp" not in case.customer.consent
    assert consent_restore(
        customer=case.customer, channel="whatsapp", source="whatsapp_reply_start"
    )
    assert Customer.objects.get(pk=case.customer.pk).has_consent("whatsapp")


def test_unknown_channel_is_refused_and_nothing_written():
    case = factories.case()
    with pytest.raises(ValueError, match="Unknown channel"):
        consent_revoke(customer=case.customer, channel="pigeon", source="x")
    assert events(case, "consent_revoked") == []


@override_settings(PUBLIC_BASE_URL="https://closeloop.example.com")
def test_unsubscribe_url_is_absolute_and_resolves_to_its_customer():
    case = factories.case()
    url = unsubscribe_url(customer=case.customer)
    assert url.startswith("https://closeloop.example.com/channels/unsubscribe/")
    token = url.rstrip("/").rsplit("/", 1)[1]
    assert unsubscribe_resolve(token) == (case.customer, "email")


def test_unsubscribe_token_rejects_forgery_other_salts_and_age():
    case = factories.case()
    token = unsubscribe_token(customer=case.customer)
    assert unsubscribe_resolve(token[:-2] + ("AA" if token[-2:] != "AA" else "BB")) is None
    assert unsubscribe_resolve("not-a-token") is None
    other_salt = signing.dumps([case.customer.pk, "email"], salt="miniapp.link")
    assert unsubscribe_resolve(other_salt) is None

    class ThirteenMonthsAgo(signing.TimestampSigner):
        def timestamp(self):
            return signing.b62_encode(int(time.time()) - 396 * 24 * 3600)

    old = ThirteenMonthsAgo(salt=UNSUBSCRIBE_SALT).sign_object(
        [case.customer.pk, "email"], compress=True
    )
    assert unsubscribe_resolve(old) is None

    class ElevenMonthsAgo(signing.TimestampSigner):
        def timestamp(self):
            return signing.b62_encode(int(time.time()) - 335 * 24 * 3600)

    recent = ElevenMonthsAgo(salt=UNSUBSCRIBE_SALT).sign_object(
        [case.customer.pk, "email"], compress=True
    )
    assert unsubscribe_resolve(recent) == (case.customer, "email")
