"""A loopback Twilio: the Messages resource (create and list) of the 2010-04-01 REST API,
with HTTP basic auth, and real signed status callbacks back to our webhook.

In a test: `with TwilioStandIn(account_sid=…, auth_token=…) as twilio`. For a benchmark, in a
process of its own so it does not share the sender's GIL:
`python -m tests.standins.twilio SID TOKEN` prints its URL, then answers each line on its
standard input with one JSON line: every message received so far. It stops at end of input.
"""

from __future__ import annotations

import base64
import datetime as dt
import hmac
import itertools
import json
import sys
import urllib.error
import urllib.request
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode

from channels.signatures import twilio_signature
from tests.standins.http import LoopbackStandIn, Request

ERROR_MESSAGES = {
    20003: "Authenticate",
    20429: "Too Many Requests",
    20500: "An internal server error has occurred",
    21211: "The 'To' number {to} is not a valid phone number.",
    21408: "Permission to send an SMS has not been enabled for the region indicated by {to}",
    21602: "Message body is required.",
    21604: "A 'To' phone number is required.",
    21610: "Attempt to send to unsubscribed recipient",
    21614: "'To' number {to} is not a valid mobile number",
}


class TwilioStandIn(LoopbackStandIn):
    """Records every accepted message in `.messages` (dicts with sid, To, From, Body,
    StatusCallback, date_created). Steer it with `fail_next(n, status=500)`,
    `fail_permanently(to=…, code=21211)` and `delay`."""

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        delay: float = 0.0,
    ):
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.messages: list[dict[str, Any]] = []
        self._refused: dict[str, int] = {}
        self._sids = itertools.count(1)
        self._expected_auth = (
            "Basic " + base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode()
        )
        self._base_path = f"/2010-04-01/Accounts/{account_sid}/Messages.json"
        super().__init__(delay=delay)

    def fail_permanently(self, *, to: str, code: int = 21211) -> None:
        """Refuse every later message to `to` with this Twilio error code (HTTP 400)."""
        with self._lock:
            self._refused[to] = code

    # --- the API --------------------------------------------------------------------------

    def handle(self, request: Request) -> tuple[int, Any]:
        supplied = request.headers.get("authorization", "")
        if not hmac.compare_digest(supplied, self._expected_auth):
            return _error(401, 20003)
        if request.path != self._base_path:
            return 404, {"code": 20404, "message": "not found", "status": 404}
        if request.method == "GET":
            return self._list(request)
        return self._create(request.form())

    def _create(self, form: dict[str, str]) -> tuple[int, Any]:
        scripted = self._take_scripted()
        if scripted is not None:
            status, payload = scripted
            if payload is not None:
                return status, payload
            return _error(status, 20429 if status == 429 else 20500)
        to = form.get("To", "")
        if not to:
            return _error(400, 21604)
        if not form.get("Body"):
            return _error(400, 21602)
        with self._lock:
            refused = self._refused.get(to)
        if refused is not None:
            return _error(400, refused, to=to)
        now = dt.datetime.now(dt.UTC)
        record = {
            "sid": f"SM{next(self._sids):032x}",
            "To": to,
            "From": form.get("From", ""),
            "Body": form["Body"],
            "StatusCallback": form.get("StatusCallback", ""),
            "date_created": now,
        }
        with self._lock:
            self.messages.append(record)
        return 201, self._resource(record, status="queued")

    def _list(self, request: Request) -> tuple[int, Any]:
        to = request.query.get("To")
        after = request.query.get("DateSent>")
        page_size = int(request.query.get("PageSize", 50))
        page = int(request.query.get("Page", 0))
        with self._lock:
            found = [
                m
                for m in reversed(self.messages)  # Twilio lists newest first
                if (to is None or m["To"] == to)
                and (after is None or m["date_created"].date().isoformat() >= after)
            ]
        chunk = found[page * page_size : (page + 1) * page_size]
        next_page_uri = None
        if len(found) > (page + 1) * page_size:
            query = {**request.query, "Page": page + 1, "PageSize": page_size}
            next_page_uri = f"{self._base_path}?{urlencode(query)}"
        return 200, {
            "messages": [self._resource(m, status="sent") for m in chunk],
            "page": page,
            "page_size": page_size,
            "next_page_uri": next_page_uri,
        }

    def _resource(self, record: dict[str, Any], *, status: str) -> dict[str, Any]:
        created = format_datetime(record["date_created"].replace(microsecond=0))
        return {
            "sid": record["sid"],
            "account_sid": self.account_sid,
            "to": record["To"],
            "from": record["From"],
            "body": record["Body"],
            "status": status,
            "direction": "outbound-api",
            "date_created": created,
            "date_updated": created,
            "date_sent": None if status == "queued" else created,
            "num_segments": "1",
            "error_code": None,
            "error_message": None,
            "uri": f"{self._base_path[:-5]}/{record['sid']}.json",
        }

    def messages_json(self) -> str:
        """The messages received so far, as one line of JSON."""
        with self._lock:
            snapshot = [{**m, "date_created": m["date_created"].isoformat()} for m in self.messages]
        return json.dumps(snapshot)

    # --- callbacks to us ------------------------------------------------------------------

    def send_status_callback(
        self,
        sid: str,
        status: str,
        callback_url: str,
        auth_token: str | None = None,
        *,
        error_code: str | None = None,
    ) -> int:
        """POST a signed status callback, as Twilio does, and return the HTTP status we got.
        `auth_token` signs it (default: this stand-in's token; pass another to test a bad
        signature)."""
        with self._lock:
            record = next((m for m in self.messages if m["sid"] == sid), None)
        params = {
            "MessageSid": sid,
            "SmsSid": sid,
            "MessageStatus": status,
            "SmsStatus": status,
            "AccountSid": self.account_sid,
            "To": record["To"] if record else "",
            "From": record["From"] if record else "",
            "ApiVersion": "2010-04-01",
        }
        if error_code:
            params["ErrorCode"] = error_code
        signature = twilio_signature(
            auth_token if auth_token is not None else self.auth_token,
            callback_url,
            params.items(),
        )
        request = urllib.request.Request(
            callback_url,
            data=urlencode(params).encode(),
            headers={
                "X-Twilio-Signature": signature,
                "Content-Type": "application/x-www-form-urlencoded",
                "User-Agent": "TwilioProxy/1.1",
            },
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code


def main(argv: list[str]) -> None:
    account_sid, auth_token = argv
    with TwilioStandIn(account_sid=account_sid, auth_token=auth_token) as standin:
        print(standin.url, flush=True)
        for _ in sys.stdin:
            print(standin.messages_json(), flush=True)


def _error(status: int, code: int, *, to: str = "") -> tuple[int, dict[str, Any]]:
    message = ERROR_MESSAGES.get(code, "Twilio error").format(to=to)
    return status, {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


if __name__ == "__main__":
    # bench/dispatch.py runs the stand-in in a process of its own, so that it does not share
    # the dispatcher's GIL: `python -m tests.standins.twilio SID TOKEN` prints its URL, then
    # answers each line on stdin with one JSON line listing every message received so far.
    import json
    import sys

    from tests.standins.http import _Handler

    # The handler writes the headers and the body in two sends; with Nagle's algorithm the
    # second waits for the client's delayed ACK, 40 ms a request, which would be all the
    # benchmark measured. A real provider answers without that stall.
    _Handler.disable_nagle_algorithm = True
    with TwilioStandIn(account_sid=sys.argv[1], auth_token=sys.argv[2]) as standin:
        print(standin.url, flush=True)
        for _ in sys.stdin:
            with standin._lock:
                received = list(standin.messages)
            print(json.dumps(received, default=str), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
