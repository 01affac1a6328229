"""Writeback services: submit an outcome (the customer's, or an agent's), re-drive one,
and reconcile the outbox. Delivery itself is in writeback/outbox.py."""

from __future__ import annotations

import re
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django_q.tasks import async_task

from cases.models import Actor, Case, CaseState, uuid7
from cases.services import case_transition
from policies.catalogue import ACTIONS
from policies.offers import offer_action
from privacy.crypto import text_seal
from writeback.mapping import operations_plan
from writeback.models import Operation, Outcome, ReconciliationReport, WritebackTarget
from writeback.outbox import outcome_context, outcome_deliver

SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
DIGIT_RUN = re.compile(r"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)")
DOCUMENT_KEYS = {"name", "content_type", "size", "sha256", "path"}


class OutcomeRefused(ValueError):
    """A submission that cannot be accepted; the message says why, for the person who sent it."""


class OutcomeExists(OutcomeRefused):
    """The case already has an outcome, and this is a different submission."""

    def __init__(self, outcome: Outcome):
        self.outcome = outcome
        super().__init__(
            f"This case already has an outcome ({ACTIONS[outcome.action].label}, "
            f"{outcome.get_state_display().lower()}); it cannot take a second one."
        )


def _luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        number = int(char) * (2 if index % 2 else 1)
        total += number - 9 if number > 9 else number
    return total % 10 == 0


