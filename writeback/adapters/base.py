"""The one interface every writeback adapter implements: send an operation, read its
record back. Adapters never touch the database; writeback/outbox.py records what happened."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

OK = "ok"
RETRY = "retry"
PERMANENT = "permanent"

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
LONG_NUMBER = re.compile(r"\+?\d[\d ()-]{6,}\d")


def scrub(text: str, limit: int = 300) -> str:
    """A target's answer trimmed and with e-mail addresses and phone-like numbers masked,
    fit for a case event (answers may echo personal data back)."""
    text = EMAIL.sub("[email]", text[: limit * 2])
    text = LONG_NUMBER.sub("[number]", text)
    return text[:limit]


@dataclass(frozen=True)
class DocumentFile:
    name: str
    content_type: str
    content: bytes = field(repr=False)
    sha256: str = ""
    stored_name: str = ""


@dataclass(frozen=True)
class OperationRequest:
    """One operation with every placeholder filled, ready for an adapter."""

    outcome_id: str
    operation: str
    period: str  # YYYY-MM-DD of the outcome: file targets group rows by it
    method: str
    path: str
    body: dict[str, Any] | None
    idempotency_key: str
    reference_field: str = "reference"
    read_back: str | bool | None = None
    expect: dict[str, Any] = field(default_factory=dict)
    document: DocumentFile | None = None
    file: str = ""


@dataclass(frozen=True)
class Answer:
    """What came back: `result` is ok, retry (worth trying again) or permanent."""

    result: str
    status: int | None = None
    reference: str = ""
    record: dict[str, Any] | None = None
    error_kind: str = ""  # timeout | refused | network | status | no_reference | config | …
    elapsed_ms: int = 0
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.result == OK


class Adapter:
    kind: ClassVar[str] = ""

    def __init__(self, target: Any):
        self.target = target

    def send(self, request: OperationRequest) -> Answer:
        raise NotImplementedError

    def read(self, request: OperationRequest, reference: str) -> Answer:
        """The record as the target stores it, in `Answer.record`."""
        raise NotImplementedError
