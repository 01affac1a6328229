"""Each provider against its loopback stand-in: the exact request, the answers mapped to
sent / retry / permanent failure, timeouts, a stopped server, and Twilio reconciliation."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from channels.models import OutboxEntry
from channels.providers import PROVIDERS, provider_for
from channels.providers.base import OutgoingMessage, ProviderError, WhatsAppTemplate
from channels.providers.email import SmtpEmailProvider
from channels.providers.outbox import OutboxProvider
from channels.providers.twilio import TwilioSmsProvider
from channels.providers.whatsapp import WhatsAppCloudProvider
from tests.standins.smtp import SmtpStandIn
from tests.standins.twilio import TwilioStandIn
from tests.standins.whatsapp import WhatsAppStandIn

FIXTURES = Path(__file__).parent / "fixtures"
PHONE = "+447911123456"
BODY = "Hi Ana, your plan is ready: http://127.0.0.1:8000/m/tok-123/\nReply STOP to opt out"
SID, TOKEN = "AC123", "twilio-test-token"


def fixture(name: str):
    return json.loads((FIXTURES / name).read_text())


def sms(key: str = "case-1:step1", *, to: str = PHONE, body: str = BODY, **extra):
    return OutgoingMessage(key=key, channel="sms", to=to, body=body, **extra)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def assert_no_secrets(error: ProviderError, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in error.detail and secret not in str(error)


@pytest.fixture
def twilio():
    with (
        TwilioStandIn(account_sid=SID, auth_token=TOKEN) as standin,
        override_settings(
            SMS_PROVIDER="twilio",
            TWILIO_API_BASE=standin.url,
            TWILIO_ACCOUNT_SID=SID,
            TWILIO_AUTH_TOKEN=TOKEN,
            TWILIO_FROM_NUMBER="+15005550006",
        ),
    ):
        yield standin


@pytest.fixture
def whatsapp():
    with (
        WhatsAppStandIn(token="wa-test-token") as standin,
        override_settings(
            WHATSAPP_PROVIDER="cloud_api",
            WHATSAPP_API_BASE=standin.url,
            WHATSAPP_TOKEN="wa-test-token",
            WHATSAPP_PHONE_NUMBER_ID="1234567890",
        ),
    ):
        yield standin


@pytest.fixture
def smtp():
    with (
        SmtpStandIn() as standin,
        override_settings(
            EMAIL_PROVIDER="smtp",
            EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
            EMAIL_HOST="127.0.0.1",
            EMAIL_PORT=standin.port,
            EMAIL_USE_TLS=False,
            EMAIL_TIMEOUT=5,
            DEFAULT_FROM_EMAIL="reminders@bank.example",
            BRAND_NAME="Closeloop Bank",
        ),
    ):
        yield standin


# --- choosing a provider ----------------------------------------------------------------------


def test_the_outbox_is_the_default_for_every_channel():
    for channel in ("sms", "email", "whatsapp"):
        provider = provider_for(channel)
        assert isinstance(provider, OutboxProvider)
        assert (provider.channel, provider.key) == (channel, "outbox")
        assert provider_for(channel) is provider  # built once per configuration


def test_the_registry_holds_one_class_per_channel_and_key():
    assert set(PROVIDERS) == {
        ("sms", "outbox"),
        ("email", "outbox"),
        ("whatsapp", "outbox"),
        ("sms", "twilio"),
        ("email", "smtp"),
        ("whatsapp", "cloud_api"),
    }


def test_a_changed_setting_builds_a_provider_from_the_new_values(twilio):
    first = provider_for("sms")
    assert isinstance(first, TwilioSmsProvider) and first.messages_url.startswith(twilio.url)
    with override_settings(TWILIO_FROM_NUMBER="+15005550009"):
        second = provider_for("sms")
        assert second is not first and second.from_number == "+15005550009"
    assert provider_for("sms") is first
    assert isinstance(provider_for("email"), OutboxProvider)


def test_an_unknown_provider_key_is_a_clear_configuration_error():
    with override_settings(SMS_PROVIDER="nexmo"), pytest.raises(ImproperlyConfigured) as caught:
        provider_for("sms")
    assert "SMS_PROVIDER='nexmo'" in str(caught.value)
    assert "outbox, twilio" in str(caught.value)
    with override_settings(EMAIL_PROVIDER="twilio"), pytest.raises(ImproperlyConfigured):
        provider_for("email")  # a key of another channel
    with pytest.raises(ImproperlyConfigured, match="channels are email, sms, whatsapp"):
        provider_for("fax")


def test_missing_credentials_are_named():
    with (
        override_settings(
            SMS_PROVIDER="twilio",
            TWILIO_ACCOUNT_SID="AC1",
            TWILIO_AUTH_TOKEN="",
            TWILIO_FROM_NUMBER="",
        ),
        pytest.raises(ImproperlyConfigured) as caught,
    ):
        provider_for("sms")
    assert "TWILIO_AUTH_TOKEN, TWILIO_FROM_NUMBER" in str(caught.value)
    with (
        override_settings(
            WHATSAPP_PROVIDER="cloud_api", WHATSAPP_TOKEN="", WHATSAPP_PHONE_NUMBER_ID=""
        ),
        pytest.raises(ImproperlyConfigured, match="WHATSAPP_TOKEN, WHATSAPP_PHONE_NUMBER_ID"),
    ):
        provider_for("whatsapp")


# --- outbox -----------------------------------------------------------------------------------


def test_the_outbox_keeps_one_entry_per_message_key(db):
    provider = provider_for("sms")
    first = provider.send(sms())
    again = provider.send(sms(body="a different rendering of the same message"))
    entry = OutboxEntry.objects.get()
    assert first.provider_message_id == again.provider_message_id == f"outbox-{entry.pk}"
    assert first.status == "sent"
    assert (entry.channel, entry.to, entry.body) == ("sms", PHONE, BODY)


def test_the_outbox_finds_what_it_sent_by_message_key(db):
    provider = provider_for("email")
    assert provider.can_reconcile and not provider.thread_safe
    message = OutgoingMessage(
        key="case-1:step1:email", channel="email", to="ana@example.com", body="Hi", subject="S"
    )
    since = timezone.now()
    assert provider.find_sent(message, body_sha256=sha256("Hi"), since=since) is None
    sent = provider.send(message)
    assert provider.find_sent(message, body_sha256="", since=since) == sent.provider_message_id
    assert OutboxEntry.objects.get().subject == "S"


def test_the_outbox_shows_which_whatsapp_template_went_out(db):
    template = WhatsAppTemplate(name="arrears_reminder", language="en_GB", parameters=["Ana", "L"])
    message = OutgoingMessage(
        key="k", channel="whatsapp", to=PHONE, body="free text", whatsapp_template=template
    )
    provider_for("whatsapp").send(message)
    assert OutboxEntry.objects.get().body == "[WhatsApp template arrears_reminder (en_GB)]\nAna\nL"


# --- Twilio -----------------------------------------------------------------------------------


def test_twilio_send_posts_the_form_with_basic_auth(twilio):
    result = provider_for("sms").send(
        sms(status_callback_url="https://closeloop.example/channels/twilio/status/")
    )
    [request] = twilio.requests
    assert (request.method, request.path) == ("POST", f"/2010-04-01/Accounts/{SID}/Messages.json")
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    credentials = base64.b64decode(request.headers["authorization"].removeprefix("Basic "))
    assert credentials.decode() == f"{SID}:{TOKEN}"
    assert request.form() == {
        "To": PHONE,
        "From": "+15005550006",
        "Body": BODY,
        "StatusCallback": "https://closeloop.example/channels/twilio/status/",
    }
    [recorded] = twilio.messages
    assert result.provider_message_id == recorded["sid"] and result.provider_message_id[:2] == "SM"
    # Twilio's "queued" means it took the message; our `queued` would mean "send it again".
    assert (result.status, result.raw_status) == ("sent", "queued")


def test_twilio_send_without_a_callback_sends_no_callback_field(twilio):
    provider_for("sms").send(sms())
    assert "StatusCallback" not in twilio.requests[-1].form()


def test_twilio_recorded_create_answer_is_read(twilio):
    twilio.answer_next(201, fixture("twilio_message_created.json"))
    result = provider_for("sms").send(sms())
    assert result.provider_message_id == "SM1f0e8ae6ade43cb3c0ce4525424e404f"
    assert result.status == "sent"


@pytest.mark.parametrize("status", [429, 500, 503])
def test_twilio_overload_and_server_errors_are_retried(twilio, status):
    twilio.fail_next(1, status=status)
    with pytest.raises(ProviderError) as caught:
        provider_for("sms").send(sms())
    assert not caught.value.permanent and caught.value.code == str(status)
    assert provider_for("sms").send(sms()).provider_message_id  # the next try goes through
    assert len(twilio.messages) == 1


@pytest.mark.parametrize("code", [21211, 21408, 21610, 21614])
def test_twilio_recipient_errors_are_permanent_and_name_the_code(twilio, code):
    twilio.fail_permanently(to=PHONE, code=code)
    with pytest.raises(ProviderError) as caught:
        provider_for("sms").send(sms())
    assert caught.value.permanent and caught.value.code == str(code)
    assert f"Twilio error {code}" in caught.value.detail
    # Twilio's own message quotes the number; ours quotes neither it nor the text.
    assert_no_secrets(caught.value, PHONE, BODY, TOKEN)
    assert twilio.messages == []


def test_twilio_recorded_unsubscribed_answer_is_permanent(twilio):
    twilio.answer_next(400, fixture("twilio_error_21610.json"))
    with pytest.raises(ProviderError) as caught:
        provider_for("sms").send(sms())
    assert caught.value.permanent and caught.value.code == "21610"
    assert "unsubscribed" in caught.value.detail and PHONE not in caught.value.detail


def test_twilio_unknown_client_errors_are_permanent(twilio):
    twilio.answer_next(400, {"code": 21999, "message": "Something new", "status": 400})
    with pytest.raises(ProviderError) as caught:
        provider_for("sms").send(sms())
    assert caught.value.permanent and caught.value.detail == "Twilio error 21999 (HTTP 400)"
    twilio.answer_next(404, {"status": 404})
    with pytest.raises(ProviderError) as caught:
        provider_for("sms").send(sms())
    assert caught.value.permanent and caught.value.code == "404"


def test_twilio_refusing_our_credentials_is_retried_not_blamed_on_the_number(twilio):
    with override_settings(TWILIO_AUTH_TOKEN="wrong-token"), pytest.raises(ProviderError) as caught:
        provider_for("sms").send(sms())
    assert not caught.value.permanent and "HTTP 401" in caught.value.detail
    assert_no_secrets(caught.value, "wrong-token", TOKEN, BODY)


def test_twilio_timeout_is_retryable(twilio):
    twilio.delay = 2.0
    provider = TwilioSmsProvider(timeout=0.2)
    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        provider.send(sms())
    assert time.monotonic() - started < 1.5
    assert not caught.value.permanent and caught.value.code == "timeout"
    assert_no_secrets(caught.value, BODY, TOKEN)


def test_twilio_stopped_is_a_refused_connection_and_retryable(twilio):
    provider = provider_for("sms")
    provider.send(sms())  # leaves a kept-alive connection in the pool
    twilio.stop()
    with pytest.raises(ProviderError) as caught:
        provider.send(sms())
    assert not caught.value.permanent
    assert caught.value.code in ("refused", "network")
    assert_no_secrets(caught.value, BODY, TOKEN)


def test_twilio_find_sent_matches_by_body_hash(twilio):
    provider = provider_for("sms")
    since = timezone.now()
    sent = provider.send(sms(body="first " + BODY))
    provider.send(sms(body="second " + BODY))
    provider.send(sms(to="+447911000000", body="third " + BODY))
    message = sms(body="")  # reconciliation knows the address and the hash, not the text
    found = provider.find_sent(message, body_sha256=sha256("first " + BODY), since=since)
    assert found == sent.provider_message_id
    [listing] = [r for r in twilio.requests if r.method == "GET"]
    assert listing.query["To"] == PHONE
    assert listing.query["DateSent>"] == (since - dt.timedelta(minutes=5)).date().isoformat()
    assert provider.find_sent(message, body_sha256=sha256("never sent"), since=since) is None
    # Found only if created after the claim (less a margin for Twilio's whole seconds).
    later = timezone.now() + dt.timedelta(minutes=10)
    assert provider.find_sent(message, body_sha256=sha256("first " + BODY), since=later) is None


def test_twilio_find_sent_follows_pages(twilio):
    provider = provider_for("sms")
    since = timezone.now()
    target = provider.send(sms(body="the one"))
    for n in range(120):  # newer messages push the target onto the second page
        provider.send(sms(body=f"other {n}"))
    found = provider.find_sent(sms(body=""), body_sha256=sha256("the one"), since=since)
    assert found == target.provider_message_id
    assert [r.query.get("Page") for r in twilio.requests if r.method == "GET"] == [None, "1"]


def test_twilio_find_sent_when_twilio_is_down_raises_retryable(twilio):
    twilio.delay = 2.0
    with pytest.raises(ProviderError) as caught:
        TwilioSmsProvider(timeout=0.2).find_sent(
            sms(), body_sha256=sha256(BODY), since=timezone.now()
        )
    assert not caught.value.permanent


def test_twilio_stand_in_signs_status_callbacks(twilio, live_server, db):
    # Any page of ours: the point is a real, correctly signed POST from the stand-in.
    from channels.signatures import twilio_signature_valid

    result = provider_for("sms").send(sms())
    received = {}

    @csrf_exempt
    def capture(request):
        from django.http import HttpResponse

        received["valid"] = twilio_signature_valid(
            TOKEN,
            request.build_absolute_uri(),
            request.POST.items(),
            request.headers.get("X-Twilio-Signature", ""),
        )
        received["params"] = dict(request.POST.items())
        return HttpResponse(status=204)

    from django.urls import path

    urlconf = type("urls", (), {"urlpatterns": [path("status/", capture)]})
    with override_settings(ROOT_URLCONF=urlconf):
        status = twilio.send_status_callback(
            result.provider_message_id, "delivered", f"{live_server.url}/status/", TOKEN
        )
    assert status == 204 and received["valid"]
    assert received["params"]["MessageStatus"] == "delivered"
    assert received["params"]["To"] == PHONE and received["params"]["AccountSid"] == SID


def test_twilio_stand_in_runs_in_a_process_of_its_own():
    # The dispatch benchmark's way: the stand-in must not share the sender's GIL.
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.standins.twilio", SID, TOKEN],
        cwd=Path(__file__).resolve().parents[2],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        with override_settings(
            SMS_PROVIDER="twilio",
            TWILIO_API_BASE=url,
            TWILIO_ACCOUNT_SID=SID,
            TWILIO_AUTH_TOKEN=TOKEN,
            TWILIO_FROM_NUMBER="+15005550006",
        ):
            sent = provider_for("sms").send(sms())
        process.stdin.write("report\n")
        process.stdin.flush()
        [received] = json.loads(process.stdout.readline())
        assert (received["sid"], received["To"], received["Body"]) == (
            sent.provider_message_id,
            PHONE,
            BODY,
        )
    finally:
        process.stdin.close()
        process.wait(timeout=10)
    assert process.returncode == 0


# --- WhatsApp ---------------------------------------------------------------------------------


def whatsapp_message(**extra):
    return OutgoingMessage(key="case-1:step1:whatsapp", channel="whatsapp", to=PHONE, **extra)


def test_whatsapp_text_payload_and_bearer_token(whatsapp):
    result = provider_for("whatsapp").send(whatsapp_message(body=BODY))
    [request] = whatsapp.requests
    assert (request.method, request.path) == ("POST", "/1234567890/messages")
    assert request.headers["authorization"] == "Bearer wa-test-token"
    assert request.json() == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "447911123456",
        "type": "text",
        "text": {"body": BODY, "preview_url": True},
        "biz_opaque_callback_data": "case-1:step1:whatsapp",
    }
    assert result.provider_message_id.startswith("wamid.") and result.status == "sent"


def test_whatsapp_template_payload(whatsapp):
    template = WhatsAppTemplate(
        name="arrears_reminder", language="en_GB", parameters=["Ana", "http://x/m/tok/"]
    )
    provider_for("whatsapp").send(whatsapp_message(body=BODY, whatsapp_template=template))
    [payload] = whatsapp.messages
    assert payload == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "447911123456",
        "type": "template",
        "template": {
            "name": "arrears_reminder",
            "language": {"code": "en_GB"},
            "components": [
                {
                    "type": "body",
                    "parameters": [
                        {"type": "text", "text": "Ana"},
                        {"type": "text", "text": "http://x/m/tok/"},
                    ],
                }
            ],
        },
        "biz_opaque_callback_data": "case-1:step1:whatsapp",
    }


def test_whatsapp_recorded_answers(whatsapp):
    provider = provider_for("whatsapp")
    whatsapp.answer_next(200, fixture("whatsapp_message_sent.json"))
    sent = provider.send(whatsapp_message(body=BODY))
    assert sent.provider_message_id.startswith("wamid.HBgMNDQ3OTEx")
    whatsapp.answer_next(400, fixture("whatsapp_error_131047.json"))
    with pytest.raises(ProviderError) as caught:
        provider.send(whatsapp_message(body=BODY))
    assert caught.value.permanent and caught.value.code == "131047"
    assert "24 hours" in caught.value.detail
    whatsapp.answer_next(400, fixture("whatsapp_error_130429.json"))
    with pytest.raises(ProviderError) as caught:
        provider.send(whatsapp_message(body=BODY))
    assert not caught.value.permanent and caught.value.code == "130429"


@pytest.mark.parametrize(
    ("code", "permanent"),
    [
        (131047, True),
        (131026, True),
        (131051, True),
        (132000, True),
        (132001, True),
        (100, True),
        (139999, True),  # unknown: a retry would fail the same way
        (130429, False),
        (131048, False),
        (131056, False),
    ],
)
def test_whatsapp_error_codes_map_to_permanent_or_retry(whatsapp, code, permanent):
    whatsapp.fail_for(PHONE, code=code)
    with pytest.raises(ProviderError) as caught:
        provider_for("whatsapp").send(whatsapp_message(body=BODY))
    assert caught.value.permanent is permanent and caught.value.code == str(code)
    assert_no_secrets(caught.value, BODY, "wa-test-token", "447911123456")


def test_whatsapp_server_errors_bad_token_timeouts_and_refusals_are_retried(whatsapp):
    provider = provider_for("whatsapp")
    whatsapp.fail_next(1, status=503)
    with pytest.raises(ProviderError) as caught:
        provider.send(whatsapp_message(body=BODY))
    assert not caught.value.permanent and caught.value.code == "503"
    with (
        override_settings(WHATSAPP_TOKEN="EAAG-stale-token"),
        pytest.raises(ProviderError) as caught,
    ):
        provider_for("whatsapp").send(whatsapp_message(body=BODY))
    assert not caught.value.permanent and caught.value.code == "190"
    assert_no_secrets(caught.value, "EAAG-stale-token")
    whatsapp.delay = 2.0
    with pytest.raises(ProviderError) as caught:
        WhatsAppCloudProvider(timeout=0.2).send(whatsapp_message(body=BODY))
    assert not caught.value.permanent and caught.value.code == "timeout"
    whatsapp.stop()
    with pytest.raises(ProviderError) as caught:
        provider.send(whatsapp_message(body=BODY))
    assert not caught.value.permanent and caught.value.code in ("refused", "network")
    assert whatsapp.messages == [] and not provider.can_reconcile


# --- email ------------------------------------------------------------------------------------


def email_message(**extra):
    values = {
        "key": "case-1:step1:email",
        "channel": "email",
        "to": "ana@example.com",
        "subject": "Your payment plan",
        "body": "Hi Ana,\n\nhttp://127.0.0.1:8000/m/tok-123/",
    }
    return OutgoingMessage(**{**values, **extra})


def test_email_headers_body_and_message_id(smtp):
    result = provider_for("email").send(
        email_message(
            html_body="<p>Hi Ana</p>",
            unsubscribe_url="https://closeloop.example/channels/unsubscribe/abc/",
        )
    )
    [envelope] = smtp.envelopes
    assert envelope.mail_from == "reminders@bank.example"
    assert envelope.rcpt_tos == ["ana@example.com"]
    [email] = smtp.messages
    assert email["From"] == "Closeloop Bank <reminders@bank.example>"
    assert email["To"] == "ana@example.com" and email["Subject"] == "Your payment plan"
    assert email["List-Unsubscribe"] == "<https://closeloop.example/channels/unsubscribe/abc/>"
    assert email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert email["X-Closeloop-Message"] == "case-1:step1:email"
    assert email["Message-ID"] == result.provider_message_id
    assert result.provider_message_id.endswith("@bank.example>")
    assert email.get_body(("plain",)).get_content().startswith("Hi Ana,")
    assert email.get_body(("html",)).get_content().strip() == "<p>Hi Ana</p>"


def test_email_without_unsubscribe_url_has_no_unsubscribe_headers(smtp):
    provider_for("email").send(email_message())
    [email] = smtp.messages
    assert "List-Unsubscribe" not in email and "List-Unsubscribe-Post" not in email
    assert not email.is_multipart()


def test_email_refused_recipient_is_permanent_and_a_busy_mailbox_is_retried(smtp):
    smtp.refuse("ana@example.com", code=550)
    with pytest.raises(ProviderError) as caught:
        provider_for("email").send(email_message())
    assert caught.value.permanent and caught.value.code == "550"
    assert_no_secrets(caught.value, "ana@example.com")
    smtp.refuse("ana@example.com", code=450)
    with pytest.raises(ProviderError) as caught:
        provider_for("email").send(email_message())
    assert not caught.value.permanent and caught.value.code == "450"
    assert smtp.messages == []


def test_email_timeout_and_stopped_server_are_retried(smtp):
    smtp.delay = 2.0
    started = time.monotonic()
    with override_settings(EMAIL_TIMEOUT=0.3), pytest.raises(ProviderError) as caught:
        provider_for("email").send(email_message())
    assert time.monotonic() - started < 1.5
    assert not caught.value.permanent
    smtp.stop()
    with pytest.raises(ProviderError) as caught:
        provider_for("email").send(email_message())
    assert not caught.value.permanent and "unavailable" in caught.value.detail
    assert not SmtpEmailProvider.can_reconcile
