"""Tamper-evident evidence: a hash chain over each case's timeline, its verification, and
the evidence bundle an auditor downloads (docs/evidence.md).

The chain: each CaseEvent carries `hash`, the SHA-256 of a canonical serialisation of the
event (`event_hash`), which includes `prev_hash`, the hash of the event before it in its
case's chain ("" for the first). Editing an event changes its hash; deleting or reordering
one breaks the next event's `prev_hash`.

Events are sealed after they are written, not as they are inserted: a scheduled job
(`events_seal`, every minute) walks the unsealed events in (case, id) order and appends them
to their case's chain. Events arrive by half a dozen paths (transitions, single inserts,
bulk_create, PostgreSQL COPY in the ingest and the dispatcher) and more will come; sealing
afterwards covers every one of them without a lock or an extra read on any of those hot
paths, and hashes exactly what the database holds (JSON as stored, timestamps at the
database's precision). `chain_position` records each event's place: an event whose
transaction committed after a later event had been sealed joins the end of the chain, so
the chain never needs rewriting. Sealing and an unsealed event's content are the window an
attacker with database access would need; docs/evidence.md weighs that.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, OuterRef, Subquery
from django.http import HttpResponse
from django.template.loader import render_to_string
from django.utils import timezone

from cases.bulk import bulk_update_arrays
from cases.models import Case, CaseEvent
from cases.triggers import canonical_json

BUNDLE_FORMAT = "closeloop-evidence/1"
CHAIN_ALGORITHM = (
    "SHA-256 over the UTF-8 bytes of JSON with sorted keys and no spaces of {case, kind, "
    "actor, data, created_at, prev_hash}; created_at in UTC, ISO 8601 with microseconds"
)
SEAL_BATCH = 2000
# pg_advisory_xact_lock key: one sealer at a time, whichever worker or request runs it.
SEAL_LOCK_KEY = 0x5EA1_C4A1
# A concurrent sealer wrote first: start the batch again, a few times at most.
SEAL_RACE_RETRIES = 3

# Timeline kinds that make up each part of the bundle.
IDENTITY_KINDS = ("code_sent", "code_not_sent", "verification_failed", "verified")
CHOICE_KINDS = ("actions_viewed", "option_chosen")
CONSENT_KINDS = ("consent_given",)
CONTACT_CONSENT_KINDS = ("consent_revoked", "consent_restored")


# --- the chain ---------------------------------------------------------------------------------


def event_hash(
    *, case_id: Any, kind: str, actor: str, data: Any, created_at: dt.datetime, prev_hash: str
) -> str:
    """The hash of one event: what `verify` recomputes and an auditor can too."""
    canonical = canonical_json(
        {
            "case": str(case_id),
            "kind": kind,
            "actor": actor,
            "data": data,
            "created_at": created_at.astimezone(dt.UTC).isoformat(timespec="microseconds"),
            "prev_hash": prev_hash,
        }
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class _SealRace(Exception):
    """Another sealer sealed some of this batch first; the batch is rolled back."""


def _chain_heads(case_ids: Iterable[Any]) -> dict[Any, tuple[int, str]]:
    """(position, hash) of the last sealed event of each case that has one."""
    last = CaseEvent.objects.filter(case=OuterRef("pk"), chain_position__isnull=False).order_by(
        "-chain_position"
    )
    rows = (
        Case.objects.filter(pk__in=list(case_ids))
        .order_by()
        .annotate(
            head_position=Subquery(last.values("chain_position")[:1]),
            head_hash=Subquery(last.values("hash")[:1]),
        )
        .filter(head_position__isnull=False)
        .values_list("pk", "head_position", "head_hash")
    )
    return {pk: (position, digest) for pk, position, digest in rows}


def _seal_batch(*, case_ids: list[Any] | None, cutoff: dt.datetime, batch: int) -> int:
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SEAL_LOCK_KEY])
        pending = CaseEvent.objects.filter(hash="", created_at__lte=cutoff)
        if case_ids is not None:
            pending = pending.filter(case_id__in=case_ids)
        rows = list(
            pending.order_by("case_id", "id").values_list(
                "id", "case_id", "kind", "actor", "data", "created_at"
            )[:batch]
        )
        if not rows:
            return 0
        heads = _chain_heads({row[1] for row in rows})
        sealed = []
        for event_id, case_id, kind, actor, data, created_at in rows:
            position, prev_hash = heads.get(case_id, (0, ""))
            digest = event_hash(
                case_id=case_id,
                kind=kind,
                actor=actor,
                data=data,
                created_at=created_at,
                prev_hash=prev_hash,
            )
            heads[case_id] = (position + 1, digest)
            sealed.append(
                CaseEvent(
                    id=event_id, chain_position=position + 1, prev_hash=prev_hash, hash=digest
                )
            )
        # Only still-unsealed rows are written: a sealed event is never rewritten, by this
        # or any other sealer.
        written = bulk_update_arrays(
            sealed, ("chain_position", "prev_hash", "hash"), only_if={"hash": ""}
        )
        if written != len(sealed):
            raise _SealRace()
    return len(rows)


def events_seal(
    *,
    case_ids: list[Any] | None = None,
    settle_seconds: float | None = None,
    batch: int = SEAL_BATCH,
    budget_seconds: float = 50.0,
) -> int:
    """Append unsealed events to their cases' chains, oldest case and event first, in
    batches of one transaction each, until none is left or the time budget is spent.

    Events younger than `settle_seconds` (EVIDENCE_SETTLE_SECONDS) wait for the next run:
    a transaction that took a lower id may still commit, and waiting lets the chain follow
    the timeline's order. Returns the number of events sealed."""
    settle = settings.EVIDENCE_SETTLE_SECONDS if settle_seconds is None else settle_seconds
    deadline = time.monotonic() + budget_seconds
    total = races = 0
    while time.monotonic() < deadline:
        cutoff = timezone.now() - dt.timedelta(seconds=settle)
        try:
            count = _seal_batch(case_ids=case_ids, cutoff=cutoff, batch=batch)
        except _SealRace:
            races += 1
            if races > SEAL_RACE_RETRIES:
                break  # the other sealer is at it; the next run finds what is left
            continue
        total += count
        if count < batch:
            break
    return total


