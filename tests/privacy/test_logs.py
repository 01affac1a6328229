"""Structured, redacted logs: the JSON formatter, the redaction patterns, and a full flow
(trigger → SMS through the outbox provider → mini-app code → promise → writeback to the demo
core) logged at DEBUG through the configured handler, with none of the case's phone number,
email address, link token, code or API key in what was written."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import re

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from cases.models import Case
from channels.dispatch import messages_dispatch
from channels.models import CaseOutreach, Message, OutboxEntry
from channels.sequences import sequences_install_shipped
from channels.services import outreach_advance, outreach_begin
from miniapp.services import link_resolve
from policies.services import case_prepare
from privacy.logs import JsonFormatter, RedactFilter, redact
from tests import factories
from tests.miniapp.test_flow import Opened, choose, promise

PHONE = "+447400123456"
EMAIL = "grace.hopper.privacy@example.org"
NAME = "Grace Hopper"
# Loggers of our own apps and the libraries we run on, all at DEBUG for the test.
LOGGERS = (
    "",
    "cases",
    "channels",
    "miniapp",
    "writeback",
    "policies",
    "privacy",
    "hooks",
    "agents",
    "metrics",
    "democore",
    "django",
    "django.request",
    "django_q",
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("to +447700900461 now", "to [phone] now"),
        ("to +44 7700 900461", "to [phone]"),
        ("call 07700 900461", "call [phone]"),
        ("call (020) 7946 0958", "call [phone]"),
        ("US (555) 123-4567 or 555.123.4567", "US [phone] or [phone]"),
        ("from Grace.Hopper+x@example.org.", "from [email]."),
        ("GET /m/3q2-7wEr_aZxY0123456789abcdefABCDEF/verify/", "GET /m/[token]/verify/"),
        ("Authorization: Bearer clk_AbC123_xyz-987", "Authorization: Bearer clk_[redacted]"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.x", "Authorization: Bearer [redacted]"),
        ("Your Bank code is 493817. It expires.\n\n@bank.example #493817", None),
        ("card 4111 1111 1111 1111 / 4111-1111-1111-1111 / 4111111111111111", None),
        ("?token=s3cr3t-value&x=1", "?token=[redacted]&x=1"),
    ],
)
def test_redaction_patterns(text, expected):
    result = redact(text)
    if expected is not None:
        assert result == expected
    assert not re.search(r"\d{6,}", result.replace("[code]", "")), result


def test_what_must_stay_readable_does():
    for text in (
        "case 0190f4a2-7b3c-7d4e-8000-123456789012 resolved in 0.123456 s",
        "writeback 3 op(s), HTTP 503 after 2 attempt(s) on 2026-11-01T09:00:00+00:00",
        "balance 420.50 GBP, 22 days past due, account ACC-000123, batch of 1000",
        "127.0.0.1 port 8100",
    ):
        assert redact(text) == text


def _record(msg: str, *args, **extra) -> logging.LogRecord:
    record = logging.getLogger("cases").makeRecord(
        "cases", logging.WARNING, __file__, 1, msg, args, None, extra=extra
    )
    RedactFilter().filter(record)
    return record


def test_the_filter_redacts_arguments_extras_and_tracebacks():
    try:
        raise ValueError(f"duplicate key (phone)=({PHONE})")
    except ValueError:
        import sys

        exc_info = sys.exc_info()
    record = logging.getLogger("cases").makeRecord(
        "cases",
        logging.ERROR,
        __file__,
        1,
        "sent %s to %s",
        ("code 123456", EMAIL),
        exc_info,
        extra={"customer": {"phone": PHONE, "emails": [EMAIL]}, "count": 3},
    )
    RedactFilter().filter(record)
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert entry["message"] == "sent code [code] to [email]"
    assert entry["customer"] == {"phone": "[phone]", "emails": ["[email]"]}
    assert entry["count"] == 3
    assert "[phone]" in entry["exception"] and PHONE not in line and EMAIL not in line


def test_json_lines_carry_time_level_logger_message_and_request_id():
    record = _record("hello %s", "world", request_id="req-42", step="dispatch")
    entry = json.loads(JsonFormatter().format(record))
    assert entry["level"] == "WARNING" and entry["logger"] == "cases"
    assert entry["message"] == "hello world" and entry["request_id"] == "req-42"
    assert entry["step"] == "dispatch"
    assert dt.datetime.fromisoformat(entry["time"]).tzinfo is not None
    record = _record("no request", request_id="-")
    assert "request_id" not in json.loads(JsonFormatter().format(record))


def test_log_format_and_the_handler_are_configured(settings):
    assert settings.LOG_FORMAT == "json"  # DEBUG is off in the tests, as in production
    console = settings.LOGGING["handlers"]["console"]
    assert console["formatter"] == "json" and "redact" in console["filters"]


# --- a full flow, logged ------------------------------------------------------------------------


@pytest.fixture
def captured_logs():
    """The configured console handler (filters and formatter as in production), writing to a
    buffer, with every logger at DEBUG for the test."""
    console = next(h for h in logging.getLogger().handlers if h.get_name() == "console")
    buffer = io.StringIO()
    previous_stream = console.setStream(buffer)
    levels = {name: logging.getLogger(name).level for name in LOGGERS}
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield buffer
    finally:
        console.setStream(previous_stream)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _outreach_now(case: Case) -> None:
    """The jobs the trigger enqueued (run inline) prepared the case and began outreach; in
    the customer's quiet hours the reminder waits. Send it now, as at midday in their zone."""
    from channels.contact_rules import customer_zone

    if OutboxEntry.objects.filter(to=PHONE).exists():
        return
    zone = customer_zone(case.customer)
    now = timezone.now().astimezone(zone).replace(hour=12, minute=0).astimezone(dt.UTC)
    Case.objects.filter(pk=case.pk).update(triggered_at=now, expires_at=now + dt.timedelta(days=7))
    case_prepare(case=case.pk)
    outreach = outreach_begin(case=case.pk) or CaseOutreach.objects.get(case=case)
    CaseOutreach.objects.filter(pk=outreach.pk).update(next_due_at=now)
    outreach_advance(outreach_id=outreach.pk, now=now)
    Message.objects.filter(case=case).update(not_before=timezone.now() - dt.timedelta(seconds=1))
    assert messages_dispatch().sent == 1


