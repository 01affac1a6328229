"""Delivery of outcomes from the outbox: claim, call the target operation by operation,
prove it (the target's reference, and a read-back where the mapping has one), then resolve
the case, schedule a retry, or fail it to its exception route.

Never inside a database transaction while the target is called: a claim is a short
committed write (PostgreSQL: SELECT … FOR UPDATE SKIP LOCKED; SQLite: a conditional
UPDATE), with a lease so that a worker that died mid-delivery leaves a claim that expires.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import secrets
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from cases.models import Actor
from cases.services import IllegalTransition, case_record_event, case_transition
from miniapp.storage import DocumentNotEncrypted, private_storage
from privacy.crypto import DecryptionFailed
from writeback.adapters import adapter_for
from writeback.adapters.base import PERMANENT, RETRY, Adapter, Answer, DocumentFile
from writeback.adapters.base import OperationRequest as Request
from writeback.breaker import breaker_admit, breaker_record
from writeback.mapping import MappingError, render
from writeback.models import Operation, Outcome

logger = logging.getLogger(__name__)

# Fields whose values may be personal (contact details, names, free text): events show a
# fingerprint of them, never the value.
PERSONAL_FIELDS = {"phone", "email", "address", "name", "typed_name", "whatsapp", "text", "note"}
# Failures that say nothing about the target's health (our mapping, our files).
NOT_THE_TARGETS_FAULT = {"mapping", "document", "config"}


# --- claims -----------------------------------------------------------------------------------


def _claimable(now, *, due_only: bool) -> Q:
    pending = Q(state=Outcome.State.PENDING)
    if due_only:
        pending &= Q(next_attempt_at__lte=now)
    return pending | Q(state=Outcome.State.SENDING, lease_until__lt=now)


def outcome_claim(*, outcome_id: Any, due_only: bool = False) -> Outcome | None:
    """Take an outcome for delivery, or None if another worker holds it or it is done."""
    now = timezone.now()
    claim = {
        "attempts": F("attempts") + 1,
        "state": Outcome.State.SENDING,
        "lease_until": now + timedelta(seconds=settings.WRITEBACK_LEASE_SECONDS),
        "claim_token": secrets.token_hex(8),
    }
    rows = Outcome.objects.filter(_claimable(now, due_only=due_only), pk=outcome_id)
    if connection.vendor == "postgresql":
        with transaction.atomic():
            # SKIP LOCKED: a worker never waits behind another's claim, it moves on.
            if rows.select_for_update(skip_locked=True).values_list("pk").first() is None:
                return None
            Outcome.objects.filter(pk=outcome_id).update(**claim)
    elif rows.update(**claim) == 0:
        return None
    return Outcome.objects.select_related("case", "target", "case__workflow").get(
        pk=outcome_id, claim_token=claim["claim_token"]
    )


def _mine(outcome: Outcome):
    return Outcome.objects.filter(pk=outcome.pk, claim_token=outcome.claim_token)


# --- building requests ------------------------------------------------------------------------


def outcome_context(outcome: Outcome) -> dict[str, Any]:
    case = outcome.case
    return {
        "data": case.data,
        "values": outcome.values,
        "evidence": outcome.evidence,
        "case": {
            "id": str(case.pk),
            "workflow": case.workflow.key,
            "segment": case.segment,
            "submitted_at": case.submitted_at.isoformat() if case.submitted_at else None,
        },
        "outcome": {
            "id": str(outcome.pk),
            "action": outcome.action,
            "created_at": outcome.created_at.isoformat(),
            "actor": outcome.actor,
        },
        "customer": {"external_id": case.customer.external_id},
    }


def idempotency_key(outcome: Outcome, operation: Operation) -> str:
    """Stable across retries and workers: a replay at the target creates nothing."""
    return f"closeloop:{outcome.pk}:{operation.key}"


def _document(outcome: Outcome, index: int) -> DocumentFile:
    meta = outcome.documents[index]
    # Customers' uploads live in the private store that no URL serves (miniapp/storage.py),
    # encrypted: a file changed on disk no longer decrypts.
    try:
        with private_storage().open(meta["path"], "rb") as handle:
            content = handle.read()
    except (DocumentNotEncrypted, DecryptionFailed) as exc:
        raise MappingError(
            f"document {index + 1} cannot be read back: it was changed on disk, or its key "
            "is no longer in FIELD_ENCRYPTION_KEYS"
        ) from exc
    if hashlib.sha256(content).hexdigest() != meta["sha256"]:
        raise MappingError(f"document {index + 1} no longer matches its SHA-256")
    return DocumentFile(
        name=meta["name"],
        content_type=meta.get("content_type") or "application/octet-stream",
        content=content,
        sha256=meta["sha256"],
    )


def operation_request(
    outcome: Outcome, operation: Operation, context: dict[str, Any], *, with_content: bool
) -> Request:
    spec = outcome.target.operations[outcome.action]
    spec = next(s for s in spec if s["name"] == operation.spec_name)
    if operation.document_index is not None:
        context = {**context, "document": outcome.documents[operation.document_index]}
    method = spec.get("method", "POST")
    body = None
    if method != "DELETE" or spec.get("body"):
        body = {**render(spec.get("body", {}), context), "external_id": ""}
        # Our id travels with the record, so the target's staff can trace it back to us.
        body["external_id"] = f"{outcome.pk}:{operation.key}"
    expect = spec.get("expect")
    if expect is None:
        expect = {k: v for k, v in (body or {}).items() if k != "external_id"}
    else:
        expect = render(expect, context)
    document = None
    if operation.document_index is not None and with_content:
        document = _document(outcome, operation.document_index)
    return Request(
        outcome_id=str(outcome.pk),
        operation=operation.key,
        period=outcome.created_at.date().isoformat(),
        method=method,
        path=render(spec.get("path", ""), context, url=True),
        body=body,
        idempotency_key=idempotency_key(outcome, operation),
        reference_field=spec.get("reference", "reference"),
        # A read-back path is filled once the reference is known (see _read_back_path).
        read_back=spec.get("read_back"),
        expect=expect,
        document=document,
        file=spec.get("file", ""),
    )


def _read_back_path(outcome: Outcome, operation: Operation, context: dict[str, Any]) -> Any:
    spec = next(
        s for s in outcome.target.operations[outcome.action] if s["name"] == operation.spec_name
    )
    read_back = spec.get("read_back")
    if isinstance(read_back, str):
        if operation.document_index is not None:
            context = {**context, "document": outcome.documents[operation.document_index]}
        return render(read_back, {**context, "reference": operation.target_reference}, url=True)
    return read_back


# --- comparing a read-back --------------------------------------------------------------------


def _normal(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float | str):
        try:
            return Decimal(str(value)).normalize()
        except InvalidOperation:
            return str(value)
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    return str(value)


def _dig(record: dict[str, Any], dotted: str) -> Any:
    value: Any = record
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def event_value(field: str, value: Any) -> Any:
    """Personal fields appear in case events as a short fingerprint, never in full."""
    if field.split(".")[-1] in PERSONAL_FIELDS and value not in (None, ""):
        canonical = json.dumps(value, sort_keys=True, default=str).encode()
        return f"[personal, sha256 {hashlib.sha256(canonical).hexdigest()[:12]}]"
    return value


def read_back_differences(expect: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """{} when the stored record holds what we sent; else both versions of what differs."""
    sent, stored = {}, {}
    for field, value in expect.items():
        found = _dig(record, field)
        if _normal(value) != _normal(found):
            sent[field], stored[field] = event_value(field, value), event_value(field, found)
    return {"sent": sent, "stored": stored} if sent else {}


# --- one operation ----------------------------------------------------------------------------


def request_body_sha256(body: dict[str, Any] | None) -> str:
    """The fingerprint of a request body (canonical JSON), kept on the send attempt's event:
    the evidence bundle proves with it what went out, without the timeline holding it."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _attempt_record(
    outcome: Outcome,
    operation: Operation,
    step: str,
    answer: Answer,
    request: Request | None = None,
) -> None:
    sent = {}
    if request is not None:
        sent["request"] = {
            "method": request.method,
            "path": request.path,
            "idempotency_key": request.idempotency_key,
            "body_sha256": request_body_sha256(request.body),
        }
    case_record_event(
        case=outcome.case,
        kind="writeback_attempt",
        actor=Actor.SYSTEM,
        data={
            **sent,
            "outcome": str(outcome.pk),
            "target": outcome.target.key,
            "operation": operation.key,
            "step": step,
            "attempt": outcome.attempts,
            "result": answer.result,
            "status": answer.status,
            "latency_ms": answer.elapsed_ms,
            "error_kind": answer.error_kind,
            "reference": answer.reference,
        },
    )


