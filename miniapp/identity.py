"""Identity checks sized to the action: the link alone, a one-time code, or a code and a
known fact.

Codes go by SMS (or WhatsApp) to the number on file, never by email: NIST SP 800-63B-4
§3.1.3 does not allow email for out-of-band authentication, and a link that came by email
plus a code by SMS proves two channels. Known facts (date of birth, postcode, account
last 4) are a low-assurance factor checked against salted hashes. Wrong answers of either
kind count together, a new code does not reset them, and the fifth locks identity for the
case, which then follows its `identity_failed` route.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from cases.known_facts import known_fact_matches
from cases.models import Actor, Case
from cases.services import case_record_event
from channels.contact_rules import channel_address
from miniapp.models import CaseCodeDevice
from policies.catalogue import IdentityLevel

CODE_LENGTH = 6
CODE_VALID_SECONDS = 10 * 60
MAX_FAILURES = 5
RESEND_COOLDOWN = dt.timedelta(seconds=30)
MAX_CODES_PER_CASE = 10
KNOWN_FACT_KINDS = ("date_of_birth", "postcode", "account_last4")
FACT_HASH_FIELDS = {
    "date_of_birth": "date_of_birth_hash",
    "postcode": "postcode_hash",
    "account_last4": "account_last4_hash",
}


@dataclass(frozen=True)
class IdentityResult:
    ok: bool
    error: str = ""
    locked: bool = False
    tries_left: int = MAX_FAILURES


def factors_needed(level: str) -> set[str]:
    if level == IdentityLevel.OTP_AND_KNOWN_FACT:
        return {"otp", "known_fact"}
    if level == IdentityLevel.OTP:
        return {"otp"}
    return set()


def _device(case: Case, *, lock: bool = False) -> CaseCodeDevice:
    device, _ = CaseCodeDevice.objects.get_or_create(
        case=case, defaults={"name": f"case {case.pk}", "confirmed": True}
    )
    if lock:
        device = CaseCodeDevice.objects.select_for_update().get(pk=device.pk)
    return device


def identity_locked(*, case: Case) -> bool:
    return CaseCodeDevice.objects.filter(case=case, locked_at__isnull=False).exists()


def code_channel(case: Case) -> tuple[str, str] | None:
    """Where a code can go: SMS to the phone on file, else WhatsApp if the customer wrote
    to us there in the last 24 hours (outside that window only templates may be sent)."""
    customer = case.customer
    if customer.phone:
        return "sms", customer.phone
    from channels.inbound import whatsapp_window_open

    if customer.whatsapp and whatsapp_window_open(customer_id=customer.pk):
        return "whatsapp", channel_address(customer, "whatsapp")
    return None


def masked_number(number: str) -> str:
    return f"•••• {number[-3:]}" if number else ""


def code_send(*, case: Case) -> IdentityResult:
    """Send a fresh code (the previous one stops working). Refused while locked, during the
    resend cooldown, or past a per-case limit, so the link cannot be used to flood a phone."""
    from channels.dispatch import message_send_now

    destination = code_channel(case)
    if destination is None:
        return IdentityResult(False, "We have no mobile number to send a code to.")
    channel, number = destination
    now = timezone.now()
    with transaction.atomic():
        device = _device(case, lock=True)
        if device.locked_at:
            return IdentityResult(False, "Too many wrong answers.", locked=True, tries_left=0)
        if device.last_sent_at and now - device.last_sent_at < RESEND_COOLDOWN:
            wait = int((RESEND_COOLDOWN - (now - device.last_sent_at)).total_seconds()) + 1
            return IdentityResult(False, f"Please wait {wait} seconds before asking again.")
        if device.codes_sent >= MAX_CODES_PER_CASE:
            return IdentityResult(False, "No more codes can be sent for this link.")
        device.generate_token(length=CODE_LENGTH, valid_secs=CODE_VALID_SECONDS, commit=False)
        device.channel = channel
        device.codes_sent += 1
        device.last_sent_at = now
        device.save()
        code = device.token
    host = urlsplit(settings.PUBLIC_BASE_URL).hostname or "localhost"
    text = (
        f"Your {settings.BRAND_NAME} code is {{code}}. It expires in 10 minutes. "
        f"Never share it: we will not ask for it by phone.\n\n@{host} #{{code}}"
    )
    message = message_send_now(
        case=case,
        channel=channel,
        to=number,
        key=f"{case.pk}:code{device.codes_sent}",
        # The last line binds the code to our origin, so phones offer to fill it in only
        # on this site (the WebOTP / origin-bound one-time code format).
        body=text.replace("{code}", code),
        body_masked=text.replace("{code}", "••••••"),
        purpose="code",
    )
    sent = message.status not in ("failed", "cancelled")
    case_record_event(
        case=case,
        kind="code_sent" if sent else "code_not_sent",
        actor=Actor.CUSTOMER,
        data={"channel": channel, "number": masked_number(number), "message": message.key},
    )
    if not sent:
        return IdentityResult(False, "We could not send a code just now. Please try again.")
    return IdentityResult(True, tries_left=MAX_FAILURES - device.failures)


def _failure(case: Case, device: CaseCodeDevice, factor: str) -> IdentityResult:
    """Count a wrong answer; the fifth locks identity and routes the case."""
    device.failures += 1
    locked = device.failures >= MAX_FAILURES
    if locked:
        device.locked_at = timezone.now()
        device.token = None
    device.save(update_fields=["failures", "locked_at", "token"])
    case_record_event(
        case=case,
        kind="verification_failed",
        actor=Actor.CUSTOMER,
        data={"factor": factor, "failures": device.failures, "locked": locked},
    )
    if locked:
        from policies.services import case_route_exception
        from staff.services import audit_record

        audit_record(
            user=None,
            action="customer_code_lockout",
            target=case,
            detail={"factor": factor, "failures": device.failures},
        )
        case_route_exception(
            case=case, exception_type="identity_failed", detail={"failures": device.failures}
        )
        return IdentityResult(False, "Too many wrong answers.", locked=True, tries_left=0)
    left = MAX_FAILURES - device.failures
    return IdentityResult(False, "", tries_left=left)


def code_verify(*, case: Case, code: str) -> IdentityResult:
    code = "".join(ch for ch in str(code) if ch.isdigit())
    with transaction.atomic():
        device = _device(case, lock=True)
        if device.locked_at:
            return IdentityResult(False, "Too many wrong answers.", locked=True, tries_left=0)
        if not device.token:
            return IdentityResult(False, "Ask for a code first.", tries_left=MAX_FAILURES)
        if len(code) == CODE_LENGTH and device.verify_token(code):
            return IdentityResult(True, tries_left=MAX_FAILURES - device.failures)
        result = _failure(case, device, "otp")
    if result.locked:
        return result
    expired = device.valid_until <= timezone.now()
    error = "That code has expired. Ask for a new one." if expired else "That code is not right."
    return IdentityResult(False, error, tries_left=result.tries_left)


def known_facts_verify(*, case: Case, answers: dict[str, Any]) -> IdentityResult:
    """Every fact asked must match; the error never says which one did not."""
    customer = case.customer
    asked = [kind for kind in known_facts_available(case=case) if kind in answers]
    with transaction.atomic():
        device = _device(case, lock=True)
        if device.locked_at:
            return IdentityResult(False, "Too many wrong answers.", locked=True, tries_left=0)
        if not asked:
            return IdentityResult(False, "Answer the questions shown.", tries_left=MAX_FAILURES)
        matched = all(
            known_fact_matches(
                salt=customer.known_fact_salt,
                kind=kind,
                stored_hash=getattr(customer, FACT_HASH_FIELDS[kind]),
                candidate=answers[kind],
            )
            for kind in asked
        )
        if matched:
            return IdentityResult(True, tries_left=MAX_FAILURES - device.failures)
        result = _failure(case, device, "known_fact")
    if result.locked:
        return result
    return IdentityResult(
        False, "Those details do not match our records.", tries_left=result.tries_left
    )


def known_facts_available(*, case: Case) -> list[str]:
    customer = case.customer
    if not customer.known_fact_salt:
        return []
    return [kind for kind in KNOWN_FACT_KINDS if getattr(customer, FACT_HASH_FIELDS[kind])]
