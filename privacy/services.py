"""Data protection: anonymising a customer (after the retention period, or on an erasure
request), deleting cases once the evidence period is over, and key rotation. The policy —
what is removed and what is kept as evidence — is set out in docs/privacy.md; this module
is its one implementation.

Kept as evidence, until EVIDENCE_RETENTION_YEARS after a case closed:
- the case timeline (CaseEvents, hash-chained, never rewritten: cases/evidence.py). Events
  hold no contact details by design — masked numbers, fingerprints of personal values,
  free text sealed (encrypted) — and they carry the consent text shown, when it was
  accepted, the identity steps, the submission and the writeback's request hash;
- the case's offer and policy version, the non-personal trigger data (amounts, dates,
  choices), the trigger's fingerprint (body_fingerprint) and event id;
- each outcome's action, consent evidence and document fingerprints (SHA-256, size, type);
- message metadata (channel, template, status, times, body hash) and the text as sent with
  the customer's details replaced.

Removed: the customer's name, phone, email, WhatsApp number, address, flags and known-fact
hashes; the external id (replaced by a keyed hash, `customer_ref`); the trigger payload's
customer block; personal trigger data fields (text, email and phone types); personal outcome
values (as the timeline's fingerprints); uploaded documents; customers' replies; agents'
offer notes; the demo phone's copies of the messages.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.apps import apps
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from cases.evidence import contact_masked
from cases.models import (
    OPEN_STATES,
    TERMINAL_STATES,
    Actor,
    Case,
    CaseEvent,
    CaseState,
    Customer,
)
from cases.services import case_record_event, case_transition
from privacy.crypto import (
    SEALED_PREFIX,
    bytes_encrypt,
    is_token,
    token_current,
    token_rotate,
)
from privacy.fields import _Encrypted
from privacy.models import PrivacyAction, PrivacyRecord

logger = logging.getLogger(__name__)

ERASED = "[erased]"
RETENTION_JOB = "retention job"
# Contract field types whose values identify or contact a person (an account reference, an
# address on file, a name): the trigger data's other types are amounts, dates and choices.
PERSONAL_CONTRACT_TYPES = frozenset({"string", "email", "phone"})
# Cases the customer can still act on, cancelled before an erasure; a case awaiting its
# writeback is not among them (its outcome must reach the system of record first).
CANCELLABLE_STATES = (*OPEN_STATES, CaseState.ESCALATED, CaseState.WRITEBACK_FAILED)
ANONYMISING_ACTIONS = (PrivacyAction.ANONYMISED, PrivacyAction.ERASED)


class ErasureRefused(Exception):
    """An erasure request that cannot be carried out now; the message says why and what to do."""


@dataclass
class AnonymiseResult:
    record: PrivacyRecord
    already_done: bool = False
    cancelled: list[str] = field(default_factory=list)


# --- the customer's reference once anonymised -----------------------------------------------


def customer_ref(*, api_client_id: int, external_id: str) -> str:
    """What an anonymised customer's external id becomes: a keyed hash (KNOWN_FACTS_KEY,
    which outlives SECRET_KEY rotations), so the bank can still ask "was customer X erased?"
    by giving X, while nobody holding only the database can reverse it by guessing ids."""
    digest = hmac.new(
        settings.KNOWN_FACTS_KEY.encode(),
        f"{api_client_id}:{external_id}".encode(),
        hashlib.sha256,
    ).hexdigest()
    return f"anon-{digest[:40]}"


def _anonymised(customer_field: str = "pk") -> Exists:
    return Exists(
        PrivacyRecord.objects.filter(
            customer_id=OuterRef(customer_field), action__in=ANONYMISING_ACTIONS
        )
    )


# --- scrubbing texts that are kept ----------------------------------------------------------


def personal_values(customer: Customer) -> list[str]:
    """The customer's details as they could appear in free text: the name and each part of
    it, contact details, and the address's lines and postcode."""
    values = [customer.name, customer.phone, customer.whatsapp, customer.email]
    values.extend(part for part in customer.name.split() if len(part) >= 2)
    address = customer.address if isinstance(customer.address, dict) else {}
    values.extend(line for line in address.get("lines") or [] if isinstance(line, str))
    if isinstance(address.get("postcode"), str):
        values.append(address["postcode"])
    return sorted({value.strip() for value in values if value and value.strip()}, key=len)[::-1]


