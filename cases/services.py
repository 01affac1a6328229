"""Case services: everything that writes cases, customers and their timeline."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django_fsm import ConcurrentTransition, can_proceed

from cases.bulk import bulk_copy, copy_available
from cases.known_facts import known_fact_hash, known_fact_new_salt
from cases.models import Actor, ApiClient, Case, CaseEvent, Customer
from cases.triggers import TriggerInput, payload_differences, trigger_parse, trigger_seal
from miniapp.ratelimit import rate_parse
from policies.models import Workflow


class IllegalTransition(Exception):
    """A transition that the case's current state does not allow, or that lost a race."""

    def __init__(self, case: Case, transition: str, reason: str = ""):
        self.case = case
        self.transition = transition
        self.state = case.state
        label = transition.replace("_", " ")
        super().__init__(
            reason or f"A case in state {case.state!r} cannot {label}.",
        )


# --- API keys -------------------------------------------------------------------------------

API_KEY_PREFIX = "clk_"


def _key_hash(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def api_client_create(*, name: str, raw_key: str | None = None) -> tuple[ApiClient, str]:
    """Create an API client; the raw key is returned once and never stored. `raw_key` is
    for the demo's well-known key only; real keys are always generated here."""
    raw_key = raw_key or API_KEY_PREFIX + secrets.token_urlsafe(32)
    client = ApiClient.objects.create(
        name=name, key_prefix=raw_key[:10], key_hash=_key_hash(raw_key)
    )
    return client, raw_key


def api_client_authenticate(raw_key: str) -> ApiClient | None:
    if not raw_key.startswith(API_KEY_PREFIX):
        return None
    return ApiClient.objects.filter(key_hash=_key_hash(raw_key), revoked_at=None).first()


def api_client_set_rate_limit(*, client: ApiClient, rate_limit: str) -> None:
    """The client's own request budget ("1200/minute", "off"); blank: API_RATE_LIMIT.
    Raises ValueError naming the format for anything else."""
    rate_parse(rate_limit)
    client.rate_limit = rate_limit.strip()
    client.save(update_fields=["rate_limit"])


def api_client_revoke(*, client: ApiClient) -> None:
    if client.revoked_at is None:
        client.revoked_at = timezone.now()
        client.save(update_fields=["revoked_at"])


# --- state changes --------------------------------------------------------------------------


TRANSITION_FIELDS = (
    "state",
    "outcome",
    "priority",
    "escalation_reason",
    "opened_at",
    "verified_at",
    "submitted_at",
    "written_back_at",
    "closed_at",
    "updated_at",
)


def case_transition(
    *,
    case: Case | Any,
    transition: str,
    actor: str | None = None,
    data: dict[str, Any] | None = None,
) -> Case:
    """Apply one FSM transition under a row lock; its CaseEvent lands in the same commit.
    Without an `actor`, the transition's own default is recorded (engage: the customer).

    Two workers racing for the same case serialise on the lock; the loser then sees the new
    state and gets IllegalTransition instead of silently overwriting the winner.
    """
    case_id = case.pk if isinstance(case, Case) else case
    with transaction.atomic():
        # The trigger as received is never needed to change state; it can be large.
        locked = Case.objects.select_for_update().defer("payload").get(pk=case_id)
        method = getattr(locked, transition, None)
        if method is None or not hasattr(method, "_django_fsm"):
            raise ValueError(f"{transition!r} is not a case transition.")
        if not can_proceed(method):
            raise IllegalTransition(locked, transition)
        previous_state = locked.state
        if actor is None:
            method(data=data)
        else:
            method(actor=actor, data=data)
        # The transition's own timeline entry, which save() writes: its webhooks cite it.
        [recorded] = locked._pending_events[-1:]
        try:
            # Only what a transition may change: rewriting the trigger's JSON on every step
            # would make each state change cost as much as the case is large.
            locked.save(update_fields=TRANSITION_FIELDS)
        except ConcurrentTransition as exc:
            raise IllegalTransition(
                locked, transition, "Another process changed this case first."
            ) from exc
        # The agents' queue follows the state in the same commit: a task opens when a case
        # needs a person and is done when it no longer does. Imported here because agents
        # builds on cases, not the other way round.
        from agents.services import tasks_follow_case

        tasks_follow_case(case=locked, previous_state=previous_state, transition=transition)
        # The client's webhooks are owed in the same commit and sent after it (hooks/).
        from hooks.services import webhooks_for_transition

        webhooks_for_transition(
            case=locked, event=recorded, previous_state=previous_state, transition=transition
        )
    return locked


def case_record_event(
    *, case: Case, kind: str, actor: str, data: dict[str, Any] | None = None
) -> CaseEvent:
    """Record something that happened to a case without changing its state."""
    return CaseEvent.objects.create(case=case, kind=kind, actor=actor, data=data or {})


def case_cancel(*, case: Case, reason: str = "") -> Case:
    return case_transition(
        case=case, transition="cancel", actor=Actor.API, data={"reason": reason} if reason else {}
    )


# --- trigger ingest -------------------------------------------------------------------------


@dataclass
class TriggerResult:
    """The answer for one trigger: created, existing (an identical replay), conflict (same
    event_id, other body) or invalid."""

    index: int
    status: str
    case_id: Any = None
    state: str = ""
    errors: dict[str, list[str]] = field(default_factory=dict)
    differences: list[str] = field(default_factory=list)


CUSTOMER_UPDATABLE = (
    "name",
    "phone",
    "email",
    "whatsapp",
    "address",
    "locale",
    "timezone",
    "preferred_channel",
    "flags",
)


def _active_workflows(keys: Iterable[str]) -> dict[str, Workflow]:
    return {wf.key: wf for wf in Workflow.objects.filter(key__in=set(keys), status="active")}


def _withdrawn_here(consent: dict[str, Any]) -> bool:
    """A "no" the customer gave us directly (a reply or an unsubscribe), not a source's flag."""
    source = str(consent.get("source", ""))
    return consent.get("value") is False and bool(source) and not source.startswith("trigger:")


def _later(given: dict[str, Any], current: dict[str, Any]) -> bool:
    from django.utils.dateparse import parse_datetime

    given_at = parse_datetime(str(given.get("timestamp", "")))
    current_at = parse_datetime(str(current.get("timestamp", "")))
    return bool(given_at and current_at and given_at > current_at)


def _customer_apply(
    customer: Customer, trigger: TriggerInput, *, client: ApiClient, now
) -> set[str]:
    """Apply what a trigger says about its customer; return the names of changed fields.
    Fields the trigger leaves out keep their values: a thin trigger never erases data."""
    changed: set[str] = set()
    given = trigger.customer
    for name in CUSTOMER_UPDATABLE:
        if name in given and getattr(customer, name) != given[name]:
            setattr(customer, name, given[name])
            changed.add(name)
    if "consent" in given:
        consent = dict(customer.consent)
        for channel, item in given["consent"].items():
            current = consent.get(channel, {})
            if current.get("value") == item["value"] and "timestamp" not in item:
                continue  # same answer again: keep when and where it was first given
            if _withdrawn_here(current) and item["value"] and not _later(item, current):
                # The customer withdrew through us (STOP, unsubscribe). A routine trigger
                # carrying yesterday's "yes" must not undo that; only a consent given after
                # the withdrawal (a newer timestamp) does.
                continue
            consent[channel] = {
                "value": item["value"],
                "timestamp": item.get("timestamp", now.isoformat()),
                "source": item.get("source", f"trigger:{client.name}:{trigger.event_id}"),
            }
        if consent != customer.consent:
            customer.consent = consent
            changed.add("consent")
    if trigger.known_facts:
        if not customer.known_fact_salt:
            customer.known_fact_salt = known_fact_new_salt()
            changed.add("known_fact_salt")
        for kind, value in trigger.known_facts.items():
            digest = known_fact_hash(salt=customer.known_fact_salt, kind=kind, normalised=value)
            if getattr(customer, f"{kind}_hash") != digest:
                setattr(customer, f"{kind}_hash", digest)
                changed.add(f"{kind}_hash")
    if changed:
        customer.updated_at = now
        changed.add("updated_at")
    return changed


def _customers_upsert(
    client: ApiClient, triggers: Sequence[TriggerInput], now
) -> dict[str, Customer]:
    """One query to read, one to insert, one to update: never a round-trip per row."""
    external_ids = {t.customer["external_id"] for t in triggers}
    existing = {
        c.external_id: c
        for c in Customer.objects.filter(api_client=client, external_id__in=external_ids)
    }
    new: dict[str, Customer] = {}
    changed_fields: set[str] = set()
    changed: dict[str, Customer] = {}
    for trigger in triggers:
        ext = trigger.customer["external_id"]
        if ext in existing:
            fields = _customer_apply(existing[ext], trigger, client=client, now=now)
            if fields:
                changed_fields |= fields
                changed[ext] = existing[ext]
        else:
            customer = new.get(ext) or Customer(
                api_client=client, external_id=ext, created_at=now, updated_at=now
            )
            _customer_apply(customer, trigger, client=client, now=now)
            new[ext] = customer
    if new:
        _customers_insert(sorted(new.values(), key=lambda customer: customer.external_id))
    if changed:
        Customer.objects.bulk_update(list(changed.values()), sorted(changed_fields))
    return {**existing, **new}


def _customers_insert(customers: list[Customer]) -> None:
    """Insert new customers, sorted so that concurrent batches lock rows in one order."""
    if copy_available():
        try:
            with transaction.atomic():
                bulk_copy(customers, assign_ids=True)
            return
        except IntegrityError:
            for customer in customers:
                customer.pk = None  # the ids drawn for the aborted COPY are not theirs
    # A concurrent batch may have created one of these since the read above; the
    # upsert then takes our (newer) values instead of failing the whole batch.
    Customer.objects.bulk_create(
        customers,
        update_conflicts=True,
        unique_fields=["api_client", "external_id"],
        update_fields=[
            *CUSTOMER_UPDATABLE,
            "consent",
            "known_fact_salt",
            "date_of_birth_hash",
            "postcode_hash",
            "account_last4_hash",
            "updated_at",
        ],
    )


def triggers_ingest(*, client: ApiClient, raw_triggers: Sequence[Any]) -> list[TriggerResult]:
    """Validate and store a batch of triggers: one result per input, in order.

    Each trigger is written whole or not at all. Idempotency: the same (client, event_id)
    with the same body returns the original case; with another body, a conflict. The
    unique constraint on (client, event_id) settles races between concurrent requests:
    inserts skip conflicting rows, and a read-back tells which rows were ours.
    """
    results: list[TriggerResult | None] = [None] * len(raw_triggers)
    valid, workflows = _triggers_validate(raw_triggers, results)
    if valid:
        _store(client, valid, workflows, results)
    return [r for r in results if r is not None]


def _triggers_validate(
    raw_triggers: Sequence[Any], results: list[TriggerResult | None]
) -> tuple[list[TriggerInput], dict[str, Workflow]]:
    """Check each envelope, then its data against its workflow's contract; record an
    invalid result for each one that fails. Returns the valid (sealed) triggers."""
    parsed: list[TriggerInput] = []
    for index, raw in enumerate(raw_triggers):
        trigger, errors = trigger_parse(raw, index)
        if errors:
            results[index] = TriggerResult(index=index, status="invalid", errors=errors)
        else:
            parsed.append(trigger)

    workflows = _active_workflows(t.workflow_key for t in parsed)
    valid: list[TriggerInput] = []
    for trigger in parsed:
        workflow = workflows.get(trigger.workflow_key)
        if workflow is None:
            results[trigger.index] = TriggerResult(
                index=trigger.index,
                status="invalid",
                errors={"workflow": [f"No active workflow with key {trigger.workflow_key!r}."]},
            )
            continue
        clean, errors = workflow.compiled_contract.validate(trigger.data)
        if errors:
            results[trigger.index] = TriggerResult(
                index=trigger.index, status="invalid", errors=errors
            )
            continue
        trigger_seal(trigger, clean)
        valid.append(trigger)
    return valid, workflows


def _replay_result(trigger: TriggerInput, case_row: dict[str, Any]) -> TriggerResult:
    if case_row["body_fingerprint"] == trigger.fingerprint:
        return TriggerResult(
            index=trigger.index, status="existing", case_id=case_row["id"], state=case_row["state"]
        )
    return TriggerResult(
        index=trigger.index,
        status="conflict",
        case_id=case_row["id"],
        differences=payload_differences(case_row["payload"], trigger.payload),
    )


def _existing_cases(client: ApiClient, event_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    rows = Case.objects.filter(api_client=client, event_id__in=set(event_ids)).values(
        "id", "event_id", "body_fingerprint", "state", "payload"
    )
    return {row["event_id"]: row for row in rows}


def _store(
    client: ApiClient,
    valid: list[TriggerInput],
    workflows: dict[str, Workflow],
    results: list[TriggerResult | None],
) -> None:
    now = timezone.now()
    expires_at = now + timedelta(days=settings.CASE_LINK_TTL_DAYS)
    with transaction.atomic():
        known = _existing_cases(client, (t.event_id for t in valid))
        fresh: list[TriggerInput] = []
        first_in_batch: dict[str, TriggerInput] = {}
        for trigger in valid:
            if trigger.event_id in known:
                results[trigger.index] = _replay_result(trigger, known[trigger.event_id])
            elif trigger.event_id in first_in_batch:
                continue  # decided after the insert, against the first one's row
            else:
                first_in_batch[trigger.event_id] = trigger
                fresh.append(trigger)
        if not fresh:
            _settle_in_batch_repeats(valid, results, known)
            return

        # If a concurrent request stores one of these event_ids first, our customer changes
        # must not stand: its body, not ours, describes the customer. They are undone and the
        # batch sorted again, when that event_id reads as a replay or a conflict.
        savepoint = transaction.savepoint()
        customers = _customers_upsert(client, fresh, now)
        cases = [
            Case(
                workflow=workflows[t.workflow_key],
                customer=customers[t.customer["external_id"]],
                api_client=client,
                event_id=t.event_id,
                body_fingerprint=t.fingerprint,
                payload=t.payload,
                data=t.data,
                segment=t.segment,
                triggered_at=now,
                expires_at=expires_at,
            )
            for t in fresh
        ]
        stored = _cases_insert(client, cases)
        if any(stored[case.event_id]["id"] != case.id for case in cases):
            transaction.savepoint_rollback(savepoint)
            return _store(client, valid, workflows, results)
        transaction.savepoint_commit(savepoint)
        ours = {case.event_id: case for case in cases if stored[case.event_id]["id"] == case.id}
        _events_insert(client, list(ours.values()), now)
        for trigger in fresh:
            if trigger.event_id in ours:
                results[trigger.index] = TriggerResult(
                    index=trigger.index,
                    status="created",
                    case_id=ours[trigger.event_id].id,
                    state=ours[trigger.event_id].state,
                )
            else:  # a concurrent request stored this event_id between our read and insert
                results[trigger.index] = _replay_result(trigger, stored[trigger.event_id])
        _settle_in_batch_repeats(valid, results, stored)
        if ours:
            # Offer, pilot and fork rules run in a job once these rows are committed; the
            # import is here because policies builds on cases, not the other way round.
            from policies.jobs import prepare_cases_enqueue

            created_ids = [case.id for case in ours.values()]
            transaction.on_commit(lambda: prepare_cases_enqueue(created_ids))


def _cases_insert(client: ApiClient, cases: list[Case]) -> dict[str, dict[str, Any]]:
    """Insert new cases; return the stored row for each of their event_ids, whoever
    wrote it. The unique (client, event_id) constraint decides between racing requests."""
    if copy_available():
        try:
            with transaction.atomic():
                bulk_copy(sorted(cases, key=lambda case: case.event_id))
        except IntegrityError:
            pass  # a concurrent request stored one of these event_ids first: see below
        else:  # every row went in, so every row is ours: nothing to read back
            return {
                case.event_id: {
                    "id": case.id,
                    "event_id": case.event_id,
                    "body_fingerprint": case.body_fingerprint,
                    "state": case.state,
                    "payload": case.payload,
                }
                for case in cases
            }
    Case.objects.bulk_create(cases, ignore_conflicts=True)
    return _existing_cases(client, (case.event_id for case in cases))


def _events_insert(client: ApiClient, cases: list[Case], now) -> None:
    events = [
        CaseEvent(
            case=case,
            kind="triggered",
            actor=Actor.API,
            created_at=now,
            data={
                "event_id": case.event_id,
                "workflow": case.workflow.key,
                "workflow_version": case.workflow.version,
                "api_client": client.name,
            },
        )
        for case in cases
    ]
    if copy_available():
        bulk_copy(events)
    else:
        CaseEvent.objects.bulk_create(events)


def _settle_in_batch_repeats(
    valid: list[TriggerInput],
    results: list[TriggerResult | None],
    stored: dict[str, dict[str, Any]],
) -> None:
    """A batch that repeats an event_id: the repeat is a replay of the first occurrence."""
    for trigger in valid:
        if results[trigger.index] is None:
            results[trigger.index] = _replay_result(trigger, stored[trigger.event_id])