def _operation_save(operation: Operation, **fields: Any) -> None:
    for name, value in fields.items():
        setattr(operation, name, value)
    Operation.objects.filter(pk=operation.pk).update(**fields)


def operation_run(
    outcome: Outcome, operation: Operation, adapter: Adapter, context: dict[str, Any]
) -> tuple[Answer, dict[str, Any]]:
    """Send (if not yet acknowledged) and read back (if mapped) one operation. Returns
    the answer that decided it and, for a failure, a summary fit for the case timeline.

    Each step's attempt event and operation update commit together: one commit per call
    to the target, which is what a delivery's database cost is made of."""
    try:
        request = operation_request(
            outcome, operation, context, with_content=operation.status == Operation.Status.PENDING
        )
    except (MappingError, OSError, KeyError, IndexError) as exc:
        kind = "document" if isinstance(exc, OSError) else "mapping"
        answer = Answer(PERMANENT, error_kind=kind, detail=str(exc)[:300])
        _attempt_record(outcome, operation, "prepare", answer)
        return answer, {"operation": operation.key, "error": answer.detail}
    summary = {"operation": operation.key, "method": request.method, "path": request.path}
    if operation.status == Operation.Status.PENDING:
        answer = adapter.send(request)
        fields: dict[str, Any] = {
            "attempts": operation.attempts + 1,
            "last_status": answer.status,
            "last_error": (f"{answer.error_kind}: {answer.detail}" if not answer.ok else "")[:300],
        }
        needs_read_back = bool(request.read_back)
        if answer.ok:
            fields["target_reference"] = answer.reference
            if needs_read_back:
                fields["status"] = Operation.Status.ACKNOWLEDGED
            else:
                fields["status"] = Operation.Status.CONFIRMED
                fields["confirmed_at"] = timezone.now()
        with transaction.atomic():
            _attempt_record(outcome, operation, "send", answer, request)
            _operation_save(operation, **fields)
        if not answer.ok:
            return answer, {**summary, "status": answer.status, "response": answer.detail}
        if not needs_read_back:
            return answer, {}
    path = _read_back_path(outcome, operation, context)
    request = Request(**{**request.__dict__, "read_back": path})
    answer = adapter.read(request, operation.target_reference)
    summary = {"operation": operation.key, "method": "GET", "path": str(path)}
    differences = {}
    if not answer.ok:
        fields = {"last_status": answer.status, "last_error": answer.detail[:300]}
    else:
        differences = read_back_differences(request.expect, answer.record or {})
        if differences:
            fields = {"last_error": "mismatch: the stored record differs"}
        else:
            fields = {"status": Operation.Status.CONFIRMED, "confirmed_at": timezone.now()}
    with transaction.atomic():
        _attempt_record(outcome, operation, "read_back", answer)
        _operation_save(operation, **fields)
    if not answer.ok:
        return answer, {**summary, "status": answer.status, "response": answer.detail}
    if differences:
        mismatch = Answer(
            PERMANENT,
            status=answer.status,
            reference=operation.target_reference,
            error_kind="mismatch",
            elapsed_ms=answer.elapsed_ms,
            detail="the stored record differs from what was sent",
        )
        return mismatch, {**summary, "status": answer.status, "versions": differences}
    return answer, {}


