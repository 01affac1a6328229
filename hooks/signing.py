"""The signature on every delivery: `X-Closeloop-Signature: t=<unix seconds>,v1=<hex>`, where
v1 is HMAC-SHA256 with the endpoint's secret over "<t>.<raw body>". The timestamp inside the
signed text lets a receiver refuse an old delivery replayed at it (docs/webhooks.md)."""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Closeloop-Signature"


def signature_compute(*, secret: str, body: bytes, timestamp: int) -> str:
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signature_header(*, secret: str, body: bytes, timestamp: int | None = None) -> str:
    timestamp = int(time.time()) if timestamp is None else timestamp
    return f"t={timestamp},v1={signature_compute(secret=secret, body=body, timestamp=timestamp)}"