# --- verification ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainBreak:
    """The first event of a case at which its chain does not hold."""

    event_id: int
    position: int
    kind: str
    created_at: dt.datetime
    reason: str  # "edited" or "deleted_or_reordered"
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "position": self.position,
            "kind": self.kind,
            "created_at": _iso(self.created_at),
            "reason": self.reason,
            "detail": self.detail,
        }


@dataclass
class ChainReport:
    case_id: Any
    events: int = 0
    head_hash: str = ""
    broken: ChainBreak | None = None

    @property
    def ok(self) -> bool:
        return self.broken is None


def _check(row: tuple[Any, ...], expected_position: int, prev_hash: str) -> ChainBreak | None:
    event_id, case_id, position, kind, actor, data, created_at, stored_prev, stored_hash = row
    recomputed = event_hash(
        case_id=case_id,
        kind=kind,
        actor=actor,
        data=data,
        created_at=created_at,
        prev_hash=stored_prev,
    )

    def broken(reason: str, detail: str) -> ChainBreak:
        return ChainBreak(event_id, position, kind, created_at, reason, detail)

    if recomputed != stored_hash:
        return broken(
            "edited", "hash mismatch: its content no longer matches the hash it was sealed with"
        )
    if position != expected_position:
        missing = (
            f"#{expected_position}"
            if position == expected_position + 1
            else f"#{expected_position}–#{position - 1}"
        )
        return broken(
            "deleted_or_reordered",
            f"prev_hash mismatch: event {missing} of the chain is missing (deleted)",
        )
    if stored_prev != prev_hash:
        before = f"event #{position - 1}" if position > 1 else "the start of the chain"
        return broken(
            "deleted_or_reordered",
            f"prev_hash mismatch: it does not follow {before} (deleted, reordered or rewritten)",
        )
    return None


