"""Provider webhook signatures, computed one way for both sides: our webhook views verify
with these, and the tests' loopback stand-ins sign with them."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable


def twilio_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """Twilio's X-Twilio-Signature: HMAC-SHA1 over the full URL followed by every POST
    parameter name and value, sorted by name, base64-encoded."""
    payload = url + "".join(f"{name}{value}" for name, value in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def twilio_signature_valid(
    auth_token: str, url: str, params: Iterable[tuple[str, str]], signature: str
) -> bool:
    if not auth_token or not signature:
        return False
    return hmac.compare_digest(twilio_signature(auth_token, url, params), signature)


def whatsapp_signature(app_secret: str, body: bytes) -> str:
    """Meta's X-Hub-Signature-256: "sha256=" + hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def whatsapp_signature_valid(app_secret: str, body: bytes, signature: str) -> bool:
    if not app_secret or not signature:
        return False
    return hmac.compare_digest(whatsapp_signature(app_secret, body), signature)
