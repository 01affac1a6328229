"""All outbound HTTP leaves through here: message providers, payment providers and
writeback targets alike. One place sets timeouts, the user agent, connection reuse and the
mapping of network failures to one exception, so callers only decide what a status means.

Callers never log request bodies: they carry personal data and secrets.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

USER_AGENT = "Closeloop/1.0"
DEFAULT_TIMEOUT = 10.0

_local = threading.local()


class HttpFailure(Exception):
    """No HTTP answer at all. `kind` is one of: timeout, refused, network."""

    def __init__(self, kind: str, detail: str, elapsed_ms: int):
        self.kind = kind
        self.detail = detail
        self.elapsed_ms = elapsed_ms
        super().__init__(f"{kind}: {detail}")

    @property
    def retryable(self) -> bool:
        return True


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    elapsed_ms: int = 0

    def json(self) -> Any:
        import json

        try:
            return json.loads(self.body or b"null")
        except ValueError:
            return None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def _client() -> httpx.Client:
    # One pooled client per thread: keep-alive to the same provider saves a TCP (and TLS)
    # handshake per message, and httpx clients are not shared across threads.
    client = getattr(_local, "client", None)
    if client is None:
        client = httpx.Client(headers={"User-Agent": USER_AGENT}, follow_redirects=False)
        _local.client = client
    return client


def http_request(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    json: Any = None,
    data: dict[str, Any] | None = None,
    content: bytes | None = None,
    files: Any = None,
    auth: tuple[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> HttpAnswer:
    """Send one request and return its answer, whatever the status. Raises HttpFailure when
    no answer came (timeout, connection refused, reset, DNS)."""
    started = time.monotonic()

    def elapsed() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        response = _client().request(
            method,
            url,
            headers=headers,
            json=json,
            data=data,
            content=content,
            files=files,
            auth=auth,
            timeout=timeout,
        )
    except httpx.TimeoutException as exc:
        raise HttpFailure("timeout", f"no answer within {timeout:g}s", elapsed()) from exc
    except httpx.ConnectError as exc:
        raise HttpFailure("refused", str(exc) or "connection refused", elapsed()) from exc
    except httpx.HTTPError as exc:
        raise HttpFailure("network", str(exc) or type(exc).__name__, elapsed()) from exc
    return HttpAnswer(
        status=response.status_code,
        body=response.content,
        headers={k.lower(): v for k, v in response.headers.items()},
        elapsed_ms=elapsed(),
    )
