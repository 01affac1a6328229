"""A loopback WhatsApp Cloud API: POST /{phone-number-id}/messages with a bearer token."""

from __future__ import annotations

import hmac
import itertools
from typing import Any

from tests.standins.http import LoopbackStandIn, Request

ERROR_MESSAGES = {
    100: ("Invalid parameter", "OAuthException"),
    190: ("Invalid OAuth access token - Cannot parse access token", "OAuthException"),
    130429: ("Rate limit hit", "OAuthException"),
    131000: ("Something went wrong", "OAuthException"),
    131026: ("Message undeliverable", "OAuthException"),
    131047: ("Re-engagement message", "OAuthException"),
    131056: ("(Business Account, Consumer Account) pair rate limit hit", "OAuthException"),
    132001: ("Template name does not exist in the translation", "OAuthException"),
}


class WhatsAppStandIn(LoopbackStandIn):
    """Records every accepted request body (the JSON payload) in `.messages` and the phone
    number ids it was addressed to in `.phone_number_ids`. Steer it with
    `fail_for(to, code=131047)`, `fail_next(n, status=500)` and `delay`."""

    def __init__(self, *, token: str, delay: float = 0.0):
        self.token = token
        self.messages: list[dict[str, Any]] = []
        self.phone_number_ids: list[str] = []
        self._refused: dict[str, tuple[int, int]] = {}
        self._ids = itertools.count(1)
        super().__init__(delay=delay)

    def fail_for(self, to: str, *, code: int = 131047, status: int = 400) -> None:
        """Refuse later messages to `to` (with or without "+") with this Meta error code."""
        with self._lock:
            self._refused[to.lstrip("+")] = (status, code)

    def handle(self, request: Request) -> tuple[int, Any]:
        supplied = request.headers.get("authorization", "")
        if not hmac.compare_digest(supplied, f"Bearer {self.token}"):
            return _error(401, 190)
        parts = request.path.strip("/").split("/")
        if request.method != "POST" or len(parts) != 2 or parts[1] != "messages":
            return _error(400, 100)
        payload = request.json()
        if not isinstance(payload, dict) or payload.get("messaging_product") != "whatsapp":
            return _error(400, 100)
        scripted = self._take_scripted()
        if scripted is not None:
            status, answer = scripted
            return (status, answer) if answer is not None else _error(status, 131000)
        to = str(payload.get("to", ""))
        with self._lock:
            refused = self._refused.get(to)
        if refused is not None:
            return _error(*refused)
        wamid = f"wamid.HBgM{next(self._ids):020d}"
        with self._lock:
            self.messages.append(payload)
            self.phone_number_ids.append(parts[0])
        return 200, {
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": to}],
            "messages": [{"id": wamid}],
        }


def _error(status: int, code: int) -> tuple[int, dict[str, Any]]:
    message, kind = ERROR_MESSAGES.get(code, ("Unknown error", "OAuthException"))
    return status, {
        "error": {
            "message": f"(#{code}) {message}",
            "type": kind,
            "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": message},
            "fbtrace_id": "AbCdEfGhIjK",
        }
    }
