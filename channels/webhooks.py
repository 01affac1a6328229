"""Provider webhooks (Twilio, WhatsApp Cloud API) and the email unsubscribe page.

Webhooks are exempt from CSRF: the provider's signature is the proof of origin instead.
Every accepted callback leaves a WebhookReceipt, so an exact replay is refused (403) rather
than applied twice. Bad input gets a short 4xx reason; nothing here should ever answer 500.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
from typing import Any
from xml.sax.saxutils import escape

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from cases.models import Channel
from channels.consent import consent_revoke, unsubscribe_resolve
from channels.inbound import inbound_receive, message_queue_reply, message_status_update
from channels.models import WebhookReceipt
from channels.signatures import twilio_signature_valid, whatsapp_signature_valid

logger = logging.getLogger(__name__)

TWILIO = "twilio"
WHATSAPP = "cloud_api"


class Refused(Exception):
    """A request we answer with a 4xx and a short reason, having written nothing."""

    def __init__(self, status: int, reason: str):
        self.status = status
        self.reason = reason
        super().__init__(reason)


def _refusal(exc: Refused) -> HttpResponse:
    return HttpResponse(exc.reason, status=exc.status, content_type="text/plain; charset=utf-8")


def _receipt(provider: str, dedupe_key: str) -> None:
    """Record a callback's identity; a second one with the same identity is a replay."""
    if len(dedupe_key) > 200:
        dedupe_key = "sha256:" + hashlib.sha256(dedupe_key.encode()).hexdigest()
    try:
        with transaction.atomic():
            WebhookReceipt.objects.create(provider=provider, dedupe_key=dedupe_key)
    except IntegrityError:
        raise Refused(403, "Replayed callback.") from None


# --- Twilio ---------------------------------------------------------------------------------


def _twilio_public_url(request: HttpRequest) -> str:
    # Twilio signs the URL *it* called. Behind a TLS-terminating proxy or load balancer the
    # request we see has another scheme, host or port (http://app:8000/…), so the URL is
    # rebuilt on PUBLIC_BASE_URL, which must be exactly the address configured at Twilio.
    url = settings.PUBLIC_BASE_URL + request.path
    query = request.META.get("QUERY_STRING", "")
    return f"{url}?{query}" if query else url


def _twilio_verified(request: HttpRequest) -> dict[str, str]:
    params = [(name, value) for name, values in request.POST.lists() for value in values]
    signature = request.headers.get("X-Twilio-Signature", "")
    if not twilio_signature_valid(
        settings.TWILIO_AUTH_TOKEN, _twilio_public_url(request), params, signature
    ):
        raise Refused(403, "Missing or invalid X-Twilio-Signature.")
    return {name: value for name, value in params}


def _required(params: dict[str, str], *names: str) -> list[str]:
    missing = [name for name in names if not params.get(name, "").strip()]
    if missing:
        raise Refused(400, f"Missing parameter: {', '.join(missing)}.")
    return [params[name].strip() for name in names]


def _twiml(text: str) -> HttpResponse:
    body = f"<Response><Message>{escape(text)}</Message></Response>" if text else "<Response/>"
    return HttpResponse(
        '<?xml version="1.0" encoding="UTF-8"?>' + body, content_type="text/xml; charset=utf-8"
    )


@csrf_exempt
@require_POST
def twilio_status(request: HttpRequest) -> HttpResponse:
    """Twilio's StatusCallback for messages we sent."""
    try:
        params = _twilio_verified(request)
        sid, status = _required(params, "MessageSid", "MessageStatus")
        with transaction.atomic():
            _receipt(TWILIO, f"status:{sid}:{status}")
            message_status_update(
                provider=TWILIO,
                provider_message_id=sid,
                status=status,
                error_code=params.get("ErrorCode", ""),
            )
    except Refused as exc:
        return _refusal(exc)
    return HttpResponse(status=204)


@csrf_exempt
@require_POST
def twilio_inbound(request: HttpRequest) -> HttpResponse:
    """An SMS (or WhatsApp via Twilio) from a customer; answered with TwiML.

    Where Twilio's own opt-out handling is on for the number, Twilio confirms STOP itself and
    drops a reply to an opted-out number, so the customer gets one confirmation either way.
    """
    try:
        params = _twilio_verified(request)
        sid, sender = _required(params, "MessageSid", "From")
        channel = Channel.WHATSAPP if sender.lower().startswith("whatsapp:") else Channel.SMS
        with transaction.atomic():
            _receipt(TWILIO, f"inbound:{sid}")
            result = inbound_receive(
                channel=channel,
                provider=TWILIO,
                provider_message_id=sid,
                sender=sender,
                body=params.get("Body", ""),
            )
    except Refused as exc:
        return _refusal(exc)
    return _twiml(result.reply_text)


# --- WhatsApp Cloud API ---------------------------------------------------------------------


def _whatsapp_handshake(request: HttpRequest) -> HttpResponse:
    """Meta's subscription check: echo hub.challenge if the verify token is ours."""
    mode = request.GET.get("hub.mode", "")
    token = request.GET.get("hub.verify_token", "")
    challenge = request.GET.get("hub.challenge", "")
    expected = settings.WHATSAPP_VERIFY_TOKEN
    if mode != "subscribe" or not expected or not hmac.compare_digest(token, expected):
        return HttpResponse("Verification failed.", status=403, content_type="text/plain")
    if not challenge:
        return HttpResponse("Missing hub.challenge.", status=400, content_type="text/plain")
    return HttpResponse(challenge, content_type="text/plain")