# --- one outcome ------------------------------------------------------------------------------


def backoff_delay(*, attempts: int, base: float, cap: float) -> float:
    """Exponential backoff with full jitter: workers that failed together retry apart."""
    return random.uniform(0, min(cap, base * 2 ** max(0, attempts - 1)))


def outcome_deliver(*, outcome_id: Any, due_only: bool = False) -> str:
    """Deliver one outcome if nobody else holds it. Returns what happened: confirmed,
    retry, failed, held (breaker open), lost (our lease was taken over) or not_claimed."""
    outcome = outcome_claim(outcome_id=outcome_id, due_only=due_only)
    if outcome is None:
        return "not_claimed"
    target = outcome.target
    wait_until = breaker_admit(target=target, probe_seconds=settings.WRITEBACK_LEASE_SECONDS)
    if wait_until is not None:
        # Held, not failed: the attempt was never made, so it does not count.
        _mine(outcome).update(
            state=Outcome.State.PENDING,
            lease_until=None,
            next_attempt_at=wait_until,
            attempts=F("attempts") - 1,
        )
        return "held"
    adapter = adapter_for(target)
    context = outcome_context(outcome)
    failure: tuple[Answer, dict[str, Any]] | None = None
    for operation in outcome.operations.exclude(status=Operation.Status.CONFIRMED):
        answer, summary = operation_run(outcome, operation, adapter, context)
        if not answer.ok:
            failure = (answer, summary)
            break
    if failure is None or failure[0].error_kind not in NOT_THE_TARGETS_FAULT:
        breaker_record(target=target, success=failure is None or failure[0].result != RETRY)
    if failure is None:
        return _confirm(outcome)
    answer, summary = failure
    if answer.result == RETRY and outcome.attempts < target.max_attempts:
        delay = backoff_delay(
            attempts=outcome.attempts,
            base=target.backoff_base_seconds,
            cap=target.backoff_cap_seconds,
        )
        claimed = _mine(outcome).update(
            state=Outcome.State.PENDING,
            lease_until=None,
            next_attempt_at=timezone.now() + timedelta(seconds=delay),
            last_error={"error_kind": answer.error_kind, **summary},
        )
        return "retry" if claimed else "lost"
    return _fail(outcome, answer, summary)


