"""Identity on the mini-app: one-time codes (6 digits, 10 minutes, single use, resend
cooldown, SMS only), known facts, the shared failure count and lock, and the five-minute
idle session."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.test import Client
from django.utils import timezone

from cases.models import CaseEvent
from channels.models import Message, OutboxEntry
from miniapp.models import CaseCodeDevice
from miniapp.sessions import SESSION_KEY
from tests.miniapp.test_flow import (
    choose,
    cooldown_over,
    enter_code,
    enter_facts,
    error_text,
    kinds,
    last_code,
    open_case,
    promise,
    send_code,
    verify_code,
)


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


# --- codes ----------------------------------------------------------------------------------


def test_code_is_six_digits_by_sms_ending_with_the_origin_bound_line(client, opened, settings):
    settings.PUBLIC_BASE_URL = "https://pay.example.com"
    client.get(opened.url())

    response = send_code(client, opened)

    assert response.status_code == 200
    [sms] = OutboxEntry.objects.all()
    assert sms.channel == "sms" and sms.to == opened.case.customer.phone
    code = last_code(opened.case)
    assert re.fullmatch(r"\d{6}", code)
    assert sms.body.splitlines()[-1] == f"@pay.example.com #{code}"
    # The message kept for staff and the timeline never hold the code or the number.
    message = Message.objects.get(purpose="code")
    assert code not in message.body_masked
    event = CaseEvent.objects.get(case=opened.case, kind="code_sent")
    assert code not in str(event.data)
    assert opened.case.customer.phone not in str(event.data)


def test_code_input_asks_the_phone_to_fill_in_the_code(client, opened):
    client.get(opened.url())
    send_code(client, opened)

    page = client.get(opened.url("verify")).content.decode()

    field = re.search(r'<input id="code"[^>]*>', page).group(0)
    assert 'autocomplete="one-time-code"' in field
    assert 'inputmode="numeric"' in field
    assert "•••• 456" in page  # the number on file, masked


def test_code_is_valid_for_ten_minutes(client, opened):
    client.get(opened.url())
    before = timezone.now()
    send_code(client, opened)

    device = CaseCodeDevice.objects.get(case=opened.case)
    assert (
        before + dt.timedelta(minutes=10)
        <= device.valid_until
        <= timezone.now() + dt.timedelta(minutes=10)
    )
    # Nine minutes and a bit later it still works.
    CaseCodeDevice.objects.filter(pk=device.pk).update(
        valid_until=timezone.now() + dt.timedelta(seconds=50)
    )
    assert enter_code(client, opened, last_code(opened.case)).status_code == 302


def test_an_expired_code_is_refused_and_counts_as_a_failure(client, opened):
    client.get(opened.url())
    send_code(client, opened)
    CaseCodeDevice.objects.filter(case=opened.case).update(valid_until=timezone.now())

    response = enter_code(client, opened, last_code(opened.case))

    assert response.status_code == 400
    assert "That code has expired. Ask for a new one." in error_text(response)
    assert CaseCodeDevice.objects.get(case=opened.case).failures == 1
    assert client.get(opened.url("options")).status_code == 302  # still not verified


def test_a_code_works_once(client, opened):
    client.get(opened.url())
    verify_code(client, opened)
    code = last_code(opened.case)

    other_browser = Client()
    response = enter_code(other_browser, opened, code)

    assert response.status_code == 400
    assert "Ask for a code first." in error_text(response)
    assert other_browser.get(opened.url("options")).status_code == 302


def test_a_new_code_replaces_the_old_one_after_the_cooldown(client, opened):
    client.get(opened.url())
    send_code(client, opened)
    first = last_code(opened.case)

    too_soon = send_code(client, opened)
    assert too_soon.status_code == 400
    assert re.search(r"Please wait \d+ seconds before asking again\.", error_text(too_soon))
    assert OutboxEntry.objects.count() == 1

    cooldown_over(opened.case)
    assert send_code(client, opened).status_code == 200
    second = last_code(opened.case)
    assert OutboxEntry.objects.count() == 2
    if first != second:
        assert enter_code(client, opened, first).status_code == 400
    assert enter_code(client, opened, second).status_code == 302


@pytest.mark.django_db
def test_a_customer_with_only_email_gets_no_code(client):
    opened = open_case("promise_to_pay", customer={"phone": ""})
    client.get(opened.url())

    page = client.get(opened.url("verify"))
    asked = send_code(client, opened)

    assert b"We have no mobile number to send a code to." in page.content
    assert asked.status_code == 400
    assert "We have no mobile number to send a code to." in error_text(asked)
    # Not by email, not at all (NIST SP 800-63B: email is no out-of-band channel).
    assert not OutboxEntry.objects.exists()
    assert not Message.objects.filter(purpose="code").exists()


# --- failures and the lock ----------------------------------------------------------------------


def test_five_wrong_answers_of_either_kind_lock_identity_and_escalate(client, opened):
    client.get(opened.url())
    # payment_plan needs a code and a known fact: both kinds of answer count.
    action = "payment_plan"
    send_code(client, opened, action)
    code = last_code(opened.case)
    enter_code(client, opened, wrong(code), action)
    enter_code(client, opened, wrong(wrong(code)), action)
    # A new code does not reset the count.
    cooldown_over(opened.case)
    send_code(client, opened, action)
    assert CaseCodeDevice.objects.get(case=opened.case).failures == 2
    verify_code_response = enter_code(client, opened, last_code(opened.case), action)
    assert verify_code_response.status_code == 302
    third = enter_facts(client, opened, action, postcode="N1 9GU")
    assert "2 tries left." in error_text(third)
    enter_facts(client, opened, action, date_of_birth="1990-01-01")

    locked = enter_facts(client, opened, action, account_last4="0000")

    assert locked.status_code == 423
    assert b"locked after too many wrong answers" in locked.content
    case = opened.reload()
    assert case.state == "escalated"
    assert case.escalation_reason == "identity_failed"
    assert case.priority == 60  # workflows/promise_to_pay.yaml exception_routes
    failures = CaseEvent.objects.filter(case=case, kind="verification_failed").order_by("pk")
    assert [e.data["factor"] for e in failures] == [
        "otp",
        "otp",
        "known_fact",
        "known_fact",
        "known_fact",
    ]
    assert failures.last().data["locked"] is True
    # The case is with an agent now: every step leads to the page that says so, and no
    # more codes go out.
    sent = OutboxEntry.objects.count()
    for response in (
        enter_facts(Client(), opened, action),
        send_code(Client(), opened, action),
        client.get(opened.url("options", f"action={action}")),
    ):
        assert response["Location"] == opened.url("done")
    assert OutboxEntry.objects.count() == sent
    assert b"We're on it" in client.get(opened.url("done")).content


@pytest.mark.django_db
def test_locked_identity_stays_locked_while_the_case_is_open(client):
    """When the route does not close the case (here: offer_alternative), the lock page
    stays: HTTP 423 on every visit, and no code goes out."""
    from tests import factories

    spec = factories.workflow_spec("promise_to_pay")
    spec["exception_routes"]["identity_failed"] = {
        "outcome": "offer_alternative",
        "alternative_action": "request_callback",
    }
    factories.workflow_variant("promise_to_pay", exception_routes=spec["exception_routes"])
    opened = open_case("promise_to_pay")
    client.get(opened.url())
    send_code(client, opened)
    code = last_code(opened.case)
    for _ in range(5):
        response = enter_code(client, opened, wrong(code))

    assert response.status_code == 423
    assert opened.reload().state == "engaged"
    assert "alternative_offered" in kinds(opened.case)
    assert client.get(opened.url("verify")).status_code == 423
    assert send_code(client, opened).status_code == 423
    assert enter_code(client, opened, code).status_code == 423
    assert OutboxEntry.objects.count() == 1


def test_known_fact_errors_never_say_which_fact_was_wrong(client, opened):
    client.get(opened.url())
    verify_code(client, opened, "payment_plan")

    answers = [
        enter_facts(client, opened, "payment_plan", date_of_birth="1990-01-01"),
        enter_facts(client, opened, "payment_plan", postcode="N1 9GU"),
        enter_facts(client, opened, "payment_plan", account_last4="0000"),
    ]

    texts = [re.sub(r"\d tries left\.", "", error_text(a)).strip() for a in answers]
    assert texts == ["Those details do not match our records."] * 3
    assert all(a.status_code == 400 for a in answers)
    for text in texts:
        for hint in ("birth", "postcode", "account", "digits"):
            assert hint not in text.lower()


def test_known_facts_are_refused_for_an_action_that_does_not_ask_for_them(client, opened):
    client.get(opened.url())

    response = enter_facts(client, opened, "promise_to_pay")

    assert response.status_code == 400
    assert opened.reload().state == "engaged"
    assert "verified" not in kinds(opened.case)


def test_right_known_facts_after_the_code_unlock_the_action_that_needs_both(client, opened):
    client.get(opened.url())
    verify_code(client, opened, "payment_plan")
    assert client.get(opened.url("options", "action=payment_plan")).status_code == 302

    response = enter_facts(client, opened, "payment_plan", postcode="sw1a1aa")

    assert response.status_code == 302
    assert client.get(opened.url("options", "action=payment_plan")).status_code == 200


# --- the idle session -----------------------------------------------------------------------------


def idle(client: Client, opened, minutes: int) -> None:
    """Move this browser's last activity on the case back by `minutes`."""
    session = client.session
    entries = session[SESSION_KEY]
    seen = timezone.now() - dt.timedelta(minutes=minutes)
    entries[str(opened.case.pk)]["last_seen"] = seen.isoformat()
    session[SESSION_KEY] = entries
    session.save()