@pytest.mark.django_db(transaction=True)
def test_a_full_flow_logs_no_phone_email_token_or_code(demo_core, settings, captured_logs):
    from writeback.models import Outcome, WritebackTarget

    settings.CORE_API_TOKEN = "test-core-token"
    factories.writeback_target_shipped()
    WritebackTarget.objects.filter(key="core_rest").update(base_url=demo_core.url)
    factories.workflow_shipped("promise_to_pay")
    sequences_install_shipped()
    _source, api_key = factories.api_client("privacy-source")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key}")

    # 1. The trigger, through the API.
    body = factories.trigger_body(
        customer={"name": NAME, "phone": PHONE, "email": EMAIL, "external_id": "C-PRIV-1"}
    )
    response = api.post("/api/v1/triggers/", body, format="json")
    assert response.status_code == 201, response.content
    case = Case.objects.get(pk=response.json()["id"])
    # A request the API refuses is logged by Django (a 4xx warning): its path goes through
    # the filter too.
    assert api.get(f"/api/v1/cases/{case.pk}/?email={EMAIL}").status_code in (200, 404)

    # 2. Outreach by SMS through the outbox provider: the message carries the link.
    _outreach_now(case)
    entry = OutboxEntry.objects.get(to=PHONE)
    token = re.search(r"/m/([A-Za-z0-9_-]{40,})/", entry.body).group(1)
    assert link_resolve(token=token).case_id == case.pk

    # 3. The mini-app: open, verify with the one-time code, promise, confirm.
    opened = Opened(case=Case.objects.get(pk=case.pk), token=token)
    client = Client()
    assert client.get(opened.url()).status_code == 200
    client.post(opened.url("verify", "next=promise_to_pay"), {"step": "send"})
    code_entry = OutboxEntry.objects.filter(to=PHONE).order_by("-pk").first()
    code = re.search(r"#(\d{6})$", code_entry.body).group(1)
    verified = client.post(
        opened.url("verify", "next=promise_to_pay"), {"step": "code", "code": code}
    )
    assert verified.status_code == 302, verified.content
    chosen = choose(client, opened, "promise_to_pay", promise(opened))
    assert chosen["Location"] == opened.url("review")
    assert client.post(opened.url("review"))["Location"] == opened.url("done")
    # An unknown link is logged by Django as a 404 with its path: the token is masked.
    client.get(f"/m/{token[:-4]}abcd/")

    # 4. The writeback reached the demo core of record.
    assert opened.reload().state == "resolved"
    assert Outcome.objects.get(case=case).state == "confirmed"

    # What slipped into a log line is redacted too (a developer's debug line).
    logging.getLogger("channels").debug("sending to %s (%s), code %s", PHONE, EMAIL, code)

    text = captured_logs.getvalue()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert len(lines) > 5, text  # the flow did log
    assert any(line["logger"].startswith("django") for line in lines), text
    national = "0" + PHONE.removeprefix("+44")
    for secret in (PHONE, PHONE.removeprefix("+"), national, EMAIL, token, api_key, code, NAME):
        leaks = [line for line in text.splitlines() if secret in line]
        at = leaks[0].find(secret) if leaks else 0
        assert not leaks, leaks[0][max(0, at - 300) : at + 100]
    assert "[phone]" in text and "[email]" in text and "[code]" in text
