"""Webhooks end to end through Django's test client: signatures (unsigned, mis-signed,
signed for another URL, replayed), Twilio status and inbound with TwiML answers, the
WhatsApp handshake, statuses and messages, and the email unsubscribe page."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest

from cases.models import Case, CaseEvent, Customer
from channels.consent import unsubscribe_token, unsubscribe_url
from channels.models import InboundMessage, Message, WebhookReceipt
from channels.signatures import twilio_signature, whatsapp_signature
from privacy.crypto import sealed_opened, text_open
from tests import factories
from tests.standins.twilio import TwilioStandIn

PUBLIC = "https://closeloop.example.com"
TWILIO_TOKEN = "twilio-test-token"
APP_SECRET = "whatsapp-app-secret"
VERIFY_TOKEN = "whatsapp-verify-token"
PHONE = "+447911123456"
STATUS_PATH = "/channels/twilio/status/"
INBOUND_PATH = "/channels/twilio/inbound/"
WHATSAPP_PATH = "/channels/whatsapp/webhook/"


@pytest.fixture(autouse=True)
def _settings(workflow, settings):
    settings.PUBLIC_BASE_URL = PUBLIC
    settings.TWILIO_AUTH_TOKEN = TWILIO_TOKEN
    settings.WHATSAPP_APP_SECRET = APP_SECRET
    settings.WHATSAPP_VERIFY_TOKEN = VERIFY_TOKEN
    settings.BRAND_NAME = "Acme Lending"


def twilio_post(
    client,
    path: str,
    params: dict[str, str],
    *,
    signed_url: str | None = None,
    signature: str | None = None,
    query: str = "",
):
    url = f"{PUBLIC}{path}" + (f"?{query}" if query else "")
    if signature is None:
        signature = twilio_signature(TWILIO_TOKEN, signed_url or url, params.items())
    headers = {"X-Twilio-Signature": signature} if signature else {}
    return client.post(
        path + (f"?{query}" if query else ""),
        data=urlencode(params),
        content_type="application/x-www-form-urlencoded",
        headers=headers,
    )


def whatsapp_post(client, payload, *, signature: str | None = None):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    if signature is None:
        signature = whatsapp_signature(APP_SECRET, body)
    headers = {"X-Hub-Signature-256": signature} if signature else {}
    return client.post(WHATSAPP_PATH, data=body, content_type="application/json", headers=headers)


def whatsapp_payload(*, statuses=(), messages=()) -> dict:
    value = {"messaging_product": "whatsapp", "metadata": {"phone_number_id": "123"}}
    if statuses:
        value["statuses"] = list(statuses)
    if messages:
        value["messages"] = list(messages)
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": value}]}],
    }


def wa_text(message_id: str, text: str, sender: str = "447911123456") -> dict:
    return {
        "from": sender,
        "id": message_id,
        "timestamp": "1767225600",
        "type": "text",
        "text": {"body": text},
    }


def sent_message(case, key: str, *, channel: str = "sms", provider_id: str = "") -> Message:
    return Message.objects.create(
        key=key,
        case=case,
        customer=case.customer,
        workflow_key=case.workflow.key,
        channel=channel,
        to=PHONE,
        status="sent",
        provider_message_id=provider_id,
    )


def status_params(sid: str = "SM1", status: str = "delivered", **more) -> dict[str, str]:
    return {"MessageSid": sid, "MessageStatus": status, "AccountSid": "AC123", **more}


def inbound_params(body: str, sid: str = "SMin1", sender: str = PHONE) -> dict[str, str]:
    return {"MessageSid": sid, "From": sender, "To": "+15005550006", "Body": body}


# --- Twilio signatures ----------------------------------------------------------------------


@pytest.mark.parametrize("path", [STATUS_PATH, INBOUND_PATH])
def test_twilio_refuses_unsigned_missigned_and_other_url(client, path):
    factories.case()
    params = status_params() if path == STATUS_PATH else inbound_params("STOP")
    assert twilio_post(client, path, params, signature="").status_code == 403
    assert twilio_post(client, path, params, signature="bm90IGEgc2lnbmF0dXJl").status_code == 403
    # Signed for the address the app sees behind the proxy, not the public one Twilio called.
    internal = f"http://testserver{path}"
    assert twilio_post(client, path, params, signed_url=internal).status_code == 403
    # Signed with the right URL but the body changed after signing.
    signature = twilio_signature(TWILIO_TOKEN, f"{PUBLIC}{path}", params.items())
    tampered = {**params, "Body": "START", "MessageStatus": "failed"}
    assert twilio_post(client, path, tampered, signature=signature).status_code == 403
    assert WebhookReceipt.objects.count() == 0
    assert InboundMessage.objects.count() == 0


def test_twilio_signature_covers_the_query_string(client):
    case = factories.case()
    sent_message(case, "k1", provider_id="SM1")
    params = status_params()
    ok = twilio_post(client, STATUS_PATH, params, query="attempt=1")
    assert ok.status_code == 204
    other = twilio_post(
        client,
        STATUS_PATH,
        status_params(status="read"),
        query="attempt=2",
        signed_url=f"{PUBLIC}{STATUS_PATH}?attempt=1",
    )
    assert other.status_code == 403


def test_twilio_without_an_auth_token_configured_refuses_everything(client, settings):
    settings.TWILIO_AUTH_TOKEN = ""
    params = status_params()
    signature = twilio_signature("", f"{PUBLIC}{STATUS_PATH}", params.items())
    assert twilio_post(client, STATUS_PATH, params, signature=signature).status_code == 403


# --- Twilio status callbacks ----------------------------------------------------------------


def test_twilio_status_updates_the_message_and_refuses_a_replay(client):
    case = factories.case_in_state("outreach")
    msg = sent_message(case, "k1", provider_id="SM1")
    response = twilio_post(client, STATUS_PATH, status_params())
    assert response.status_code == 204
    msg.refresh_from_db()
    assert msg.status == "delivered"
    assert twilio_post(client, STATUS_PATH, status_params()).status_code == 403
    # Out of order: "sent" after "delivered" is accepted (a new callback) but changes nothing.
    assert twilio_post(client, STATUS_PATH, status_params(status="sent")).status_code == 204
    msg.refresh_from_db()
    assert msg.status == "delivered"
    assert CaseEvent.objects.filter(case=case, kind="message_status").count() == 1


def test_twilio_status_for_an_unknown_message_is_accepted_and_ignored(client):
    response = twilio_post(client, STATUS_PATH, status_params(sid="SMunknown"))
    assert response.status_code == 204
    assert not Message.objects.exists()


def test_twilio_status_with_missing_fields_is_a_400(client):
    response = twilio_post(client, STATUS_PATH, {"MessageSid": "SM1"})
    assert response.status_code == 400
    assert b"MessageStatus" in response.content
    assert WebhookReceipt.objects.count() == 0


def test_twilio_webhooks_are_post_only(client):
    assert client.get(STATUS_PATH).status_code == 405
    assert client.get(INBOUND_PATH).status_code == 405


# --- Twilio inbound -------------------------------------------------------------------------


def test_twilio_stop_revokes_and_confirms_with_twiml(client):
    case = factories.case_in_state("outreach")
    response = twilio_post(client, INBOUND_PATH, inbound_params("Stop."))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/xml")
    body = response.content.decode()
    assert "<Response><Message>Acme Lending: you will get no more messages here." in body
    assert not Customer.objects.get(pk=case.customer_id).has_consent("sms")
    assert twilio_post(client, INBOUND_PATH, inbound_params("Stop.")).status_code == 403

    restart = twilio_post(client, INBOUND_PATH, inbound_params("START", sid="SMin2"))
    assert "Reply STOP to opt out" in restart.content.decode()
    assert Customer.objects.get(pk=case.customer_id).has_consent("sms")


def test_twilio_help_answers_via_twiml(client):
    factories.case()
    response = twilio_post(client, INBOUND_PATH, inbound_params("HELP"))
    assert response.status_code == 200
    body = response.content.decode()
    assert body.startswith('<?xml version="1.0" encoding="UTF-8"?><Response><Message>')
    assert "Acme Lending" in body
    assert "Reply STOP to opt out" in body


def test_twilio_free_text_gets_an_empty_response_and_escalates_hardship(client):
    case = factories.case_in_state("outreach")
    response = twilio_post(client, INBOUND_PATH, inbound_params("I lost my job & can't pay"))
    assert response.content.decode().endswith("<Response/>")
    case.refresh_from_db()
    assert (case.state, case.escalation_reason, case.priority) == (
        "escalated",
        "customer_reply",
        60,
    )


def test_twilio_free_text_opt_out_revokes_and_escalates(client):
    case = factories.case_in_state("outreach")
    twilio_post(client, INBOUND_PATH, inbound_params("please don't text me again"))
    case.refresh_from_db()
    assert case.escalation_reason == "opt_out_confirmation"
    assert not Customer.objects.get(pk=case.customer_id).has_consent("sms")


def test_twilio_inbound_without_sender_is_a_400(client):
    response = twilio_post(client, INBOUND_PATH, {"MessageSid": "SM1", "Body": "STOP"})
    assert response.status_code == 400
    assert InboundMessage.objects.count() == 0


def test_a_reply_escapes_the_brand_in_twiml(client, settings):
    settings.BRAND_NAME = "A&B <Bank>"
    factories.case()
    body = twilio_post(client, INBOUND_PATH, inbound_params("info")).content.decode()
    assert "A&amp;B &lt;Bank&gt;:" in body


# --- WhatsApp -------------------------------------------------------------------------------


def test_whatsapp_verification_handshake(client, settings):
    query = {
        "hub.mode": "subscribe",
        "hub.verify_token": VERIFY_TOKEN,
        "hub.challenge": "1158201444",
    }
    ok = client.get(WHATSAPP_PATH, query)
    assert ok.status_code == 200
    assert ok.content == b"1158201444"
    assert client.get(WHATSAPP_PATH, {**query, "hub.verify_token": "wrong"}).status_code == 403
    assert client.get(WHATSAPP_PATH, {**query, "hub.mode": "unsubscribe"}).status_code == 403
    assert client.get(WHATSAPP_PATH, {"hub.mode": "subscribe"}).status_code == 403
    missing = {k: v for k, v in query.items() if k != "hub.challenge"}
    assert client.get(WHATSAPP_PATH, missing).status_code == 400
    settings.WHATSAPP_VERIFY_TOKEN = ""
    assert client.get(WHATSAPP_PATH, {**query, "hub.verify_token": ""}).status_code == 403
    assert client.put(WHATSAPP_PATH).status_code == 405


def test_whatsapp_refuses_unsigned_missigned_and_replayed(client):
    case = factories.case_in_state("outreach")
    msg = sent_message(case, "k-wa", channel="whatsapp", provider_id="wamid.out1")
    payload = whatsapp_payload(
        statuses=[{"id": "wamid.out1", "status": "delivered", "timestamp": "1767225600"}]
    )
    body = json.dumps(payload).encode()
    assert whatsapp_post(client, body, signature="").status_code == 403
    wrong = whatsapp_signature("another-secret", body)
    assert whatsapp_post(client, body, signature=wrong).status_code == 403
    signed_other = whatsapp_signature(APP_SECRET, body + b" ")
    assert whatsapp_post(client, body, signature=signed_other).status_code == 403
    msg.refresh_from_db()
    assert msg.status == "sent"

    assert whatsapp_post(client, body).status_code == 200
    msg.refresh_from_db()
    assert msg.status == "delivered"
    assert whatsapp_post(client, body).status_code == 403
    # The same status inside another delivery (Meta batches differently on retry) is
    # accepted and applied once.
    payload["entry"][0]["id"] = "WABA-retry"
    assert whatsapp_post(client, payload).status_code == 200
    assert CaseEvent.objects.filter(case=case, kind="message_status").count() == 1


def test_whatsapp_statuses_move_forward_and_fall_back_to_our_key(client):
    case = factories.case_in_state("outreach")
    msg = sent_message(case, "k-wa", channel="whatsapp")
    read = {
        "id": "wamid.out2",
        "status": "read",
        "timestamp": "1767225600",
        "biz_opaque_callback_data": "k-wa",
    }
    delivered = {**read, "status": "delivered", "timestamp": "1767225500"}
    assert whatsapp_post(client, whatsapp_payload(statuses=[read, delivered])).status_code == 200
    msg.refresh_from_db()
    assert msg.status == "read"
    assert msg.provider_message_id == "wamid.out2"
    assert msg.read_at.timestamp() == 1767225600


def test_whatsapp_failed_status_records_the_error_code(client):
    case = factories.case_in_state("outreach")
    msg = sent_message(case, "k-wa", channel="whatsapp", provider_id="wamid.out3")
    failed = {
        "id": "wamid.out3",
        "status": "failed",
        "timestamp": "1767225600",
        "errors": [{"code": 131047, "title": "Re-engagement message"}],
    }
    assert whatsapp_post(client, whatsapp_payload(statuses=[failed])).status_code == 200
    msg.refresh_from_db()
    assert msg.status == "failed"
    event = CaseEvent.objects.get(case=case, kind="message_status")
    assert event.data["error_code"] == "131047"


def whatsapp_case():
    return factories.case_in_state(
        "outreach", customer={"whatsapp": PHONE, "consent": {"whatsapp": True, "sms": True}}
    )


def test_whatsapp_stop_revokes_whatsapp_only_and_queues_the_confirmation(client):
    case = whatsapp_case()
    response = whatsapp_post(client, whatsapp_payload(messages=[wa_text("wamid.in1", "STOP")]))
    assert response.status_code == 200
    customer = Customer.objects.get(pk=case.customer_id)
    assert customer.consent["whatsapp"]["value"] is False
    assert customer.consent["whatsapp"]["source"] == "whatsapp_reply_stop"
    assert customer.has_consent("sms")
    reply = Message.objects.get(key="reply:wamid.in1")
    assert (reply.purpose, reply.channel, reply.status) == ("reply", "whatsapp", "queued")
    assert "Reply START" in reply.body_masked


def test_whatsapp_help_queues_a_reply_row_for_the_dispatcher(client):
    case = whatsapp_case()
    whatsapp_post(client, whatsapp_payload(messages=[wa_text("wamid.in2", "help")]))
    reply = Message.objects.get(key="reply:wamid.in2")
    assert reply.purpose == "reply"
    assert reply.status == "queued"
    assert reply.to == PHONE
    assert reply.case_id == case.pk
    assert reply.body_masked.startswith("Acme Lending:")
    assert "Reply STOP to opt out" in reply.body_masked
    [event] = CaseEvent.objects.filter(case=case, kind="inbound_message")
    # The customer's words are sealed (encrypted) in the timeline.
    assert sealed_opened(event.data) == {"channel": "whatsapp", "kind": "help", "text": "help"}


def test_whatsapp_free_text_question_escalates_and_opens_the_window(client):
    from channels.inbound import whatsapp_window_open

    case = whatsapp_case()
    assert not whatsapp_window_open(case.customer)
    payload = whatsapp_payload(messages=[wa_text("wamid.in3", "Can I pay next week?")])
    assert whatsapp_post(client, payload).status_code == 200
    case.refresh_from_db()
    assert (case.state, case.escalation_reason, case.priority) == (
        "escalated",
        "customer_reply",
        40,
    )
    assert whatsapp_window_open(case.customer)
    assert not Message.objects.filter(purpose="reply").exists()


def test_whatsapp_button_reply_counts_as_its_label(client):
    case = whatsapp_case()
    tap = {
        "from": "447911123456",
        "id": "wamid.in4",
        "timestamp": "1767225600",
        "type": "button",
        "button": {"text": "Stop", "payload": "stop"},
    }
    whatsapp_post(client, whatsapp_payload(messages=[tap]))
    assert not Customer.objects.get(pk=case.customer_id).has_consent("whatsapp")


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"not json", b"not JSON"),
        (b"[1, 2]", b"'entry'"),
        (b'{"entry": [{"changes": "nope"}]}', b"'changes'"),
        (b'{"entry": [{"changes": [{"value": 3}]}]}', b"'value'"),
        (b'{"entry": [{"changes": [{"value": {"statuses": [{"status": "read"}]}}]}]}', b"'id'"),
        (b'{"entry": [{"changes": [{"value": {"messages": [{"id": "w"}]}}]}]}', b"'from'"),
        (b'{"entry": [{"changes": [{"value": {"messages": {"id": "w"}}}]}]}', b"list"),
        (b"\xff\xfe", b"not JSON"),
    ],
)
def test_whatsapp_malformed_signed_bodies_are_a_400(client, body, reason):
    response = whatsapp_post(client, body)
    assert response.status_code == 400
    assert reason in response.content
    assert WebhookReceipt.objects.count() == 0


def test_whatsapp_a_bad_item_rejects_the_whole_body_without_applying_any(client):
    case = whatsapp_case()
    payload = whatsapp_payload(messages=[wa_text("wamid.in5", "STOP"), {"id": "wamid.in6"}])
    assert whatsapp_post(client, payload).status_code == 400
    assert Customer.objects.get(pk=case.customer_id).has_consent("whatsapp")
    assert not InboundMessage.objects.exists()


# --- email unsubscribe ----------------------------------------------------------------------


def unsubscribe_path(customer) -> str:
    return f"/channels/unsubscribe/{unsubscribe_token(customer=customer)}/"


def test_unsubscribe_get_asks_and_changes_nothing(client):
    case = factories.case_in_state("outreach")
    assert unsubscribe_url(customer=case.customer) == PUBLIC + unsubscribe_path(case.customer)
    response = client.get(unsubscribe_path(case.customer))
    assert response.status_code == 200
    assert b"Unsubscribe from Acme Lending emails?" in response.content
    assert b'<form method="post">' in response.content
    assert Customer.objects.get(pk=case.customer_id).has_consent("email")


def test_unsubscribe_post_revokes_email_consent(client):
    case = factories.case_in_state("outreach")
    csrf_client = client.__class__(enforce_csrf_checks=True)
    response = csrf_client.post(unsubscribe_path(case.customer))
    assert response.status_code == 200
    assert b"You are unsubscribed" in response.content
    customer = Customer.objects.get(pk=case.customer_id)
    assert customer.consent["email"]["value"] is False
    assert customer.consent["email"]["source"] == "email_unsubscribe"
    assert customer.has_consent("sms")
    [event] = CaseEvent.objects.filter(case=case, kind="consent_revoked")
    assert event.data == {"channel": "email", "source": "email_unsubscribe"}


def test_rfc8058_one_click_post_without_csrf_token(client):
    case = factories.case_in_state("outreach")
    csrf_client = client.__class__(enforce_csrf_checks=True)
    response = csrf_client.post(
        unsubscribe_path(case.customer),
        data="List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200
    assert not Customer.objects.get(pk=case.customer_id).has_consent("email")
    # A second click is harmless: still unsubscribed, recorded once.
    assert csrf_client.post(unsubscribe_path(case.customer)).status_code == 200
    assert CaseEvent.objects.filter(case=case, kind="consent_revoked").count() == 1


def test_unsubscribe_with_a_bad_token_is_a_404_page(client):
    case = factories.case()
    token = unsubscribe_token(customer=case.customer)
    for bad in ("garbage", token[:-3] + "xyz"):
        response = client.get(f"/channels/unsubscribe/{bad}/")
        assert response.status_code == 404
        assert b"We could not use this link" in response.content
        assert client.post(f"/channels/unsubscribe/{bad}/").status_code == 404
    assert Customer.objects.get(pk=case.customer_id).has_consent("email")
    assert client.put(f"/channels/unsubscribe/{token}/").status_code == 405


# --- a real signed callback from the Twilio stand-in ----------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_signed_status_callback_from_the_twilio_standin(live_server, settings):
    settings.PUBLIC_BASE_URL = live_server.url
    case = factories.case()
    msg = sent_message(case, "k-live", provider_id="SMlive1")
    callback_url = f"{live_server.url}{STATUS_PATH}"
    with TwilioStandIn(account_sid="AC123", auth_token=TWILIO_TOKEN) as standin:
        forged = standin.send_status_callback("SMlive1", "delivered", callback_url, "wrong-token")
        assert forged == 403
        assert standin.send_status_callback("SMlive1", "delivered", callback_url) == 204
        msg.refresh_from_db()
        assert msg.status == "delivered"
        assert Case.objects.get(pk=case.pk).events.filter(kind="message_status").count() == 1
        assert standin.send_status_callback("SMlive1", "delivered", callback_url) == 403
    assert WebhookReceipt.objects.filter(dedupe_key="status:SMlive1:delivered").exists()


def test_whatsapp_via_twilio_revokes_whatsapp_consent(client):
    case = whatsapp_case()
    response = twilio_post(client, INBOUND_PATH, inbound_params("stop", sender=f"whatsapp:{PHONE}"))
    assert "<Message>" in response.content.decode()
    customer = Customer.objects.get(pk=case.customer_id)
    assert customer.consent["whatsapp"]["source"] == "whatsapp_reply_stop"
    assert customer.has_consent("sms")
    assert InboundMessage.objects.get().channel == "whatsapp"


def test_whatsapp_odd_items_are_accepted_without_harm(client):
    case = whatsapp_case()
    odd_type = {"from": "447911123456", "id": "wamid.in7", "type": ["x"]}
    image = {"from": "447911123456", "id": "wamid.in8", "type": "image", "image": {"id": "m1"}}
    deleted = {"id": "wamid.out9", "status": "deleted"}
    unknown_sender = wa_text("wamid.in9", "HELP", sender="15005550006")
    payload = whatsapp_payload(statuses=[deleted], messages=[odd_type, image, unknown_sender])
    assert whatsapp_post(client, payload).status_code == 200
    texts = [
        text_open(e.data["text"])
        for e in CaseEvent.objects.filter(case=case, kind="inbound_message")
    ]
    assert texts == ["", "[image]"]
    assert InboundMessage.objects.count() == 3
    assert not Message.objects.exists()  # no case to hang a reply to the unknown sender on
