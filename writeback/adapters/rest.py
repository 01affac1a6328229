"""REST/JSON targets: one HTTP request per operation through config/http.py, signed as
the target asks, classified by the target's own status lists."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from functools import cached_property
from typing import Any

from django.conf import settings

from config.http import HttpFailure, http_request
from writeback.adapters.base import (
    OK,
    PERMANENT,
    RETRY,
    Adapter,
    Answer,
    DocumentFile,
    OperationRequest,
    scrub,
)
from writeback.mapping import status_set


def secret_value(env_name: str) -> str:
    """The secret named by a target. Settings first (CORE_API_TOKEN is read there once),
    then the process environment for targets an operator added later."""
    return str(getattr(settings, env_name, "") or os.environ.get(env_name, ""))


def multipart_encode(fields: dict[str, Any], document: DocumentFile) -> tuple[bytes, str]:
    """multipart/form-data built here rather than by httpx, because an HMAC signature
    must cover the exact bytes sent."""
    boundary = f"closeloop-{secrets.token_hex(12)}"
    parts: list[bytes] = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + str(value).encode()
            + b"\r\n"
        )
    filename = document.name.replace('"', "").replace("\r", "").replace("\n", "")
    parts.append(
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{filename}"\r\nContent-Type: {document.content_type}\r\n\r\n'
        ).encode()
        + document.content
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class RestAdapter(Adapter):
    kind = "rest"

    @cached_property
    def statuses(self) -> tuple[set[int], set[int]]:
        return status_set(self.target.success_statuses), status_set(self.target.permanent_statuses)

    def classify(self, status: int) -> str:
        """An answer nobody listed counts as passing: max_attempts bounds the retries."""
        success, permanent = self.statuses
        if status in success:
            return OK
        return PERMANENT if status in permanent else RETRY

    def url(self, path: str) -> str:
        return (self.target.base_url or settings.CORE_API_URL).rstrip("/") + path

    def _call(self, method: str, path: str, content: bytes, headers: dict[str, str]) -> Any:
        auth = None
        kind = self.target.auth_kind
        if kind != "none":
            secret = secret_value(self.target.secret_env)
            if not secret:
                return Answer(
                    RETRY,
                    error_kind="config",
                    detail=f"environment variable {self.target.secret_env} is not set",
                )
            if kind == "bearer":
                headers["Authorization"] = f"Bearer {secret}"
            elif kind == "basic":
                auth = (self.target.basic_username, secret)
            else:  # hmac: the same scheme the demo core checks
                stamp = str(int(time.time()))
                signed = stamp.encode() + b"." + content
                digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
                headers["X-Signature"] = f"t={stamp},v1={digest}"
        try:
            return http_request(
                method,
                self.url(path),
                headers=headers,
                content=content or None,
                auth=auth,
                timeout=self.target.timeout_seconds,
            )
        except HttpFailure as exc:
            return Answer(RETRY, error_kind=exc.kind, elapsed_ms=exc.elapsed_ms, detail=exc.detail)

    def send(self, request: OperationRequest) -> Answer:
        headers = {"Accept": "application/json", "Idempotency-Key": request.idempotency_key}
        if request.document is not None:
            content, headers["Content-Type"] = multipart_encode(
                request.body or {}, request.document
            )
        elif request.body is not None:
            content = json.dumps(request.body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        else:
            content = b""
        answer = self._call(request.method, request.path, content, headers)
        if isinstance(answer, Answer):
            return answer
        result = self.classify(answer.status)
        if result != OK:
            return Answer(
                result,
                status=answer.status,
                error_kind="status",
                elapsed_ms=answer.elapsed_ms,
                detail=scrub(answer.text),
            )
        payload = answer.json()
        reference = ""
        if isinstance(payload, dict) and request.reference_field:
            reference = str(payload.get(request.reference_field) or "")
        if request.reference_field and not reference:
            # Proof of writeback is the target's own reference; an answer without one
            # proves nothing, and replaying the same key would only repeat it.
            return Answer(
                PERMANENT,
                status=answer.status,
                error_kind="no_reference",
                elapsed_ms=answer.elapsed_ms,
                detail=f"the answer has no {request.reference_field!r}",
            )
        return Answer(OK, status=answer.status, reference=reference, elapsed_ms=answer.elapsed_ms)

    def read(self, request: OperationRequest, reference: str) -> Answer:
        answer = self._call("GET", str(request.read_back), b"", {"Accept": "application/json"})
        if isinstance(answer, Answer):
            return answer
        result = self.classify(answer.status)
        record = answer.json()
        if result == OK and not isinstance(record, dict):
            return Answer(
                RETRY, status=answer.status, error_kind="invalid_answer", detail="not a JSON object"
            )
        if result != OK:
            return Answer(
                result,
                status=answer.status,
                error_kind="status",
                elapsed_ms=answer.elapsed_ms,
                detail=scrub(answer.text),
            )
        return Answer(
            OK,
            status=answer.status,
            reference=reference,
            record=record,
            elapsed_ms=answer.elapsed_ms,
        )