def chains_verify(
    *, case_ids: list[Any] | None = None, chunk_size: int = 2000
) -> Iterator[ChainReport]:
    """Check the sealed chain of each case (all cases, or those given), one report per case
    in case id order. Streams the events in chain order (a server-side cursor on
    PostgreSQL), so memory stays flat however many there are. Named cases without a sealed
    event get an empty report."""
    events = CaseEvent.objects.filter(chain_position__isnull=False)
    if case_ids is not None:
        events = events.filter(case_id__in=case_ids)
    rows = (
        events.order_by("case_id", "chain_position")
        .values_list(
            "id",
            "case_id",
            "chain_position",
            "kind",
            "actor",
            "data",
            "created_at",
            "prev_hash",
            "hash",
        )
        .iterator(chunk_size=chunk_size)
    )
    seen: set[Any] = set()
    report: ChainReport | None = None
    for row in rows:
        case_id = row[1]
        if report is None or report.case_id != case_id:
            if report is not None:
                yield report
            report = ChainReport(case_id=case_id)
            if case_ids is not None:
                seen.add(case_id)
        report.events += 1
        if report.broken is None:
            report.broken = _check(row, report.events, report.head_hash)
        report.head_hash = row[8]
    if report is not None:
        yield report
    for case_id in sorted(set(case_ids or ()) - seen, key=str):
        yield ChainReport(case_id=case_id)


def case_chain_report(*, case: Case) -> ChainReport:
    return next(chains_verify(case_ids=[case.pk]))


def events_unsealed() -> tuple[int, dt.datetime | None]:
    """How many events wait for the sealer, and when the oldest was written."""
    from django.db.models import Count, Min

    found = CaseEvent.objects.filter(hash="").aggregate(count=Count("id"), oldest=Min("created_at"))
    return found["count"], found["oldest"]


# --- the evidence bundle -------------------------------------------------------------------------


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def contact_masked(channel: str, address: str) -> str:
    """Enough of a contact address to tell it is the one on file, not enough to reach
    anyone. The bundle shows it; retention and erasure (privacy/) leave it on messages, so
    masking it again changes nothing."""
    if not address:
        return ""
    if channel == "email" and "@" in address:
        local, _, domain = address.partition("@")
        return f"{local[:1]}•••@{domain}"
    return f"•••• {address[-3:]}"


def _minimised(value: Any) -> Any:
    """Personal fields (contact details, names, free text) as a fingerprint, at any depth,
    as the case timeline shows them (writeback.outbox.event_value)."""
    from writeback.outbox import event_value

    if isinstance(value, dict):
        return {key: _minimised(event_value(key, item)) for key, item in value.items()}
    if isinstance(value, list):
        return [_minimised(item) for item in value]
    return value


def _event_row(event: CaseEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "position": event.chain_position,
        "at": _iso(event.created_at),
        "kind": event.kind,
        "actor": event.actor,
        "data": event.data,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }


def _messages(case: Case) -> list[dict[str, Any]]:
    from channels.models import Message

    return [
        {
            "key": message.key,
            "channel": message.channel,
            "purpose": message.purpose,
            "step": message.step_position,
            "variant": message.variant,
            "template": message.template_name,
            "locale": message.locale,
            "to": contact_masked(message.channel, message.to),
            "subject": message.subject,
            # As sent, with the link token (or a one-time code) masked: the database never
            # holds a working link.
            "body": message.body_masked,
            "body_sha256": message.body_sha256,
            "whatsapp_template": message.whatsapp_template,
            "provider": message.provider,
            "status": message.status,
            "error": message.error,
            "created_at": _iso(message.created_at),
            "sent_at": _iso(message.sent_at),
            "delivered_at": _iso(message.delivered_at),
            "read_at": _iso(message.read_at),
        }
        for message in Message.objects.filter(case=case).order_by("created_at", "pk")
    ]


def _sent_requests(events: list[CaseEvent]) -> dict[tuple[str, str], dict[str, Any]]:
    """What each writeback operation's send attempts recorded of the request, by (outcome,
    operation): the last one is what the target acknowledged."""
    sent: dict[tuple[str, str], dict[str, Any]] = {}
    for event in events:
        data = event.data if isinstance(event.data, dict) else {}
        request = data.get("request")
        if event.kind == "writeback_attempt" and isinstance(request, dict):
            sent[(str(data.get("outcome")), str(data.get("operation")))] = request
    return sent