def _whatsapp_changes(body: bytes) -> list[dict[str, Any]]:
    """The `value` objects of a webhook body, checked for shape before anything is applied."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Refused(400, "Body is not JSON.") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("entry"), list):
        raise Refused(400, "Expected an object with an 'entry' list.")
    values: list[dict[str, Any]] = []
    for entry in payload["entry"]:
        changes = entry.get("changes") if isinstance(entry, dict) else None
        if not isinstance(changes, list):
            raise Refused(400, "Each entry needs a 'changes' list.")
        for change in changes:
            value = change.get("value") if isinstance(change, dict) else None
            if not isinstance(value, dict):
                raise Refused(400, "Each change needs a 'value' object.")
            for name in ("statuses", "messages"):
                items = value.get(name, [])
                if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                    raise Refused(400, f"'{name}' must be a list of objects.")
                for item in items:
                    if not isinstance(item.get("id"), str) or not item["id"]:
                        raise Refused(400, f"Every item of '{name}' needs an 'id'.")
            for item in value.get("statuses", []):
                if not isinstance(item.get("status"), str):
                    raise Refused(400, "Every status needs a 'status'.")
            for item in value.get("messages", []):
                if not isinstance(item.get("from"), str) or not item["from"]:
                    raise Refused(400, "Every message needs a 'from'.")
            values.append(value)
    return values


def _at(timestamp: Any) -> dt.datetime | None:
    try:
        return dt.datetime.fromtimestamp(int(timestamp), tz=dt.UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _first_error_code(item: dict[str, Any]) -> str:
    errors = item.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return str(errors[0].get("code", ""))
    return ""


def _message_text(item: dict[str, Any]) -> str:
    """The words of an inbound WhatsApp message; a button tap counts as its label."""
    kind = item.get("type") or "text"
    if not isinstance(kind, str):
        return ""
    part = item.get(kind) if isinstance(item.get(kind), dict) else {}
    if kind == "text":
        return str(part.get("body", ""))
    if kind == "button":
        return str(part.get("text", ""))
    if kind == "interactive":
        reply = part.get("button_reply") or part.get("list_reply") or {}
        return str(reply.get("title", "")) if isinstance(reply, dict) else ""
    return f"[{kind}]"  # media and the like: an agent opens it at Meta, we note its type


def _whatsapp_apply(values: list[dict[str, Any]]) -> None:
    for value in values:
        for item in value.get("statuses", []):
            # Meta retries the same event in a new delivery; apply each status once.
            if not _receipt_new(f"status:{item['id']}:{item['status']}"):
                continue
            message_status_update(
                provider=WHATSAPP,
                provider_message_id=item["id"],
                status=item["status"],
                error_code=_first_error_code(item),
                at=_at(item.get("timestamp")),
                message_key=str(item.get("biz_opaque_callback_data") or ""),
            )
        for item in value.get("messages", []):
            result = inbound_receive(
                channel=Channel.WHATSAPP,
                provider=WHATSAPP,
                provider_message_id=item["id"],
                sender=item["from"],
                body=_message_text(item),
            )
            if result.inbound is not None and result.reply_text:
                message_queue_reply(inbound=result.inbound, text=result.reply_text)


def _receipt_new(dedupe_key: str) -> bool:
    try:
        _receipt(WHATSAPP, dedupe_key)
    except Refused:
        return False
    return True


@csrf_exempt
@require_http_methods(["GET", "POST"])
def whatsapp_webhook(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return _whatsapp_handshake(request)
    body = request.body
    signature = request.headers.get("X-Hub-Signature-256", "")
    if not whatsapp_signature_valid(settings.WHATSAPP_APP_SECRET, body, signature):
        return HttpResponse(
            "Missing or invalid X-Hub-Signature-256.", status=403, content_type="text/plain"
        )
    # No freshness window on timestamps: Meta redelivers for days after an outage, and
    # statuses legitimately arrive late, so age says nothing about a replay. A replay is
    # recognised by identity instead: the whole body, then each status and message id.
    try:
        values = _whatsapp_changes(body)
        with transaction.atomic():
            _receipt(WHATSAPP, "body:" + hashlib.sha256(body).hexdigest())
            _whatsapp_apply(values)
    except Refused as exc:
        return _refusal(exc)
    return HttpResponse("ok", content_type="text/plain")


# --- email unsubscribe ----------------------------------------------------------------------


# Exempt from CSRF: mail clients send the RFC 8058 one-click POST
# ("List-Unsubscribe=One-Click") with no cookie or token; the signed token is the proof.
@csrf_exempt
@require_http_methods(["GET", "POST"])
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    resolved = unsubscribe_resolve(token)
    if resolved is None:
        return render(request, "channels/unsubscribe_invalid.html", status=404)
    customer, channel = resolved
    context = {"brand": settings.BRAND_NAME, "channel": channel, "done": False}
    # A GET only asks: mail scanners and link previews fetch every link in a message, and
    # must not unsubscribe anyone by doing so.
    if request.method == "POST":
        consent_revoke(customer=customer, channel=channel, source="email_unsubscribe")
        context["done"] = True
    return render(request, "channels/unsubscribe.html", context)