def _has_card_number(value: Any) -> bool:
    """PCI DSS: a full card number must never be stored; only the provider's reference
    and the last four digits are."""
    if isinstance(value, dict):
        return any(_has_card_number(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_card_number(v) for v in value)
    if isinstance(value, str | int) and not isinstance(value, bool):
        for match in DIGIT_RUN.finditer(str(value)):
            if _luhn(re.sub(r"\D", "", match.group())):
                return True
    return False


def _documents_clean(documents: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    cleaned = []
    for number, document in enumerate(documents or [], 1):
        if not isinstance(document, dict) or not set(document) >= DOCUMENT_KEYS:
            needed = ", ".join(sorted(DOCUMENT_KEYS))
            raise OutcomeRefused(f"Document {number}: give {needed} (and document_type if known).")
        if not SHA256_HEX.match(str(document["sha256"])):
            raise OutcomeRefused(f"Document {number}: sha256 must be 64 lower-case hex digits.")
        if not isinstance(document["size"], int) or document["size"] < 0:
            raise OutcomeRefused(f"Document {number}: size is a number of bytes.")
        kept = {key: document[key] for key in DOCUMENT_KEYS}
        # Targets file documents by type; the mini-app knows it, an agent may not.
        kept["document_type"] = str(document.get("document_type") or "document")
        cleaned.append(kept)
    return cleaned


def outcome_enqueue(outcome_id: Any) -> None:
    async_task(
        "writeback.jobs.outcome_deliver_job",
        str(outcome_id),
        task_name="writeback",
        group="writeback",
    )


def outcome_submit(
    *,
    case: Case | Any,
    action: str,
    values: dict[str, Any],
    evidence: dict[str, Any] | None = None,
    documents: list[dict[str, Any]] | None = None,
    actor: str = Actor.CUSTOMER,
    submission_key: str | None = None,
    event_data: dict[str, Any] | None = None,
) -> Outcome:
    """Record an outcome and its writeback job in one transaction with the case's
    transition (submit_action for the customer, complete_by_agent for an agent); the job
    is enqueued once that commits.

    The same `submission_key` again (a double tap, a second tab) returns the first
    outcome. Any other submission on a case with a live outcome raises OutcomeExists.
    Other refusals raise OutcomeRefused, and a case in the wrong state IllegalTransition;
    nothing is written then. `event_data` joins the transition's event (an agent's name and
    reason).
    """
    if action not in ACTIONS:
        raise OutcomeRefused(f"Unknown action {action!r}.")
    if actor not in (Actor.CUSTOMER, Actor.AGENT):
        raise OutcomeRefused("Outcomes are submitted by the customer or by an agent.")
    if not isinstance(values, dict):
        raise OutcomeRefused("values must be an object of the customer's choices.")
    if _has_card_number(values) or _has_card_number(evidence or {}):
        raise OutcomeRefused(
            "A card number was sent; only the payment provider's reference and the card's "
            "last four digits may be."
        )
    documents = _documents_clean(documents)
    if action == "upload_documents" and not documents:
        raise OutcomeRefused("Upload documents: attach at least one document.")
    if submission_key is not None and not 1 <= len(submission_key) <= 100:
        raise OutcomeRefused("submission_key must be 1 to 100 characters.")
    case_id = case.pk if isinstance(case, Case) else case
    with transaction.atomic():
        # The case row lock serialises two submissions of one case (two tabs).
        locked = Case.objects.select_for_update().select_related("workflow", "customer")
        locked = locked.get(pk=case_id)
        if submission_key:
            first = Outcome.objects.filter(case=locked, submission_key=submission_key).first()
            if first is not None:
                return first
        live = Outcome.objects.filter(case=locked).exclude(state=Outcome.State.FAILED).first()
        if live is not None:
            raise OutcomeExists(live)
        if actor == Actor.CUSTOMER and locked.offer and not offer_action(locked.offer, action):
            raise OutcomeRefused(f"{ACTIONS[action].label} was not offered on this case.")
        target_key = locked.workflow.writeback_target
        target = WritebackTarget.objects.filter(key=target_key).first()
        if target is None:
            raise OutcomeRefused(f"The workflow's writeback target {target_key!r} does not exist.")
        if action not in target.operations:
            raise OutcomeRefused(f"Writeback target {target.key!r} does not map {action!r}.")
        outcome = Outcome(
            id=uuid7(),
            case=locked,
            target=target,
            action=action,
            values=values,
            evidence=evidence or {},
            documents=documents,
            actor=actor,
            submission_key=submission_key or "",
        )
        planned = operations_plan(
            operations=target.operations,
            action=action,
            context=outcome_context(outcome),
            documents=documents,
        )
        if not planned:
            raise OutcomeRefused(
                f"Writeback target {target.key!r} maps no operation for these {action} values."
            )
        case_transition(
            case=locked,
            transition="submit_action" if actor == Actor.CUSTOMER else "complete_by_agent",
            actor=actor,
            # The values stay on the outcome: they may hold contact details.
            data={**(event_data or {}), "action": action, "outcome": str(outcome.pk)},
        )
        outcome.save(force_insert=True)
        Operation.objects.bulk_create(
            Operation(
                outcome=outcome,
                position=position,
                key=item.key,
                spec_name=item.spec_name,
                document_index=item.document_index,
            )
            for position, item in enumerate(planned)
        )
        if action == "request_callback":
            # The callback is a person's job, in the agents' queue, whatever the writeback
            # does; agents builds on writeback, hence the import here.
            from agents.services import task_open_callback

            task_open_callback(case=locked, values=values)
        transaction.on_commit(lambda: outcome_enqueue(outcome.pk))
    return outcome


def outcome_retry(*, outcome: Outcome, user: Any, reason: str = "") -> Outcome:
    """An agent re-drives a failed outcome: the case goes back to action_submitted
    (retry_writeback from writeback_failed, or complete_by_agent once escalated) and the
    operations not yet confirmed are sent again, with the same idempotency keys."""
    with transaction.atomic():
        locked = Outcome.objects.select_for_update().get(pk=outcome.pk)
        if locked.state != Outcome.State.FAILED:
            raise OutcomeRefused("Only a failed outcome can be re-driven.")
        if (
            Outcome.objects.filter(case_id=locked.case_id)
            .exclude(Q(pk=locked.pk) | Q(state=Outcome.State.FAILED))
            .exists()
        ):
            raise OutcomeRefused("The case has a newer outcome; re-drive that one instead.")
        case = Case.objects.get(pk=locked.case_id)
        transition = {
            CaseState.WRITEBACK_FAILED: "retry_writeback",
            CaseState.ESCALATED: "complete_by_agent",
        }.get(case.state)
        if transition is None:
            raise OutcomeRefused(
                f"The case is {case.get_state_display().lower()}; only a case whose "
                "writeback failed, or that was escalated after it, can be re-driven."
            )
        case_transition(
            case=case,
            transition=transition,
            actor=Actor.AGENT,
            data={
                "outcome": str(locked.pk),
                "redrive": True,
                "by": getattr(user, "pk", None),
                "user": getattr(user, "username", ""),
                # The agent's words: sealed like their notes (privacy/crypto.py).
                **({"reason": text_seal(reason)} if reason else {}),
            },
        )
        locked.operations.filter(status=Operation.Status.FAILED).update(
            status=Operation.Status.PENDING
        )
        Outcome.objects.filter(pk=locked.pk).update(
            state=Outcome.State.PENDING,
            attempts=0,
            next_attempt_at=timezone.now(),
            lease_until=None,
            last_error={},
        )
        transaction.on_commit(lambda: outcome_enqueue(locked.pk))
    locked.refresh_from_db()
    return locked


# --- reconciliation ---------------------------------------------------------------------------


def outcomes_needing_attention() -> dict[str, list[Outcome]]:
    """Outcomes not yet confirmed, by why: pending, sent without acknowledgement (a
    request went out and no answer proved it, or a worker's lease ran out), failed."""
    now = timezone.now()
    open_outcomes = Outcome.objects.exclude(state=Outcome.State.CONFIRMED).select_related("target")
    unacknowledged_ids = set(
        Operation.objects.filter(outcome__state__in=[Outcome.State.PENDING, Outcome.State.SENDING])
        .filter(
            Q(status=Operation.Status.ACKNOWLEDGED)
            | Q(status=Operation.Status.PENDING, attempts__gt=0)
        )
        .values_list("outcome_id", flat=True)
    )
    found: dict[str, list[Outcome]] = {"pending": [], "unacknowledged": [], "failed": []}
    for outcome in open_outcomes.order_by("created_at"):
        if outcome.state == Outcome.State.FAILED:
            found["failed"].append(outcome)
        elif outcome.pk in unacknowledged_ids or (
            outcome.state == Outcome.State.SENDING and outcome.lease_until < now
        ):
            found["unacknowledged"].append(outcome)
        elif outcome.state == Outcome.State.PENDING:
            found["pending"].append(outcome)
    return found


def writeback_reconcile(*, dry_run: bool = False, source: str = "schedule") -> ReconciliationReport:
    """List what is not confirmed and re-drive pending and unacknowledged outcomes now,
    whatever their backoff says (idempotency keys make a re-send safe; an open breaker
    still holds them). Failed outcomes are listed: re-driving one is an agent's call
    (outcome_retry). Leaves a ReconciliationReport."""
    found = outcomes_needing_attention()
    redrive = found["pending"] + found["unacknowledged"]
    results: dict[str, int] = {}
    if not dry_run:
        for outcome in redrive:
            result = outcome_deliver(outcome_id=outcome.pk)
            results[result] = results.get(result, 0) + 1
    still_open = Outcome.objects.exclude(state=Outcome.State.CONFIRMED).count()
    return ReconciliationReport.objects.create(
        source=source,
        dry_run=dry_run,
        pending=len(found["pending"]),
        unacknowledged=len(found["unacknowledged"]),
        failed=len(found["failed"]),
        redriven=0 if dry_run else len(redrive),
        confirmed=results.get("confirmed", 0),
        still_open=still_open,
        details={
            "results": results,
            **{
                name: [str(o.pk) for o in outcomes[:200]]
                for name, outcomes in found.items()
                if outcomes
            },
        },
    )
