"""A loopback Stripe: Checkout Sessions (create, retrieve with expand[]) with bearer auth
and idempotency keys, plus signed webhook events as Stripe sends them.

In a test: `with StripeStandIn(secret_key="sk_test_…") as stripe`, point STRIPE_API_BASE
at `stripe.url`; then play the customer on Stripe's page with `complete(session_id)`,
`decline(session_id)` or `expire(session_id)`, and build the webhook with
`signed_event(session_id, secret=…)`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import string
import time
from typing import Any

from tests.standins.http import LoopbackStandIn, Request

SESSION_PATH = re.compile(r"^/v1/checkout/sessions/(cs_[A-Za-z0-9_]+)$")


def _id(prefix: str) -> str:
    # Letters only, like the digits-free ids the tests grep for card numbers around.
    return prefix + "".join(secrets.choice(string.ascii_letters) for _ in range(24))


def _error(status: int, kind: str, message: str, code: str = "") -> tuple[int, Any]:
    return status, {"error": {"type": kind, "message": message, "code": code}}


class StripeStandIn(LoopbackStandIn):
    """`sessions` holds every session by id; `created` the form of each accepted create."""

    def __init__(self, *, secret_key: str, delay: float = 0.0):
        self.secret_key = secret_key
        self.sessions: dict[str, dict[str, Any]] = {}
        self.created: list[dict[str, str]] = []
        self._idempotent: dict[str, tuple[dict[str, str], str]] = {}
        super().__init__(delay=delay)

    # --- the API --------------------------------------------------------------------------

    def handle(self, request: Request) -> tuple[int, Any]:
        if request.headers.get("authorization") != f"Bearer {self.secret_key}":
            return _error(401, "invalid_request_error", "Invalid API Key provided.")
        scripted = self._take_scripted()
        if scripted is not None:
            status, payload = scripted
            return status, payload or _error(status, "api_error", "Stripe had a problem.")[1]
        if request.method == "POST" and request.path == "/v1/checkout/sessions":
            return self._create(request)
        match = SESSION_PATH.match(request.path)
        if request.method == "GET" and match:
            session = self.sessions.get(match.group(1))
            if session is None:
                return _error(404, "invalid_request_error", "No such checkout.session.")
            return 200, self._shown(session, expand="expand[]" in request.query)
        return _error(404, "invalid_request_error", "Unrecognized request URL.")

    def _create(self, request: Request) -> tuple[int, Any]:
        form = request.form()
        key = request.headers.get("idempotency-key", "")
        with self._lock:
            if key in self._idempotent:
                first_form, session_id = self._idempotent[key]
                if first_form != form:
                    return _error(
                        400,
                        "idempotency_error",
                        "Keys for idempotent requests can only be used with the same "
                        "parameters they were first used with.",
                    )
                return 200, self._shown(self.sessions[session_id], expand=False)
        mode = form.get("mode")
        for name in ("success_url", "cancel_url", "mode"):
            if not form.get(name):
                return _error(400, "invalid_request_error", f"Missing {name}.", "parameter_missing")
        amount = None
        if mode == "payment":
            unit = form.get("line_items[0][price_data][unit_amount]", "")
            currency = form.get("line_items[0][price_data][currency]", "")
            if not unit.isdigit() or not currency:
                return _error(
                    400, "invalid_request_error", "Invalid line_items.", "parameter_invalid"
                )
            amount = int(unit) * int(form.get("line_items[0][quantity]", "1"))
        elif mode == "setup":
            currency = form.get("currency", "")
        else:
            return _error(400, "invalid_request_error", "Invalid mode.", "parameter_invalid")
        session_id = _id("cs_test_")
        session = {
            "id": session_id,
            "object": "checkout.session",
            "url": f"{self.url}/c/pay/{session_id}",
            "mode": mode,
            "status": "open",
            "payment_status": "unpaid",
            "amount_total": amount,
            "currency": currency,
            "client_reference_id": form.get("client_reference_id"),
            "metadata": {
                name[len("metadata[") : -1]: value
                for name, value in form.items()
                if name.startswith("metadata[")
            },
            "success_url": form["success_url"],
            "cancel_url": form["cancel_url"],
            "payment_intent": None,
            "setup_intent": None,
        }
        with self._lock:
            self.sessions[session_id] = session
            self.created.append(form)
            if key:
                self._idempotent[key] = (form, session_id)
        return 200, self._shown(session, expand=False)

    @staticmethod
    def _shown(session: dict[str, Any], *, expand: bool) -> dict[str, Any]:
        shown = json.loads(json.dumps(session))
        if not expand:
            for name in ("payment_intent", "setup_intent"):
                if isinstance(shown[name], dict):
                    shown[name] = shown[name]["id"]
        return shown

    # --- the customer on Stripe's page ----------------------------------------------------

    @staticmethod
    def _card(last4: str) -> dict[str, Any]:
        return {
            "id": _id("pm_"),
            "object": "payment_method",
            "type": "card",
            "card": {"brand": "visa", "last4": last4, "exp_month": 12, "exp_year": 2030},
        }

    def complete(self, session_id: str, *, last4: str = "4242") -> str:
        """Pay (or save the card); returns the success URL Stripe sends the browser to."""
        session = self.sessions[session_id]
        session["status"] = "complete"
        if session["mode"] == "setup":
            session["payment_status"] = "no_payment_required"
            session["setup_intent"] = {
                "id": _id("seti_"),
                "object": "setup_intent",
                "status": "succeeded",
                "payment_method": self._card(last4),
            }
        else:
            session["payment_status"] = "paid"
            session["payment_intent"] = {
                "id": _id("pi_"),
                "object": "payment_intent",
                "status": "succeeded",
                "amount": session["amount_total"],
                "payment_method": self._card(last4),
            }
        return session["success_url"].replace("{CHECKOUT_SESSION_ID}", session_id)

    def decline(self, session_id: str, *, code: str = "card_declined") -> str:
        """A delayed payment that failed after the customer left Stripe's page."""
        session = self.sessions[session_id]
        session["status"] = "complete"
        session["payment_intent"] = {
            "id": _id("pi_"),
            "object": "payment_intent",
            "status": "requires_payment_method",
            "amount": session["amount_total"],
            "last_payment_error": {"code": code, "type": "card_error"},
            "payment_method": None,
        }
        return session["success_url"].replace("{CHECKOUT_SESSION_ID}", session_id)

    def expire(self, session_id: str) -> None:
        self.sessions[session_id]["status"] = "expired"

    # --- webhooks -------------------------------------------------------------------------

    def event(self, session_id: str, kind: str = "checkout.session.completed") -> dict[str, Any]:
        return {
            "id": _id("evt_"),
            "object": "event",
            "type": kind,
            "created": int(time.time()),
            "data": {"object": self._shown(self.sessions[session_id], expand=False)},
        }

    @staticmethod
    def sign(body: bytes, *, secret: str, timestamp: int | None = None) -> str:
        """The Stripe-Signature header for `body`: t=<unix time>,v1=<HMAC-SHA256>."""
        timestamp = int(time.time()) if timestamp is None else timestamp
        digest = hmac.new(
            secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256
        ).hexdigest()
        return f"t={timestamp},v1={digest}"
