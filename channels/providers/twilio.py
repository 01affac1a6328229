"""SMS through Twilio's Programmable Messaging REST API (2010-04-01)."""

from __future__ import annotations

import datetime as dt
import hashlib
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar
from urllib.parse import urlencode

from django.conf import settings

from channels.providers.base import OutgoingMessage, Provider, ProviderError, SendResult
from channels.providers.transport import provider_call, require_settings

# Twilio error codes that no retry will fix: the number or the recipient is the problem.
# Descriptions are ours: Twilio's own messages quote the phone number, which must not reach
# Message.error or the case timeline.
PERMANENT_ERRORS = {
    21211: "invalid 'To' number",
    21212: "invalid 'From' number",
    21408: "sending to this region is not enabled on the account",
    21602: "message body is required",
    21606: "the 'From' number cannot send SMS",
    21610: "recipient unsubscribed from this number (replied STOP)",
    21612: "Twilio cannot route to this number",
    21614: "'To' is not a mobile number",
    21617: "message body exceeds 1600 characters",
    21635: "'To' is not a valid mobile number for this region",
}

# Twilio's first status says the message left our hands; what happens next arrives by status
# callback. "queued"/"accepted" must not become our `queued`, which means "not yet sent".
FIRST_STATUS = {"delivered": "delivered", "read": "read"}

# How far back of the claim time a found message may be dated: Twilio stamps whole seconds
# and its clock is not ours. A match also needs the exact body, which carries a fresh link
# token per send, so the margin cannot match another message.
RECONCILE_CLOCK_MARGIN = dt.timedelta(minutes=5)
RECONCILE_MAX_PAGES = 10


class TwilioSmsProvider(Provider):
    key: ClassVar[str] = "twilio"
    channel: ClassVar[str] = "sms"
    can_reconcile: ClassVar[bool] = True
    settings_used: ClassVar[tuple[str, ...]] = (
        "TWILIO_API_BASE",
        "TWILIO_ACCOUNT_SID",
        "TWILIO_AUTH_TOKEN",
        "TWILIO_FROM_NUMBER",
    )

    def __init__(self, *, timeout: float | None = None):
        require_settings(self.settings_used, chosen_by="SMS_PROVIDER=twilio")
        self.api_base = settings.TWILIO_API_BASE.rstrip("/")
        self.account_sid = settings.TWILIO_ACCOUNT_SID
        self.auth = (settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN)
        self.from_number = settings.TWILIO_FROM_NUMBER
        self.timeout = timeout if timeout is not None else settings.OUTREACH_PROVIDER_TIMEOUT
        self.messages_url = f"{self.api_base}/2010-04-01/Accounts/{self.account_sid}/Messages.json"

    def send(self, message: OutgoingMessage) -> SendResult:
        form = {"To": message.to, "From": self.from_number, "Body": message.body}
        if message.status_callback_url:
            form["StatusCallback"] = message.status_callback_url
        answer = provider_call(
            "Twilio", "POST", self.messages_url, data=form, auth=self.auth, timeout=self.timeout
        )
        payload = answer.json() if answer.status in (200, 201) else None
        if not isinstance(payload, dict) or not payload.get("sid"):
            raise _error(answer.status, answer.json())
        raw_status = str(payload.get("status") or "")
        return SendResult(
            provider_message_id=payload["sid"],
            status=FIRST_STATUS.get(raw_status, "sent"),
            raw_status=raw_status,
        )

    def find_sent(
        self, message: OutgoingMessage, *, body_sha256: str, since: dt.datetime
    ) -> str | None:
        earliest = since - RECONCILE_CLOCK_MARGIN
        query = urlencode(
            {
                "To": message.to,
                "DateSent>": earliest.astimezone(dt.UTC).date().isoformat(),
                "PageSize": 100,
            }
        )
        url: str | None = f"{self.messages_url}?{query}"
        for _ in range(RECONCILE_MAX_PAGES):
            if url is None:
                break
            answer = provider_call("Twilio", "GET", url, auth=self.auth, timeout=self.timeout)
            page = answer.json()
            if answer.status != 200 or not isinstance(page, dict):
                raise _error(answer.status, page)
            for item in page.get("messages") or []:
                if _matches(item, body_sha256=body_sha256, earliest=earliest):
                    return item["sid"]
            next_uri = page.get("next_page_uri")
            url = f"{self.api_base}{next_uri}" if next_uri else None
        return None


def _matches(item: Any, *, body_sha256: str, earliest: dt.datetime) -> bool:
    if not isinstance(item, dict) or not item.get("sid"):
        return False
    body = item.get("body") or ""
    if hashlib.sha256(body.encode()).hexdigest() != body_sha256:
        return False
    try:
        created = parsedate_to_datetime(item.get("date_created") or "")
    except (TypeError, ValueError):
        return False
    if created.tzinfo is None:  # RFC 2822 "-0000": UTC with no claim about local time
        created = created.replace(tzinfo=dt.UTC)
    return created >= earliest


def _error(status: int, payload: Any) -> ProviderError:
    code = payload.get("code") if isinstance(payload, dict) else None
    if status in (401, 403):
        # Our credentials, not the recipient: retried (while someone fixes the settings)
        # rather than failed over to another channel as if the number were bad.
        return ProviderError(
            f"Twilio refused the account credentials (HTTP {status}, error {code})",
            permanent=False,
            code=str(code or status),
        )
    if isinstance(code, int) and code in PERMANENT_ERRORS:
        return ProviderError(
            f"Twilio error {code}: {PERMANENT_ERRORS[code]}", permanent=True, code=str(code)
        )
    label = f"Twilio error {code}" if code else "Twilio refused the message"
    return ProviderError(f"{label} (HTTP {status})", permanent=True, code=str(code or status))
