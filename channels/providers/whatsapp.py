"""WhatsApp through Meta's Cloud API (graph.facebook.com, /{phone-number-id}/messages)."""

from __future__ import annotations

from typing import Any, ClassVar

from django.conf import settings

from channels.providers.base import OutgoingMessage, Provider, ProviderError, SendResult
from channels.providers.transport import provider_call, require_settings

# Meta error codes no retry will fix. Descriptions are ours: Meta's `error_data.details` can
# quote template parameters (names, links), which must not reach the case timeline.
PERMANENT_ERRORS = {
    100: "invalid parameter",
    131008: "a required parameter is missing",
    131009: "a parameter value is invalid",
    131026: "message undeliverable (not a WhatsApp user, or an old app version)",
    131047: "re-engagement required: more than 24 hours since the customer last wrote",
    131051: "unsupported message type",
    132000: "template parameter count does not match the template",
    132001: "template does not exist in this language",
    132005: "template text too long once filled in",
    132007: "template content breaks WhatsApp policy",
    132012: "template parameter format does not match",
    132015: "template is paused for low quality",
    132016: "template is disabled",
}
# Throttling and Meta's own trouble: the same message can go later.
RETRYABLE_ERRORS = {
    1: "Meta API unknown error",
    2: "Meta API service temporarily unavailable",
    4: "application request limit reached",
    80007: "WhatsApp Business Account rate limit reached",
    130429: "throughput rate limit reached",
    131000: "something went wrong at Meta",
    131016: "WhatsApp service overloaded",
    131048: "spam rate limit: too many messages to this recipient",
    131056: "pair rate limit: too many messages to this number in a short time",
    133004: "WhatsApp server temporarily unavailable",
}
# Access-token problems are ours, not the recipient's: retried while someone fixes the
# settings, instead of failing every customer over to another channel.
CREDENTIAL_ERRORS = {0: "authentication exception", 190: "access token expired or invalid"}


class WhatsAppCloudProvider(Provider):
    key: ClassVar[str] = "cloud_api"
    channel: ClassVar[str] = "whatsapp"
    can_reconcile: ClassVar[bool] = False
    settings_used: ClassVar[tuple[str, ...]] = (
        "WHATSAPP_API_BASE",
        "WHATSAPP_TOKEN",
        "WHATSAPP_PHONE_NUMBER_ID",
    )

    def __init__(self, *, timeout: float | None = None):
        require_settings(self.settings_used, chosen_by="WHATSAPP_PROVIDER=cloud_api")
        self.url = (
            f"{settings.WHATSAPP_API_BASE.rstrip('/')}/{settings.WHATSAPP_PHONE_NUMBER_ID}/messages"
        )
        self.headers = {"Authorization": f"Bearer {settings.WHATSAPP_TOKEN}"}
        self.timeout = timeout if timeout is not None else settings.OUTREACH_PROVIDER_TIMEOUT

    def send(self, message: OutgoingMessage) -> SendResult:
        answer = provider_call(
            "WhatsApp",
            "POST",
            self.url,
            headers=self.headers,
            json=whatsapp_payload(message),
            timeout=self.timeout,
        )
        payload = answer.json()
        if answer.status == 200 and isinstance(payload, dict):
            try:
                return SendResult(provider_message_id=str(payload["messages"][0]["id"]))
            except (KeyError, IndexError, TypeError):
                pass
        raise _error(answer.status, payload)


def whatsapp_payload(message: OutgoingMessage) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        # The Cloud API wants the international number without its "+".
        "to": message.to.lstrip("+"),
        # Comes back on every status webhook for this message: ties it to our row even if the
        # send's answer was lost.
        "biz_opaque_callback_data": message.key,
    }
    template = message.whatsapp_template
    if template is None:
        payload["type"] = "text"
        payload["text"] = {"body": message.body, "preview_url": True}
        return payload
    payload["type"] = "template"
    payload["template"] = {
        "name": template.name,
        "language": {"code": template.language},
        "components": [
            {
                "type": "body",
                "parameters": [{"type": "text", "text": p} for p in template.parameters],
            }
        ],
    }
    return payload


def _error(status: int, payload: Any) -> ProviderError:
    error = payload.get("error") if isinstance(payload, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    code = code if isinstance(code, int) else None
    if code in CREDENTIAL_ERRORS or status in (401, 403):
        what = CREDENTIAL_ERRORS.get(code, "access refused")
        return ProviderError(
            f"WhatsApp error {code}: {what} (HTTP {status})",
            permanent=False,
            code=str(code if code is not None else status),
        )
    if code in RETRYABLE_ERRORS:
        return ProviderError(
            f"WhatsApp error {code}: {RETRYABLE_ERRORS[code]}", permanent=False, code=str(code)
        )
    if code in PERMANENT_ERRORS:
        return ProviderError(
            f"WhatsApp error {code}: {PERMANENT_ERRORS[code]}", permanent=True, code=str(code)
        )
    label = f"WhatsApp error {code}" if code is not None else "WhatsApp refused the message"
    return ProviderError(
        f"{label} (HTTP {status})", permanent=True, code=str(code if code is not None else status)
    )