def _operation(outcome: Any, operation: Any, context: dict, sent: dict) -> dict[str, Any]:
    from writeback.mapping import MappingError
    from writeback.outbox import idempotency_key, operation_request, request_body_sha256

    recorded = sent.get((str(outcome.pk), operation.key))
    try:
        request = operation_request(outcome, operation, context, with_content=False)
    except (MappingError, KeyError, IndexError, StopIteration) as exc:
        rendered: dict[str, Any] = {
            "idempotency_key": idempotency_key(outcome, operation),
            "error": f"the target's mapping no longer renders this request: {exc}",
        }
    else:
        body_sha256 = request_body_sha256(request.body)
        rendered = {
            "method": request.method,
            "path": request.path,
            "idempotency_key": request.idempotency_key,
            "body": _minimised(request.body),
            "body_sha256": body_sha256,
            # Rendered again from the outcome by the target's mapping; the hash recorded in
            # the (chained) send attempt proves it is what went out.
            "matches_sent": (recorded or {}).get("body_sha256") == body_sha256
            if recorded
            else None,
        }
    return {
        "key": operation.key,
        "status": operation.status,
        "attempts": operation.attempts,
        "request": rendered,
        "sent": recorded,
        "acknowledgement": {
            "target_reference": operation.target_reference,
            "last_status": operation.last_status,
            "last_error": operation.last_error,
            "confirmed_at": _iso(operation.confirmed_at),
        },
    }


def _submissions(case: Case, events: list[CaseEvent]) -> list[dict[str, Any]]:
    from writeback.models import Outcome
    from writeback.outbox import outcome_context

    sent = _sent_requests(events)
    submissions = []
    outcomes = (
        Outcome.objects.filter(case=case)
        .select_related("target", "case__workflow", "case__customer")
        .prefetch_related("operations")
        .order_by("created_at")
    )
    for outcome in outcomes:
        context = outcome_context(outcome)
        evidence = outcome.evidence if isinstance(outcome.evidence, dict) else {}
        submissions.append(
            {
                "outcome": str(outcome.pk),
                "action": outcome.action,
                "actor": outcome.actor,
                "submitted_at": _iso(outcome.created_at),
                "values": _minimised(outcome.values),
                # What the customer agreed to and how they had proved who they were; the
                # IP address and browser stay on the outcome, for staff.
                "consent": {
                    name: evidence[name]
                    for name in ("consent_text", "consented_at", "identity")
                    if name in evidence
                },
                "documents": [
                    {name: item.get(name) for name in ("name", "content_type", "size", "sha256")}
                    for item in outcome.documents or []
                    if isinstance(item, dict)
                ],
                "writeback": {
                    "target": outcome.target.key,
                    "state": outcome.state,
                    "attempts": outcome.attempts,
                    "confirmed_at": _iso(outcome.confirmed_at),
                    "last_error": outcome.last_error,
                    "operations": [
                        _operation(outcome, operation, context, sent)
                        for operation in outcome.operations.all()
                    ],
                },
            }
        )
    return submissions


