"""Replies: keyword and free-text classification, what each kind does to consent and to the
case, and delivery receipts that never move a message backwards."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from django.test import override_settings
from django.utils import timezone

from cases.models import Case, CaseEvent, Customer
from channels.inbound import (
    inbound_classify,
    inbound_receive,
    message_status_update,
    whatsapp_window_open,
)
from channels.models import InboundMessage, Message
from privacy.crypto import sealed_opened
from tests import factories

PHONE = "+447911123456"
_ids = itertools.count(1)

OPT_OUT_WORDS = ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"]


@pytest.fixture(autouse=True)
def _workflow(workflow):
    """Cases are created through the trigger path, which needs the active workflow."""
    return workflow


def sms(body: str, *, sender: str = PHONE, sid: str | None = None):
    return inbound_receive(
        channel="sms",
        provider="twilio",
        provider_message_id=sid or f"SM{next(_ids):032d}",
        sender=sender,
        body=body,
    )


def events(case, kind: str) -> list[CaseEvent]:
    return list(CaseEvent.objects.filter(case=case, kind=kind))


def message(case, key: str, **fields) -> Message:
    defaults = {"channel": "sms", "status": "sent", "to": PHONE}
    return Message.objects.create(
        key=key,
        case=case,
        customer=case.customer,
        workflow_key=case.workflow.key,
        **{**defaults, **fields},
    )


# --- classification -------------------------------------------------------------------------


def _variants(word: str) -> list[str]:
    return [word, word.lower(), word.title(), f"{word.lower()}.", f" {word.lower()}! ", f"'{word}'"]


@pytest.mark.parametrize(
    "text", [v for word in OPT_OUT_WORDS for v in _variants(word)] + ["Stop.", " stop! ", "STOP\n"]
)
def test_every_opt_out_keyword_in_any_case_and_punctuation(text):
    assert inbound_classify(text) == "opt_out"


@pytest.mark.parametrize("text", [v for word in ("START", "UNSTOP") for v in _variants(word)])
def test_start_and_unstop_opt_in(text):
    assert inbound_classify(text) == "opt_in"


@pytest.mark.parametrize("text", [v for word in ("HELP", "INFO") for v in _variants(word)])
def test_help_and_info_ask_for_help(text):
    assert inbound_classify(text) == "help"


@pytest.mark.parametrize(
    "text",
    [
        "please stop texting me",
        "Stop messaging me!!",
        "don't contact me again",
        "Don’t text me",
        "do not message me",
        "remove me from your list",
        "Please remove my number from this",
        "leave me alone",
        "unsubscribe me",
        "no more messages please",
        "stop these texts",
        "opt me out",
    ],
)
def test_free_text_that_reads_like_an_opt_out(text):
    assert inbound_classify(text) == "opt_out_free_text"


@pytest.mark.parametrize(
    "text",
    [
        "stop by the branch?",
        "YES",
        "when is my payment due?",
        "I paid yesterday",
        "I can't pay this month",
        "",
        "   ",
    ],
)
def test_other_text_is_free_text(text):
    assert inbound_classify(text) == "free_text"


# --- acting on replies ----------------------------------------------------------------------


@pytest.mark.parametrize("word", ["STOP", "stopall", "Unsubscribe.", " quit! "])
def test_stop_revokes_sms_consent_and_confirms(word):
    case = factories.case_in_state("outreach")
    queued = message(case, "k-queued", status="queued")

    result = sms(word)

    assert result.kind == "opt_out"
    assert "Reply START" in result.reply_text
    customer = Customer.objects.get(pk=case.customer_id)
    assert customer.consent["sms"]["value"] is False
    assert customer.consent["sms"]["source"] == "sms_reply_stop"
    assert customer.consent["email"]["value"] is True
    queued.refresh_from_db()
    assert queued.status == "cancelled"
    [inbound_event] = events(case, "inbound_message")
    # The customer's words are sealed (encrypted) in the timeline.
    assert inbound_event.data["text"].startswith("encrypted:")
    assert sealed_opened(inbound_event.data) == {"channel": "sms", "kind": "opt_out", "text": word}
    assert inbound_event.actor == "customer"
    assert len(events(case, "consent_revoked")) == 1
    assert Case.objects.get(pk=case.pk).state == "outreach"
    stored = InboundMessage.objects.get()
    assert (stored.customer_id, stored.case_id, stored.kind) == (
        case.customer_id,
        case.pk,
        "opt_out",
    )


def test_start_restores_consent():
    case = factories.case()
    sms("STOP")
    result = sms("start")
    assert result.kind == "opt_in"
    assert "Reply STOP" in result.reply_text
    customer = Customer.objects.get(pk=case.customer_id)
    assert customer.consent["sms"] == {
        **customer.consent["sms"],
        "value": True,
        "source": "sms_reply_start",
    }
    assert len(events(case, "consent_restored")) == 1


@override_settings(BRAND_NAME="Acme Lending")
def test_help_answers_with_brand_and_how_to_stop_and_changes_nothing():
    case = factories.case()
    result = sms("help")
    assert result.kind == "help"
    assert result.reply_text.startswith("Acme Lending:")
    assert "Reply STOP to opt out" in result.reply_text
    assert Customer.objects.get(pk=case.customer_id).has_consent("sms")
    assert Case.objects.get(pk=case.pk).state == "received"


def test_free_text_opt_out_revokes_and_escalates_for_confirmation():
    case = factories.case_in_state("engaged")
    text = "Please stop texting me, I will call you"
    result = sms(text)
    assert result.kind == "opt_out_free_text"
    assert result.reply_text == ""
    customer = Customer.objects.get(pk=case.customer_id)
    assert customer.consent["sms"]["value"] is False
    assert customer.consent["sms"]["source"] == "free_text_reply"
    case.refresh_from_db()
    assert case.state == "escalated"
    assert (case.escalation_reason, case.priority) == ("opt_out_confirmation", 70)
    [escalated] = events(case, "escalated")
    assert sealed_opened(escalated.data) == {
        "reason": "opt_out_confirmation",
        "priority": 70,
        "text": text,
    }
    assert result.escalated_case_ids == [case.pk]


def test_free_text_opt_out_on_an_escalated_case_is_noted_not_escalated_again():
    case = factories.case_in_state("escalated")
    sms("leave me alone")
    case.refresh_from_db()
    assert case.state == "escalated"
    assert len(events(case, "escalated")) == 1
    [note] = events(case, "agent_review_requested")
    assert note.data == {"reason": "opt_out_confirmation", "priority": 70}
    assert not Customer.objects.get(pk=case.customer_id).has_consent("sms")


@pytest.mark.parametrize(
    "text, priority",
    [
        ("I lost my job and can't pay this month", 60),
        ("My husband passed away, we are bereaved", 60),
        ("I want to complain, this is unfair", 60),
        ("Cannot pay until Friday", 60),
        ("what is this about?", 40),
        ("stop by the branch?", 40),
    ],
)
def test_hardship_words_and_questions_escalate(text, priority):
    case = factories.case_in_state("outreach")
    result = sms(text)
    assert result.kind == "free_text"
    case.refresh_from_db()
    assert case.state == "escalated"
    assert (case.escalation_reason, case.priority) == ("customer_reply", priority)
    assert Customer.objects.get(pk=case.customer_id).has_consent("sms")


def test_plain_free_text_is_recorded_without_escalation():
    case = factories.case_in_state("outreach")
    sms("Thanks, paid it this morning")
    case.refresh_from_db()
    assert case.state == "outreach"
    [event] = events(case, "inbound_message")
    assert sealed_opened(event.data)["text"] == "Thanks, paid it this morning"
    assert event.data["kind"] == "free_text"


def test_reply_attaches_to_the_most_recent_open_case():
    client, _ = factories.api_client()
    older = factories.case_in_state("outreach", client)
    same = {"external_id": older.customer.external_id}
    newer = factories.case_in_state("outreach", client, customer=same)
    closed = factories.case_in_state("abandoned", client, customer=same)
    Case.objects.filter(pk=newer.pk).update(triggered_at=timezone.now() + dt.timedelta(seconds=1))
    Case.objects.filter(pk=closed.pk).update(triggered_at=timezone.now() + dt.timedelta(seconds=2))
    sms("ok thanks")
    assert InboundMessage.objects.get().case_id == newer.pk
    assert len(events(newer, "inbound_message")) == 1
    assert events(older, "inbound_message") == []


def test_a_number_shared_across_clients_applies_to_every_customer():
    first = factories.case_in_state("outreach")
    second = factories.case_in_state("outreach")  # another API client, same phone
    assert first.customer_id != second.customer_id
    result = sms("STOP")
    assert sorted(result.customer_ids) == sorted([first.customer_id, second.customer_id])
    for case in (first, second):
        assert not Customer.objects.get(pk=case.customer_id).has_consent("sms")
        assert len(events(case, "inbound_message")) == 1
        assert len(events(case, "consent_revoked")) == 1


def test_a_duplicate_provider_id_is_ignored():
    case = factories.case_in_state("outreach")
    assert not sms("what is this?", sid="SMdup").duplicate
    again = sms("what is this?", sid="SMdup")
    assert again.duplicate
    assert again.reply_text == ""
    assert InboundMessage.objects.count() == 1
    assert len(events(case, "inbound_message")) == 1


def test_an_unknown_sender_is_stored_without_a_customer():
    factories.case()
    result = sms("STOP", sender="+15005550006")
    assert result.customer_ids == []
    stored = InboundMessage.objects.get()
    assert stored.customer_id is None and stored.case_id is None


def test_whatsapp_window_is_open_for_24_hours_after_the_customer_writes():
    case = factories.case(customer={"whatsapp": PHONE, "consent": {"whatsapp": True}})
    customer = case.customer
    assert not whatsapp_window_open(customer)
    inbound_receive(
        channel="whatsapp",
        provider="cloud_api",
        provider_message_id="wamid.1",
        sender="447911123456",  # Meta sends the number without "+"
        body="hello",
    )
    assert whatsapp_window_open(customer)
    assert whatsapp_window_open(customer_id=customer.pk)
    later = timezone.now() + dt.timedelta(hours=24, minutes=1)
    assert not whatsapp_window_open(customer, now=later)
    # An SMS reply does not open the WhatsApp window.
    other = factories.case()
    InboundMessage.objects.all().delete()
    sms("hello", sender=other.customer.phone)
    assert not whatsapp_window_open(customer)


# --- delivery receipts ----------------------------------------------------------------------


def test_status_never_moves_backwards():
    case = factories.case_in_state("outreach")
    sent = message(case, "k1", provider_message_id="SM1")
    assert message_status_update(provider="twilio", provider_message_id="SM1", status="delivered")
    assert (
        message_status_update(provider="twilio", provider_message_id="SM1", status="sent") is None
    )
    assert (
        message_status_update(
            provider="twilio", provider_message_id="SM1", status="undelivered", error_code="30005"
        )
        is None
    )
    sent.refresh_from_db()
    assert sent.status == "delivered"
    assert sent.delivered_at is not None
    [event] = events(case, "message_status")
    assert event.data == {
        "message": "k1",
        "channel": "sms",
        "status": "delivered",
        "error_code": None,
    }


def test_a_failure_is_recorded_with_its_code_and_a_late_delivery_corrects_it():
    case = factories.case_in_state("outreach")
    msg = message(case, "k1", provider_message_id="SM1")
    message_status_update(
        provider="twilio", provider_message_id="SM1", status="undelivered", error_code="30005"
    )
    msg.refresh_from_db()
    assert msg.status == "undelivered"
    assert "30005" in msg.error
    assert events(case, "message_status")[0].data["error_code"] == "30005"
    message_status_update(provider="twilio", provider_message_id="SM1", status="delivered")
    msg.refresh_from_db()
    assert msg.status == "delivered"


def test_provider_queued_never_requeues_our_message():
    case = factories.case_in_state("outreach")
    msg = message(case, "k1", provider_message_id="SM1", status="unconfirmed")
    message_status_update(provider="twilio", provider_message_id="SM1", status="queued")
    msg.refresh_from_db()
    assert msg.status == "sent"  # the provider has it: proof it went out, never "queued"


def test_read_sets_read_and_delivered_times_and_whatsapp_key_fallback():
    case = factories.case_in_state("outreach")
    msg = message(case, "k-wa", channel="whatsapp")
    at = dt.datetime(2026, 3, 1, 9, 30, tzinfo=dt.UTC)
    updated = message_status_update(
        provider="cloud_api",
        provider_message_id="wamid.out",
        status="read",
        at=at,
        message_key="k-wa",
    )
    assert updated is not None
    msg.refresh_from_db()
    assert (msg.status, msg.read_at, msg.delivered_at) == ("read", at, at)
    assert msg.provider_message_id == "wamid.out"


def test_unknown_message_or_status_is_ignored():
    case = factories.case_in_state("outreach")
    message(case, "k1", provider_message_id="SM1")
    assert (
        message_status_update(provider="twilio", provider_message_id="SMx", status="sent") is None
    )
    assert (
        message_status_update(provider="twilio", provider_message_id="SM1", status="exploded")
        is None
    )
    assert events(case, "message_status") == []