def test_after_five_idle_minutes_the_customer_verifies_again_and_is_told_why(client, opened):
    client.get(opened.url())
    verify_code(client, opened)
    assert choose(client, opened, "promise_to_pay", promise(opened)).status_code == 302
    idle(client, opened, 6)

    response = client.get(opened.url("review"), follow=True)

    assert response.redirect_chain[-1][0].startswith(opened.url("verify"))
    assert b"ended your session after 5 minutes without activity" in response.content
    assert client.post(opened.url("review")).status_code == 302
    assert not opened.case.outcomes.exists()
    # Told once; after verifying again the notice is gone and the choice is asked again.
    verify_code_after = client.get(opened.url("verify"))
    assert b"ended your session" not in verify_code_after.content
    cooldown_over(opened.case)
    verify_code(client, opened)
    assert client.get(opened.url("review"))["Location"] == opened.url("options")


def test_four_idle_minutes_keep_the_session(client, opened):
    client.get(opened.url())
    verify_code(client, opened)
    idle(client, opened, 4)

    response = client.get(opened.url("options"))

    assert response.status_code == 200
    assert b"ended your session" not in response.content


def test_verifying_gives_the_browser_a_new_session_id(client, opened):
    client.get(opened.url())  # an unverified visit keeps no session at all
    # Session fixation: a session id planted in the browser must not survive verification.
    client.cookies["sessionid"] = before = "planted-by-someone-else"

    verify_code(client, opened)

    assert client.cookies["sessionid"].value != before


@pytest.fixture
def opened(db):
    return open_case("promise_to_pay")