def _confirm(outcome: Outcome) -> str:
    references = dict(outcome.operations.values_list("key", "target_reference"))
    with transaction.atomic():
        done = _mine(outcome).update(
            state=Outcome.State.CONFIRMED,
            lease_until=None,
            confirmed_at=timezone.now(),
            last_error={},
        )
        if not done:
            return "lost"
        try:
            case_transition(
                case=outcome.case_id,
                transition="confirm_writeback",
                data={
                    "outcome": str(outcome.pk),
                    "target": outcome.target.key,
                    "references": references,
                },
            )
        except IllegalTransition as exc:
            # The case moved on (an agent closed it) while the target confirmed: the
            # target has the record, so the outcome stays confirmed and staff see why.
            logger.warning("writeback confirmed for case %s in state %s", exc.case.pk, exc.state)
            case_record_event(
                case=outcome.case,
                kind="writeback_confirmed_late",
                actor=Actor.SYSTEM,
                data={"outcome": str(outcome.pk), "state": exc.state, "references": references},
            )
    return "confirmed"


def _fail(outcome: Outcome, answer: Answer, summary: dict[str, Any]) -> str:
    # Imported here: policies' services import cases, and writeback sits on both.
    from policies.services import case_route_exception

    reason = {
        "outcome": str(outcome.pk),
        "target": outcome.target.key,
        "error_kind": answer.error_kind,
        "attempts": outcome.attempts,
        "last_request": summary,
    }
    with transaction.atomic():
        done = _mine(outcome).update(
            state=Outcome.State.FAILED, lease_until=None, last_error=reason
        )
        if not done:
            return "lost"
        try:
            case = case_transition(case=outcome.case_id, transition="fail_writeback", data=reason)
        except IllegalTransition:
            logger.warning(
                "writeback failed for case %s, which is no longer submitted", outcome.case_id
            )
            return "failed"
        case_route_exception(
            case=case,
            exception_type="system_unavailable",
            detail={
                "outcome": str(outcome.pk),
                "target": outcome.target.key,
                "error_kind": answer.error_kind,
            },
            attempt=outcome.attempts,
        )
    return "failed"


def outcomes_deliver_due(
    *, limit: int | None = None, budget_seconds: float | None = None
) -> dict[str, int]:
    """The frequent sweep: deliver outcomes whose next attempt is due and claims whose
    lease expired, oldest first, until the time budget is spent (a job must end well
    before the queue's timeout).

    A delivery mostly waits on the target, so one worker runs WRITEBACK_CONCURRENCY of
    them side by side, each thread with its own database connection; claims keep any two
    from taking the same outcome. Inside a transaction (a caller's, or a test's) other
    threads could not see its rows, so deliveries then run one after another."""
    limit = limit or settings.WRITEBACK_SWEEP_BATCH
    budget = budget_seconds if budget_seconds is not None else settings.WRITEBACK_SWEEP_SECONDS
    deadline = time.monotonic() + budget
    now = timezone.now()
    ids = list(
        Outcome.objects.filter(_claimable(now, due_only=True))
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
    results: Counter = Counter()
    threads = min(settings.WRITEBACK_CONCURRENCY, len(ids))
    if threads <= 1 or connection.in_atomic_block:
        for outcome_id in ids:
            if time.monotonic() > deadline:
                break
            results[outcome_deliver(outcome_id=outcome_id, due_only=True)] += 1
        return dict(results)

    def deliver(outcome_id: Any) -> str:
        try:
            if time.monotonic() > deadline:
                return "deferred"  # left for the next sweep
            return outcome_deliver(outcome_id=outcome_id, due_only=True)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=threads) as pool:
        results.update(pool.map(deliver, ids))
    results.pop("deferred", None)
    return dict(results)