def evidence_bundle(*, case: Case) -> dict[str, Any]:
    """Everything an auditor needs about one case, from the records themselves: the
    trigger, the offer and the policy version that decided it, the messages as sent, the
    identity steps, the choices, the consent text shown and accepted, the submission, the
    writeback request and acknowledgement, and the full timeline with each event's hash,
    under the chain's head hash and whether it verifies.

    Events still waiting for the sealer are sealed first, so the bundle covers the whole
    timeline. Contact details appear masked, personal values as fingerprints."""
    events_seal(case_ids=[case.pk], settle_seconds=0, budget_seconds=10)
    case = Case.objects.select_related("workflow", "customer", "api_client").get(pk=case.pk)
    chain = case_chain_report(case=case)
    events = list(
        CaseEvent.objects.filter(case=case).order_by(F("chain_position").asc(nulls_last=True), "id")
    )

    def of_kinds(kinds: tuple[str, ...]) -> list[dict[str, Any]]:
        return [_event_row(event) for event in events if event.kind in kinds]

    offer = case.offer or {}
    return {
        "format": BUNDLE_FORMAT,
        "generated_at": _iso(timezone.now()),
        "case": {
            "id": str(case.pk),
            "workflow": {
                "key": case.workflow.key,
                "name": case.workflow.name,
                "version": case.workflow.version,
            },
            "state": case.state,
            "outcome": case.outcome,
            "customer": {"external_id": case.customer.external_id},
            "milestones": {
                name.removesuffix("_at"): _iso(getattr(case, name))
                for name in (
                    "triggered_at",
                    "first_sent_at",
                    "opened_at",
                    "verified_at",
                    "submitted_at",
                    "written_back_at",
                    "closed_at",
                )
            },
        },
        "chain": {
            "head_hash": chain.head_hash,
            "verified": chain.ok,
            "broken": chain.broken.as_dict() if chain.broken else None,
            "events_sealed": chain.events,
            "events_unsealed": sum(1 for event in events if not event.hash),
            "algorithm": CHAIN_ALGORITHM,
        },
        "trigger": {
            "source": case.api_client.name,
            "event_id": case.event_id,
            "received_at": _iso(case.triggered_at),
            # The SHA-256 of the trigger as received (canonical JSON): the source system
            # can match it against what it sent.
            "body_sha256": case.body_fingerprint,
            "segment": case.segment,
            "data": case.data,
        },
        "offer": {
            "policy": offer.get("policy"),
            "computed_at": offer.get("computed_at"),
            "currency": offer.get("currency"),
            "actions": offer.get("actions", []),
            "excluded": offer.get("excluded", []),
        }
        if offer
        else None,
        "messages": _messages(case),
        "identity": of_kinds(IDENTITY_KINDS),
        "choices": of_kinds(CHOICE_KINDS),
        "consent": of_kinds(CONSENT_KINDS),
        "contact_consent": of_kinds(CONTACT_CONSENT_KINDS),
        "submissions": _submissions(case, events),
        "timeline": [_event_row(event) for event in events],
    }


def evidence_bundle_json(bundle: dict[str, Any]) -> str:
    return json.dumps(bundle, indent=2, ensure_ascii=False, sort_keys=False)


def evidence_bundle_html(bundle: dict[str, Any]) -> str:
    """The bundle as a page a person reads or prints; the same data as the JSON."""

    def text(value: Any) -> str:
        return json.dumps(value, indent=1, ensure_ascii=False) if value not in ({}, None) else ""

    return render_to_string(
        "evidence/bundle.html",
        {
            "bundle": bundle,
            "brand": settings.BRAND_NAME,
            "trigger_data": text(bundle["trigger"]["data"]),
            "milestones": [
                (name.replace("_", " ").capitalize(), at)
                for name, at in bundle["case"]["milestones"].items()
                if at
            ],
            "timeline": [{**row, "data_text": text(row["data"])} for row in bundle["timeline"]],
            "submissions": [
                {
                    **item,
                    "values_text": text(item["values"]),
                    "operations": [
                        {**op, "body_text": text(op["request"].get("body"))}
                        for op in item["writeback"]["operations"]
                    ],
                }
                for item in bundle["submissions"]
            ],
        },
    )


def evidence_filename(case: Case | Any, extension: str) -> str:
    return f"evidence-{getattr(case, 'pk', case)}.{extension}"


def evidence_bundle_download(
    *, case: Case, fmt: str, user: Any = None, username: str = ""
) -> dict[str, Any]:
    """The bundle for someone taking it away (a staff user, or an API client by `username`),
    recorded in the staff audit trail: who looked at which customer's evidence."""
    from staff.services import audit_record

    bundle = evidence_bundle(case=case)
    audit_record(
        user=user,
        username=username,
        action="evidence_downloaded",
        target=case,
        detail={"format": fmt, "head_hash": bundle["chain"]["head_hash"]},
    )
    return bundle


def evidence_response(*, bundle: dict[str, Any], fmt: str) -> HttpResponse:
    """The bundle as a download: JSON as an attachment, the page shown (to print or save)."""
    case_id = bundle["case"]["id"]
    if fmt == "json":
        response = HttpResponse(
            evidence_bundle_json(bundle), content_type="application/json; charset=utf-8"
        )
        disposition = "attachment"
    else:
        response = HttpResponse(
            evidence_bundle_html(bundle), content_type="text/html; charset=utf-8"
        )
        disposition = "inline"
    response["Content-Disposition"] = f'{disposition}; filename="{evidence_filename(case_id, fmt)}"'
    # A customer's evidence: never kept by a browser cache or a proxy.
    response["Cache-Control"] = "no-store, max-age=0"
    return response