def _pattern(values: Iterable[str]) -> re.Pattern[str] | None:
    values = [value for value in values if value]
    if not values:
        return None
    # Longest first, so a full name goes before its parts; whole words only, so a short name
    # does not eat the inside of other words.
    alternatives = "|".join(re.escape(value) for value in sorted(values, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def _scrubbed(value: Any, pattern: re.Pattern[str] | None) -> Any:
    if pattern is None:
        return value
    if isinstance(value, str):
        return pattern.sub(ERASED, value)
    if isinstance(value, dict):
        return {key: _scrubbed(item, pattern) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrubbed(item, pattern) for item in value]
    return value


def _data_redacted(data: Any, contract: list[dict[str, Any]]) -> Any:
    from writeback.outbox import PERSONAL_FIELDS

    if not isinstance(data, dict):
        return data
    personal = {
        item.get("name")
        for item in contract or []
        if isinstance(item, dict) and item.get("type") in PERSONAL_CONTRACT_TYPES
    } | PERSONAL_FIELDS
    return {
        key: ERASED if key in personal and value not in (None, "", [], {}) else value
        for key, value in data.items()
    }


def _values_fingerprinted(value: Any, key: str = "") -> Any:
    """Personal outcome values as the fingerprint the timeline already shows for them."""
    from writeback.outbox import event_value

    if key:
        fingerprint = event_value(key, value)
        if fingerprint is not value:
            return fingerprint
    if isinstance(value, dict):
        return {k: _values_fingerprinted(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_values_fingerprinted(v) for v in value]
    return value


# --- anonymising one customer ---------------------------------------------------------------


def _documents_delete(case_ids: list[Any]) -> None:
    """Delete each case's folder in the private store, uploads never submitted included.
    Run after the commit: a rolled-back anonymisation must not have lost the files."""
    root = Path(settings.PRIVATE_MEDIA_ROOT)
    for case_id in case_ids:
        shutil.rmtree(root / "cases" / str(case_id), ignore_errors=True)


def _outcomes_anonymise(case_ids: list[Any], pattern: re.Pattern[str] | None, at: str) -> int:
    from writeback.models import Operation, Outcome

    documents = 0
    for outcome in Outcome.objects.filter(case_id__in=case_ids):
        kept = []
        for item in outcome.documents or []:
            if isinstance(item, dict):
                documents += 1 if item.get("path") else 0
                item = {**item, "path": "", "deleted_at": item.get("deleted_at") or at}
            kept.append(item)
        Outcome.objects.filter(pk=outcome.pk).update(
            values=_values_fingerprinted(outcome.values),
            evidence=_scrubbed(outcome.evidence, pattern),
            documents=kept,
            last_error=_scrubbed(outcome.last_error, pattern),
        )
    for operation in Operation.objects.filter(outcome__case_id__in=case_ids).exclude(last_error=""):
        Operation.objects.filter(pk=operation.pk).update(
            last_error=_scrubbed(operation.last_error, pattern)
        )
    return documents


def _messages_anonymise(
    customer: Customer, case_ids: list[Any], pattern: re.Pattern[str] | None
) -> dict[str, int]:
    from agents.models import OfferProposal
    from channels.models import InboundMessage, Message, OutboxEntry

    messages = list(Message.objects.filter(case_id__in=case_ids))
    for message in messages:
        Message.objects.filter(pk=message.pk).update(
            to=contact_masked(message.channel, message.to),
            subject=_scrubbed(message.subject, pattern),
            body_masked=_scrubbed(message.body_masked, pattern),
            error=_scrubbed(message.error, pattern),
        )
    # The demo phone's copies (the outbox provider's inbox) are the full texts.
    outbox, _ = OutboxEntry.objects.filter(message_key__in=[m.key for m in messages]).delete()
    replies = list(InboundMessage.objects.filter(Q(customer=customer) | Q(case_id__in=case_ids)))
    for reply in replies:
        InboundMessage.objects.filter(pk=reply.pk).update(
            sender=contact_masked(reply.channel, reply.sender), body=""
        )
    proposals = list(OfferProposal.objects.filter(case_id__in=case_ids))
    for proposal in proposals:
        OfferProposal.objects.filter(pk=proposal.pk).update(
            reason=_scrubbed(proposal.reason, pattern),
            decision_note=_scrubbed(proposal.decision_note, pattern),
        )
    return {"messages": len(messages), "outbox_copies": outbox, "replies": len(replies)}


def customer_anonymise(
    *,
    customer: Customer | int,
    action: str = PrivacyAction.ANONYMISED,
    requested_by: str = RETENTION_JOB,
    reference: str = "",
) -> AnonymiseResult:
    """Remove a customer's personal data everywhere outside the evidence the policy keeps
    (see the module's docstring), record a `personal_data_anonymised` event on each of their
    cases and one ledger row, all in one transaction. A customer done before is left as is."""
    customer_id = customer.pk if isinstance(customer, Customer) else customer
    with transaction.atomic():
        locked = (
            Customer.objects.select_for_update().select_related("api_client").get(pk=customer_id)
        )
        done = PrivacyRecord.objects.filter(customer=locked, action__in=ANONYMISING_ACTIONS).first()
        if done is not None:
            return AnonymiseResult(record=done, already_done=True)
        pattern = _pattern(personal_values(locked))
        ref = customer_ref(api_client_id=locked.api_client_id, external_id=locked.external_id)
        now = timezone.now()
        cases = list(Case.objects.filter(customer=locked).select_related("workflow"))
        case_ids = [case.pk for case in cases]
        for case in cases:
            Case.objects.filter(pk=case.pk).update(
                data=_data_redacted(case.data, case.workflow.contract),
                payload={
                    "workflow": case.workflow.key,
                    "event_id": case.event_id,
                    "segment": case.segment,
                    "customer": {"external_id": ref},
                    "data": _data_redacted(case.data, case.workflow.contract),
                    "anonymised_at": now.isoformat(),
                },
            )
        documents = _outcomes_anonymise(case_ids, pattern, now.isoformat())
        counts = _messages_anonymise(locked, case_ids, pattern)
        locked.external_id = ref
        locked.name = locked.phone = locked.email = locked.whatsapp = ""
        locked.address, locked.flags = {}, []
        locked.known_fact_salt = ""
        locked.date_of_birth_hash = locked.postcode_hash = locked.account_last4_hash = ""
        locked.updated_at = now
        locked.save()
        record = PrivacyRecord.objects.create(
            action=action,
            customer=locked,
            customer_ref=ref,
            source=locked.api_client.name,
            requested_by=requested_by[:150],
            reference=reference[:200],
            cases=len(cases),
            details={**counts, "documents": documents, "case_ids": [str(i) for i in case_ids]},
            created_at=now,
        )
        for case in cases:
            case_record_event(
                case=case,
                kind="personal_data_anonymised",
                actor=Actor.SYSTEM,
                data={"reason": action, "record": record.pk},
            )
        transaction.on_commit(lambda: _documents_delete(case_ids))
    logger.info("customer %s %s: %d case(s), %d document(s)", ref, action, len(cases), documents)
    return AnonymiseResult(record=record)


# --- erasure requests -------------------------------------------------------------------------


def customer_erase(
    *, external_id: str, client_name: str | None = None, requested_by: str, reference: str = ""
) -> AnonymiseResult:
    """An erasure request: the customer's cases still open are cancelled (reason
    `erasure_request`), then the customer is anonymised as the retention job would, recorded
    as an erasure. Refused, with nothing written, while a case awaits its writeback, when the
    external id is ambiguous across source systems, or unknown."""
    from cases.models import ApiClient

    customers = Customer.objects.filter(external_id=external_id).select_related("api_client")
    if client_name:
        if not ApiClient.objects.filter(name=client_name).exists():
            raise ErasureRefused(f"No API client is named {client_name!r}.")
        customers = customers.filter(api_client__name=client_name)
    found = list(customers)
    if not found:
        clients = ApiClient.objects.filter(**({"name": client_name} if client_name else {}))
        refs = [customer_ref(api_client_id=c.pk, external_id=external_id) for c in clients]
        earlier = PrivacyRecord.objects.filter(
            customer_ref__in=refs, action__in=ANONYMISING_ACTIONS
        ).first()
        if earlier is not None:
            return AnonymiseResult(record=earlier, already_done=True)
        raise ErasureRefused(
            f"No customer has the external id {external_id!r}"
            + (f" at {client_name!r}." if client_name else ".")
        )
    if len(found) > 1:
        names = ", ".join(sorted(c.api_client.name for c in found))
        raise ErasureRefused(
            f"The external id {external_id!r} belongs to customers of several source "
            f"systems ({names}); say which with --client."
        )
    [customer] = found
    with transaction.atomic():
        Customer.objects.select_for_update().get(pk=customer.pk)
        cases = Case.objects.filter(customer=customer)
        waiting = list(cases.filter(state=CaseState.ACTION_SUBMITTED).values_list("pk", flat=True))
        if waiting:
            raise ErasureRefused(
                "These cases hold the customer's submitted outcome, still on its way to the "
                f"system of record: {', '.join(map(str, waiting))}. Run the erasure again "
                "once they are resolved, or have an agent close them if the writeback failed."
            )
        cancelled = []
        for case_id in list(
            cases.filter(state__in=CANCELLABLE_STATES).values_list("pk", flat=True)
        ):
            case_transition(
                case=case_id,
                transition="cancel",
                actor=Actor.SYSTEM,
                data={"reason": "erasure_request"},
            )
            cancelled.append(str(case_id))
        result = customer_anonymise(
            customer=customer,
            action=PrivacyAction.ERASED,
            requested_by=requested_by,
            reference=reference,
        )
    result.cancelled = cancelled
    return result


# --- retention --------------------------------------------------------------------------------


def retention_days_by_workflow() -> dict[str, int]:
    """Days to keep each workflow's closed cases' personal data: the workflow's current
    setting (its active version, else its newest), or RETENTION_DEFAULT_DAYS. The current
    value applies to old cases too: a shorter period decided today must reach them."""
    from policies.models import Workflow

    days: dict[str, int] = {}
    chosen: dict[str, tuple[bool, int]] = {}
    for key, status, version, retention in Workflow.objects.values_list(
        "key", "status", "version", "retention_days"
    ):
        rank = (status == Workflow.Status.ACTIVE, version)
        if key not in chosen or rank > chosen[key]:
            chosen[key] = rank
            days[key] = settings.RETENTION_DEFAULT_DAYS if retention is None else retention
    return days


def customers_due(*, now: dt.datetime, limit: int, skip: Iterable[int] = ()) -> list[int]:
    """Customers not yet anonymised whose cases are all closed, each longer ago than its
    workflow's retention period (leaving out `skip`)."""
    recent = Q(closed_at__isnull=True) | ~Q(state__in=list(TERMINAL_STATES))
    for key, days in retention_days_by_workflow().items():
        recent |= Q(workflow__key=key, closed_at__gt=now - dt.timedelta(days=days))
    return list(
        Customer.objects.filter(Exists(Case.objects.filter(customer=OuterRef("pk"))))
        .exclude(Exists(Case.objects.filter(recent, customer=OuterRef("pk"))))
        .exclude(_anonymised())
        .exclude(pk__in=list(skip))
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )


def evidence_cutoff(now: dt.datetime) -> dt.datetime:
    years = settings.EVIDENCE_RETENTION_YEARS
    try:
        return now.replace(year=now.year - years)
    except ValueError:  # 29 February
        return now.replace(year=now.year - years, day=28)


def cases_expired(*, now: dt.datetime, limit: int) -> list[Any]:
    """Closed cases past the evidence period whose customer is anonymised."""
    return list(
        Case.objects.filter(state__in=list(TERMINAL_STATES), closed_at__lte=evidence_cutoff(now))
        .filter(_anonymised("customer_id"))
        .order_by("closed_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )


def _related_delete(model: Any, ids: list[Any]) -> dict[str, int]:
    """Delete every row that points at these rows, then the rows: the case's messages,
    links, outcomes, tasks, metrics facts, webhooks… whatever app adds a relation later too.
    The timeline is append-only for the application, so its rows go by a raw delete here,
    the one place allowed to."""
    deleted: dict[str, int] = {}
    # The timeline last: other rows (webhook deliveries) point at its events.
    relations = sorted(
        model._meta.related_objects, key=lambda relation: relation.related_model is CaseEvent
    )
    for relation in relations:
        related = relation.related_model
        if related is PrivacyRecord:
            continue  # the ledger keeps its row; the customer link becomes null
        rows = related._base_manager.filter(**{f"{relation.field.name}__in": ids})
        if related is CaseEvent:
            count = rows._raw_delete(rows.db)
        else:
            count, _ = rows.delete()
        if count:
            deleted[related._meta.label] = deleted.get(related._meta.label, 0) + count
    count, _ = model._base_manager.filter(pk__in=ids).delete()
    deleted[model._meta.label] = count
    return deleted


def cases_delete(*, case_ids: list[Any], requested_by: str = RETENTION_JOB) -> int:
    """Delete expired cases whole, and their customers once no case is left; one ledger row
    per customer. Returns the number of cases deleted."""
    with transaction.atomic():
        cases = list(
            Case.objects.select_for_update()
            .filter(pk__in=case_ids, state__in=list(TERMINAL_STATES))
            .values_list("pk", "customer_id")
        )
        if not cases:
            return 0
        by_customer: dict[int, list[Any]] = {}
        for case_id, customer_id in cases:
            by_customer.setdefault(customer_id, []).append(case_id)
        refs = {
            customer.pk: (customer.external_id, customer.api_client.name)
            for customer in Customer.objects.filter(pk__in=by_customer).select_related("api_client")
        }
        deleted = _related_delete(Case, [case_id for case_id, _ in cases])
        emptied = [pk for pk in by_customer if not Case.objects.filter(customer_id=pk).exists()]
        if emptied:
            for label, count in _related_delete(Customer, emptied).items():
                deleted[label] = deleted.get(label, 0) + count
        for customer_id, ids in by_customer.items():
            ref, source = refs[customer_id]
            PrivacyRecord.objects.create(
                action=PrivacyAction.EVIDENCE_DELETED,
                customer_id=None if customer_id in emptied else customer_id,
                customer_ref=ref,
                source=source,
                requested_by=requested_by,
                cases=len(ids),
                details={
                    "case_ids": [str(i) for i in ids],
                    "customer_deleted": customer_id in emptied,
                },
            )
        all_ids = [case_id for case_id, _ in cases]
        transaction.on_commit(lambda: _documents_delete(all_ids))
    logger.info("evidence period over: deleted %s", deleted)
    return len(cases)


@dataclass
class RetentionReport:
    anonymised: int = 0
    cases_deleted: int = 0
    finished: bool = True
    failed: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "anonymised": self.anonymised,
            "cases_deleted": self.cases_deleted,
            "finished": self.finished,
            **({"failed_customers": self.failed} if self.failed else {}),
        }


def retention_apply(
    *, now: dt.datetime | None = None, batch: int | None = None, budget_seconds: float = 50.0
) -> RetentionReport:
    """The daily retention run: anonymise the customers due, then delete the cases past the
    evidence period, in batches of one transaction per customer (or batch of cases) until
    none is left or the time budget is spent. Stopped at any point, the next run carries on
    where this one was: each step is done once and recorded in the same transaction."""
    now = now or timezone.now()
    batch = batch or settings.RETENTION_BATCH
    deadline = time.monotonic() + budget_seconds
    report = RetentionReport()
    while True:
        due = customers_due(now=now, limit=batch, skip=report.failed)
        for customer_id in due:
            if time.monotonic() > deadline:
                report.finished = False
                return report
            try:
                done = customer_anonymise(customer=customer_id)
            except Exception:
                # One customer's failure (a value no configured key opens) must not stop
                # everyone else's retention; it is logged and tried again tomorrow.
                logger.exception("retention: customer #%s could not be anonymised", customer_id)
                report.failed.append(customer_id)
                report.finished = False
                continue
            if not done.already_done:
                report.anonymised += 1
        if len(due) < batch:
            break
    while time.monotonic() <= deadline:
        expired = cases_expired(now=now, limit=batch)
        if not expired:
            return report
        report.cases_deleted += cases_delete(case_ids=expired)
    report.finished = False
    return report


# --- key rotation -----------------------------------------------------------------------------


@dataclass
class RotationReport:
    columns: dict[str, dict[str, int]] = field(default_factory=dict)
    files: dict[str, int] = field(default_factory=lambda: {"checked": 0, "rewritten": 0})
    # Sealed texts inside hash-chained or append-only JSON that still need an older key.
    kept_as_written: dict[str, int] = field(default_factory=dict)


def encrypted_columns() -> list[tuple[Any, Any]]:
    return [
        (model, model_field)
        for model in apps.get_models()
        for model_field in model._meta.concrete_fields
        if isinstance(model_field, _Encrypted)
    ]


def _column_rotate(model: Any, model_field: Any, *, dry_run: bool, batch: int = 1000) -> dict:
    quote = connection.ops.quote_name
    table, column = quote(model._meta.db_table), quote(model_field.column)
    pk = quote(model._meta.pk.column)
    counts = {"checked": 0, "rewritten": 0}
    last = None
    while True:
        after = "" if last is None else f" AND {pk} > %s"
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {pk}, {column} FROM {table} WHERE {column} IS NOT NULL{after} "  # noqa: S608 (names, not values)
                f"ORDER BY {pk} LIMIT {batch}",
                [] if last is None else [last],
            )
            rows = cursor.fetchall()
        if not rows:
            return counts
        last = rows[-1][0]
        changes = []
        for row_pk, value in rows:
            counts["checked"] += 1
            token = value.encode("ascii")
            if not token_current(token):
                changes.append((token_rotate(token).decode("ascii"), row_pk))
        counts["rewritten"] += len(changes)
        if changes and not dry_run:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.executemany(
                    f"UPDATE {table} SET {column} = %s WHERE {pk} = %s",  # noqa: S608 (names)
                    changes,
                )


def documents_rotate(*, dry_run: bool = False) -> dict[str, int]:
    """Every file in the private store under the newest key; a file stored before
    encryption (or restored from an old backup) is encrypted."""
    from miniapp.storage import private_storage

    storage = private_storage()
    root = Path(settings.PRIVATE_MEDIA_ROOT)
    counts = {"checked": 0, "rewritten": 0}
    if not root.exists():
        return counts
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        name = path.relative_to(root).as_posix()
        if name.endswith(".rotating"):
            continue  # a rotation interrupted before its rename
        counts["checked"] += 1
        stored = storage.raw_read(name)
        if is_token(stored):
            if token_current(stored):
                continue
            replacement = token_rotate(stored)
        else:
            replacement = bytes_encrypt(stored)
        counts["rewritten"] += 1
        if not dry_run:
            storage.raw_replace(name, replacement)
    return counts


def _sealed_needing_old_keys(queryset: Any, field_name: str) -> int:
    count = 0
    for value in (
        queryset.filter(**{f"{field_name}__icontains": SEALED_PREFIX})
        .values_list(field_name, flat=True)
        .iterator()
    ):
        for text in _strings(value):
            if text.startswith(SEALED_PREFIX) and not token_current(
                text.removeprefix(SEALED_PREFIX).encode("ascii")
            ):
                count += 1
    return count


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def keys_rotate(*, dry_run: bool = False) -> RotationReport:
    """Re-encrypt every encrypted column and document under the first key of
    FIELD_ENCRYPTION_KEYS; values already under it are left alone, so a second run (or one
    after an interruption) rewrites only what is left.

    Texts sealed inside the case timeline and the staff audit trail are not rewritten: the
    timeline's hash chain covers them as written, and both are append-only. They are counted,
    so an operator knows whether an old key may be dropped yet (docs/privacy.md)."""
    report = RotationReport()
    for model, model_field in encrypted_columns():
        report.columns[f"{model._meta.label}.{model_field.name}"] = _column_rotate(
            model, model_field, dry_run=dry_run
        )
    report.files = documents_rotate(dry_run=dry_run)
    report.kept_as_written["cases.CaseEvent"] = _sealed_needing_old_keys(
        CaseEvent.objects.all(), "data"
    )
    if apps.is_installed("staff"):
        from staff.models import AuditEntry

        report.kept_as_written["staff.AuditEntry"] = _sealed_needing_old_keys(
            AuditEntry.objects.all(), "detail"
        )
    return report
