"""Agents' services: the task lifecycle and every action an agent takes on a case.

Tasks follow the case: one opens (or is updated) when a case enters `escalated` or
`writeback_failed` and is done when it leaves (cases.services.case_transition calls
`tasks_follow_case` in the transition's transaction); a customer's callback request opens a
callback task (writeback.services.outcome_submit calls `task_open_callback`).

Each agent action runs in one transaction: the change, a CaseEvent by the agent carrying
{user, reason …}, the task's first action time (set once) and a staff audit entry commit
together or not at all. What leaves the process (a message) goes after the commit.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from agents.models import OfferProposal, Task, TaskKind, TaskStatus
from agents.sla import sla_due_at
from cases.models import Actor, Case, CaseState, Channel
from cases.services import IllegalTransition, case_record_event, case_transition
from privacy.crypto import SEALED_PREFIX, text_seal

EXCEPTION_STATES = frozenset({CaseState.ESCALATED, CaseState.WRITEBACK_FAILED})
# A failed writeback holds an outcome the customer already gave: it outranks most
# escalations until the exception route (which usually follows at once) sets its own.
WRITEBACK_FAILED_PRIORITY = 60
CALLBACK_PRIORITY = 50
WORK_QUEUE = "agents.work_queue"
APPROVE_OFFER = "agents.approve_offer"
# The param of each action that an agent's amount or last date replaces.
AMOUNT_PARAMS = {
    "pay_now": "amount",
    "promise_to_pay": "max_amount",
    "payment_plan": "total_amount",
}
DAYS_PARAMS = {"promise_to_pay": "max_days", "request_callback": "max_days"}
REPLY_CHANNELS = (Channel.SMS, Channel.WHATSAPP)
REFUSALS = {
    "no_address": "the customer has no {channel} address on file",
    "no_consent": "the customer has not consented to {channel}",
    "opted_out": "the customer opted out of {channel} (STOP or unsubscribe)",
}


class ActionRefused(ValueError):
    """An agent action that cannot be done; the message says why, for the agent. `field`
    names the form field it is about, if any."""

    def __init__(self, message: str, *, field: str | None = None):
        self.field = field
        super().__init__(message)


# --- the task lifecycle -----------------------------------------------------------------------


def tasks_follow_case(*, case: Case, previous_state: str, transition: str) -> None:
    """Called by case_transition after every transition, inside its transaction and under
    the case's row lock (so two escalations cannot both create a task). Costs no query for
    transitions that neither enter nor leave the exception states."""
    if case.state in EXCEPTION_STATES:
        _exception_task_open(case)
    elif previous_state in EXCEPTION_STATES:
        Task.objects.filter(
            case_id=case.pk, kind=TaskKind.EXCEPTION, status=TaskStatus.OPEN
        ).update(status=TaskStatus.DONE, done_at=timezone.now(), done_reason=transition)


def _exception_task_open(case: Case) -> Task:
    if case.state == CaseState.ESCALATED:
        reason, priority = case.escalation_reason or "escalated", case.priority
    else:
        reason, priority = "writeback_failed", max(case.priority, WRITEBACK_FAILED_PRIORITY)
    task = Task.objects.filter(
        case_id=case.pk, kind=TaskKind.EXCEPTION, status=TaskStatus.OPEN
    ).first()
    if task is None:
        now = timezone.now()
        return Task.objects.create(
            case_id=case.pk,
            kind=TaskKind.EXCEPTION,
            reason=reason[:200],
            priority=priority,
            due_at=sla_due_at(created_at=now, priority=priority),
            created_at=now,
        )
    # A second escalation of a case already in the queue (a writeback failure, then its
    # exception route) is the same piece of work: it keeps its place and its agent.
    task.reason = reason[:200]
    task.priority = priority
    task.due_at = sla_due_at(created_at=task.created_at, priority=priority)
    task.save(update_fields=["reason", "priority", "due_at"])
    return task


def callback_window(*, case: Case, day: str, window: str) -> tuple[dt.datetime, dt.datetime]:
    """The window a customer chose ("09:00-12:00" on a date), read on *their* wall clock,
    in UTC. An end at or before the start wraps to the next day."""
    from channels.contact_rules import customer_zone

    zone = customer_zone(case.customer)
    date = dt.date.fromisoformat(str(day))
    start_text, end_text = str(window).split("-")
    start_time, end_time = dt.time.fromisoformat(start_text), dt.time.fromisoformat(end_text)
    start = dt.datetime.combine(date, start_time, tzinfo=zone)
    end_date = date + dt.timedelta(days=1) if end_time <= start_time else date
    end = dt.datetime.combine(end_date, end_time, tzinfo=zone)
    # The round trip through UTC moves a time inside a spring-forward gap to a real instant.
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


def task_open_callback(*, case: Case, values: dict[str, Any]) -> Task:
    """A callback task due at the start of the window the customer chose, overdue after
    its end. Called inside outcome_submit's transaction; a second request moves it."""
    due_at, window_end = callback_window(
        case=case, day=values.get("date", ""), window=values.get("window", "")
    )
    reason = f"callback {values.get('date')} {values.get('window')}"
    task = Task.objects.filter(
        case_id=case.pk, kind=TaskKind.CALLBACK, status=TaskStatus.OPEN
    ).first()
    if task is None:
        return Task.objects.create(
            case_id=case.pk,
            kind=TaskKind.CALLBACK,
            reason=reason,
            priority=max(case.priority, CALLBACK_PRIORITY),
            due_at=due_at,
            window_end=window_end,
        )
    task.reason, task.due_at, task.window_end = reason, due_at, window_end
    task.save(update_fields=["reason", "due_at", "window_end"])
    return task


# --- shared by every agent action ------------------------------------------------------------


def _require(user: Any, permission: str = WORK_QUEUE) -> None:
    if not (user and user.is_active and user.has_perm(permission)):
        raise PermissionDenied(f"This needs the {permission} permission.")


# Free text an agent types can say anything about the customer ("her husband died"): it is
# sealed (encrypted) wherever it is kept as written, as notes are. The case page opens it.
SEALED_KEYS = frozenset({"reason", "note", "text"})


def _sealed(data: dict[str, Any] | None) -> dict[str, Any] | None:
    if data is None:
        return None
    return {
        key: text_seal(value)
        if key in SEALED_KEYS and isinstance(value, str) and not value.startswith(SEALED_PREFIX)
        else value
        for key, value in data.items()
    }


def _data(user: Any, **data: Any) -> dict[str, Any]:
    values = {k: v for k, v in data.items() if v not in (None, "")}
    return {"user": user.username, **_sealed(values)}


def _audit(*, user: Any, action: str, case: Case, changes=None, detail=None) -> None:
    # The staff audit trail (staff/services.py) records who did what to which case.
    from staff.services import audit_record

    audit_record(user=user, action=action, target=case, changes=changes, detail=_sealed(detail))


def _case_locked(case: Case | Any) -> Case:
    case_id = case.pk if isinstance(case, Case) else case
    return (
        Case.objects.select_for_update(of=("self",))
        .select_related("workflow", "customer")
        .get(pk=case_id)
    )


def _touch(*, case: Case, user: Any, kind: str = TaskKind.EXCEPTION) -> Task | None:
    """Agent time: the first action on an open task is stamped once. Acting on a task that
    nobody holds claims it first, so claim → close (handle time) has a start."""
    task = (
        Task.objects.select_for_update()
        .filter(case_id=case.pk, kind=kind, status=TaskStatus.OPEN)
        .first()
    )
    if task is None:
        return None
    now = timezone.now()
    fields = []
    if task.assignee_id is None:
        task.assignee, task.claimed_at = user, now
        fields += ["assignee", "claimed_at"]
        case_record_event(
            case=case,
            kind="agent_claimed",
            actor=Actor.AGENT,
            data=_data(user, task=task.pk, kind=task.kind, on_first_action=True),
        )
    if task.first_action_at is None:
        task.first_action_at = now
        fields.append("first_action_at")
    if fields:
        task.save(update_fields=fields)
    return task


def _open_task(task: Task | Any) -> Task:
    task_id = task.pk if isinstance(task, Task) else task
    locked = (
        Task.objects.select_for_update(of=("self",))
        .select_related("case", "assignee")
        .get(pk=task_id)
    )
    if locked.status != TaskStatus.OPEN:
        raise ActionRefused("This task is done already.")
    return locked


# --- claim, assign, unassign -----------------------------------------------------------------


def task_claim(*, task: Task | Any, user: Any) -> Task:
    """Take a task: it is yours, and your claim-to-action clock starts."""
    _require(user)
    with transaction.atomic():
        locked = _open_task(task)
        if locked.assignee_id == user.pk:
            return locked
        if locked.assignee_id is not None:
            raise ActionRefused(
                f"{locked.assignee.username} holds this task; ask them or a supervisor to "
                "reassign it."
            )
        locked.assignee, locked.claimed_at = user, timezone.now()
        locked.save(update_fields=["assignee", "claimed_at"])
        case_record_event(
            case=locked.case,
            kind="agent_claimed",
            actor=Actor.AGENT,
            data=_data(user, task=locked.pk, kind=locked.kind),
        )
        _audit(user=user, action="agent_claim", case=locked.case, detail={"task": locked.pk})
    return locked


def assignable_users():
    """Active staff who may work the queue (directly or through a group)."""
    perm = Q(
        user_permissions__codename="work_queue", user_permissions__content_type__app_label="agents"
    )
    group = Q(groups__permissions__codename="work_queue") & Q(
        groups__permissions__content_type__app_label="agents"
    )
    users = get_user_model().objects.filter(is_active=True, is_staff=True)
    return users.filter(perm | group | Q(is_superuser=True)).distinct().order_by("username")


def task_assign(*, task: Task | Any, user: Any, assignee: Any) -> Task:
    _require(user)
    if not (assignee.is_active and assignee.has_perm(WORK_QUEUE)):
        raise ActionRefused(
            f"{assignee.username} cannot work the queue (needs agents.work_queue).",
            field="assignee",
        )
    with transaction.atomic():
        locked = _open_task(task)
        if locked.assignee_id == assignee.pk:
            return locked
        before = locked.assignee.username if locked.assignee else ""
        locked.assignee, locked.claimed_at = assignee, timezone.now()
        locked.save(update_fields=["assignee", "claimed_at"])
        case_record_event(
            case=locked.case,
            kind="agent_assigned",
            actor=Actor.AGENT,
            data=_data(user, task=locked.pk, assignee=assignee.username, previous=before),
        )
        _audit(
            user=user,
            action="agent_assign",
            case=locked.case,
            changes={"assignee": [before, assignee.username]},
            detail={"task": locked.pk},
        )
    return locked


def task_unassign(*, task: Task | Any, user: Any) -> Task:
    _require(user)
    with transaction.atomic():
        locked = _open_task(task)
        if locked.assignee_id is None:
            return locked
        before = locked.assignee.username
        locked.assignee, locked.claimed_at = None, None
        locked.save(update_fields=["assignee", "claimed_at"])
        case_record_event(
            case=locked.case,
            kind="agent_unassigned",
            actor=Actor.AGENT,
            data=_data(user, task=locked.pk, previous=before),
        )
        _audit(
            user=user,
            action="agent_unassign",
            case=locked.case,
            changes={"assignee": [before, ""]},
            detail={"task": locked.pk},
        )
    return locked


def task_callback_done(*, task: Task | Any, user: Any, note: str) -> Task:
    """The agent called the customer back: the callback task is done, with what was said."""
    _require(user)
    note = note.strip()
    if not note:
        raise ActionRefused("Say what came of the call.", field="note")
    with transaction.atomic():
        locked = _open_task(task)
        if locked.kind != TaskKind.CALLBACK:
            raise ActionRefused("Only a callback task is finished this way.")
        _touch(case=locked.case, user=user, kind=TaskKind.CALLBACK)
        now = timezone.now()
        Task.objects.filter(pk=locked.pk).update(
            status=TaskStatus.DONE, done_at=now, done_reason="callback_completed"
        )
        case_record_event(
            case=locked.case,
            kind="callback_completed",
            actor=Actor.AGENT,
            data=_data(user, task=locked.pk, note=text_seal(note)),
        )
        _audit(
            user=user,
            action="agent_callback_done",
            case=locked.case,
            detail={"note": text_seal(note)},
        )
    locked.refresh_from_db()
    return locked


# --- notes and closing -----------------------------------------------------------------------


def case_note_add(*, case: Case | Any, user: Any, text: str) -> None:
    _require(user)
    text = text.strip()
    if not text:
        raise ActionRefused("Write the note.", field="text")
    with transaction.atomic():
        locked = _case_locked(case)
        _touch(case=locked, user=user)
        # Notes say anything about the customer: sealed (encrypted) in the timeline and the
        # audit trail, which keep them as written (privacy/crypto.py).
        sealed = text_seal(text)
        case_record_event(
            case=locked, kind="agent_note", actor=Actor.AGENT, data=_data(user, text=sealed)
        )
        _audit(user=user, action="agent_note", case=locked, detail={"text": sealed})


def case_close(*, case: Case | Any, user: Any, reason: str) -> Case:
    """Close a case the agent finished outside Closeloop (or that needs nothing more)."""
    _require(user)
    reason = reason.strip()
    if not reason:
        raise ActionRefused("Give the reason for closing.", field="reason")
    with transaction.atomic():
        locked = _case_locked(case)
        if locked.state not in EXCEPTION_STATES:
            raise ActionRefused(
                f"A case that is {locked.get_state_display().lower()} cannot be closed."
            )
        _touch(case=locked, user=user)
        closed = case_transition(
            case=locked,
            transition="close_by_agent",
            actor=Actor.AGENT,
            data=_data(user, reason=reason),
        )
        _audit(
            user=user,
            action="agent_close",
            case=locked,
            changes={"state": [locked.state, closed.state]},
            detail={"reason": reason},
        )
    return closed


# --- complete manually, retry the writeback --------------------------------------------------


def _corrections(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[Any]]:
    """What the agent changed in the customer's values; personal fields (contact details,
    names, free text) as fingerprints, as every case event shows them."""
    from writeback.outbox import event_value

    changed = {}
    for name in sorted(set(before) | set(after)):
        if before.get(name) != after.get(name):
            changed[name] = [
                event_value(name, before.get(name)),
                event_value(name, after.get(name)),
            ]
    return changed


def case_complete(
    *,
    case: Case | Any,
    user: Any,
    action: str,
    values: dict[str, Any],
    reason: str = "",
    submission_key: str | None = None,
):
    """Record the outcome for the customer: it goes through the same writeback outbox
    (complete_by_agent → action_submitted → resolved, outcome completed_by_agent). Values
    are checked by the mini-app's own form for the action (agents/forms.py) before this.
    If the customer had submitted something else, the difference is an agent_correction."""
    from writeback.models import Outcome
    from writeback.services import OutcomeRefused, outcome_submit

    _require(user)
    with transaction.atomic():
        locked = _case_locked(case)
        if locked.state != CaseState.ESCALATED:
            raise ActionRefused(
                f"Only an escalated case is completed by hand; this one is "
                f"{locked.get_state_display().lower()}."
            )
        customer_outcome = (
            Outcome.objects.filter(case=locked, actor=Actor.CUSTOMER)
            .order_by("-created_at")
            .first()
        )
        _touch(case=locked, user=user)
        try:
            outcome = outcome_submit(
                case=locked,
                action=action,
                values=values,
                actor=Actor.AGENT,
                submission_key=submission_key,
                event_data=_data(user, reason=reason),
            )
        except OutcomeRefused as exc:
            raise ActionRefused(str(exc)) from exc
        if customer_outcome is not None and (
            customer_outcome.action != action or customer_outcome.values != values
        ):
            case_record_event(
                case=locked,
                kind="agent_correction",
                actor=Actor.AGENT,
                data=_data(
                    user,
                    reason=reason,
                    before={"action": customer_outcome.action, "outcome": str(customer_outcome.pk)},
                    after={"action": action, "outcome": str(outcome.pk)},
                    changes=_corrections(customer_outcome.values, values),
                ),
            )
        _audit(
            user=user,
            action="agent_complete",
            case=locked,
            changes={"state": [CaseState.ESCALATED, CaseState.ACTION_SUBMITTED]},
            detail={"action": action, "outcome": str(outcome.pk), "reason": reason},
        )
    return outcome


def case_retry_writeback(*, case: Case | Any, user: Any, reason: str = ""):
    """Re-drive the case's failed outcome through the outbox (writeback.services.outcome_retry)."""
    from writeback.models import Outcome
    from writeback.services import OutcomeRefused, outcome_retry

    _require(user)
    with transaction.atomic():
        locked = _case_locked(case)
        failed = (
            Outcome.objects.filter(case=locked, state=Outcome.State.FAILED)
            .order_by("-created_at")
            .first()
        )
        if failed is None:
            raise ActionRefused("This case has no failed writeback to retry.")
        _touch(case=locked, user=user)
        try:
            outcome = outcome_retry(outcome=failed, user=user, reason=reason.strip())
        except OutcomeRefused as exc:
            raise ActionRefused(str(exc)) from exc
        _audit(
            user=user,
            action="agent_retry_writeback",
            case=locked,
            detail={"outcome": str(outcome.pk), "reason": reason.strip()},
        )
    return outcome


# --- reply in free text ----------------------------------------------------------------------


def reply_refusal(*, case: Case, channel: str) -> str:
    """Why the agent may not write to this customer on this channel now, or ""."""
    from channels.contact_rules import channel_refusal
    from channels.inbound import whatsapp_window_open

    if channel not in REPLY_CHANNELS:
        return "Replies go by SMS or WhatsApp."
    label = Channel(channel).label
    refusal = channel_refusal(case.customer, channel)
    if refusal:
        return "Cannot send: " + REFUSALS.get(refusal, refusal).format(channel=label) + "."
    if channel == Channel.WHATSAPP and not whatsapp_window_open(case.customer):
        # Meta's customer-service window: free text only within 24 hours of the customer's
        # last WhatsApp message; outside it only approved templates may be sent.
        return (
            "Cannot send: WhatsApp allows free text only within 24 hours of the customer's "
            "last WhatsApp message. Reply by SMS, or send a new link."
        )
    return ""


def case_reply(*, case: Case | Any, user: Any, channel: str, text: str):
    """Write to the customer in the agent's own words. The message is sent after the checks
    and recorded like every other (Message row, message_sent or message_failed event); the
    agent_reply event and the audit entry follow in one transaction."""
    from channels.contact_rules import channel_address
    from channels.dispatch import message_send_now
    from channels.models import Message

    _require(user)
    text = text.strip()
    if not text:
        raise ActionRefused("Write the reply.", field="text")
    case_id = case.pk if isinstance(case, Case) else case
    current = Case.objects.select_related("workflow", "customer").get(pk=case_id)
    refusal = reply_refusal(case=current, channel=channel)
    if refusal:
        raise ActionRefused(refusal, field="channel")
    body = text
    if channel == Channel.SMS and "STOP" not in text.upper():
        body += "\nReply STOP to opt out"
    count = Message.objects.filter(case=current, purpose="reply").count()
    message = message_send_now(
        case=current,
        channel=channel,
        to=channel_address(current.customer, channel),
        key=f"{current.pk}:agent-reply{count + 1}:{timezone.now().timestamp():.0f}",
        body=body,
        body_masked=body,
        purpose="reply",
    )
    with transaction.atomic():
        locked = _case_locked(current)
        _touch(case=locked, user=user)
        case_record_event(
            case=locked,
            kind="agent_reply",
            actor=Actor.AGENT,
            data=_data(user, channel=channel, message=message.key, status=message.status),
        )
        _audit(
            user=user,
            action="agent_reply",
            case=locked,
            detail={"channel": channel, "message": message.key, "status": message.status},
        )
    if message.status in ("failed", "cancelled"):
        raise ActionRefused(
            f"The provider did not take the message: {message.error or message.status}."
        )
    return message


# --- a new link with an alternative offer ----------------------------------------------------


@dataclass(frozen=True)
class OfferPlan:
    """An alternative offer, checked against the policy before anything is written."""

    item: dict[str, Any]
    out_of_policy: bool
    amount: Decimal | None
    needs_approval: bool


def _stake(item: dict[str, Any]) -> Decimal | None:
    """The amount an offer puts in front of the customer, for the approval limit."""
    bounds = item["bounds"]
    if item["action"] == "pay_now":
        return Decimal(bounds["amount"])
    if item["action"] == "promise_to_pay":
        return Decimal(bounds["max_amount"])
    if item["action"] == "payment_plan":
        return Decimal(bounds["plans"][0]["total"])
    return None


def offer_plan(
    *,
    case: Case,
    action: str,
    amount: Decimal | None = None,
    latest_date: dt.date | None = None,
    reason: str = "",
    today: dt.date | None = None,
) -> OfferPlan:
    """Build the offer item from the workflow's own definition of the action, with the
    agent's amount and last date in place of the policy's. It is inside policy only if the
    case was offered the action and the agent changed nothing."""
    from policies.blueprint import blueprint_for
    from policies.offers import Ineligible, offer_action, offer_item_for

    overrides: dict[str, Any] = {}
    if amount is not None:
        if action not in AMOUNT_PARAMS:
            raise ActionRefused("This action takes no amount.", field="amount")
        overrides[AMOUNT_PARAMS[action]] = float(amount)
    if latest_date is not None:
        if action not in DAYS_PARAMS:
            raise ActionRefused("This action takes no last date.", field="latest_date")
        day = today or timezone.localdate()
        if latest_date < day:
            raise ActionRefused("The last date is in the past.", field="latest_date")
        overrides[DAYS_PARAMS[action]] = (latest_date - day).days
    try:
        item = offer_item_for(
            case=case,
            blueprint=blueprint_for(case.workflow),
            action=action,
            overrides=overrides,
            today=today,
        )
    except Ineligible as exc:
        raise ActionRefused(f"This offer cannot be made: {exc}.", field="action") from exc
    offered = offer_action(case.offer, action)
    out_of_policy = offered is None or offered["bounds"] != item["bounds"]
    if out_of_policy and not reason.strip():
        raise ActionRefused(
            "This offer is outside the policy (not offered to this case, or other bounds): "
            "give the reason.",
            field="reason",
        )
    stake = _stake(item)
    needs_approval = bool(
        out_of_policy and stake is not None and stake > settings.AGENT_OFFER_APPROVAL_LIMIT
    )
    return OfferPlan(
        item=item, out_of_policy=out_of_policy, amount=stake, needs_approval=needs_approval
    )


def offer_propose(
    *,
    case: Case | Any,
    user: Any,
    action: str,
    amount: Decimal | None = None,
    latest_date: dt.date | None = None,
    reason: str = "",
) -> OfferProposal:
    """Offer the customer an alternative through a new link. Sent at once, unless it is
    outside policy with an amount above AGENT_OFFER_APPROVAL_LIMIT: then it waits for an
    approver (offer_approve)."""
    _require(user)
    reason = reason.strip()
    with transaction.atomic():
        locked = _case_locked(case)
        _offer_sendable(locked)
        if OfferProposal.objects.filter(case=locked, status=OfferProposal.Status.PENDING).exists():
            raise ActionRefused("An offer for this case is already waiting for approval.")
        plan = offer_plan(
            case=locked, action=action, amount=amount, latest_date=latest_date, reason=reason
        )
        _touch(case=locked, user=user)
        proposal = OfferProposal.objects.create(
            case=locked,
            action=action,
            item=plan.item,
            out_of_policy=plan.out_of_policy,
            reason=reason,
            amount=plan.amount,
            currency=str(locked.data.get("currency", ""))[:3],
            proposed_by=user,
        )
        if plan.needs_approval:
            case_record_event(
                case=locked,
                kind="offer_proposed",
                actor=Actor.AGENT,
                data=_data(
                    user,
                    reason=reason,
                    action=action,
                    proposal=proposal.pk,
                    amount=str(plan.amount),
                    limit=str(settings.AGENT_OFFER_APPROVAL_LIMIT),
                ),
            )
            _audit(
                user=user,
                action="agent_offer_proposed",
                case=locked,
                detail={"proposal": proposal.pk, "action": action, "reason": reason},
            )
        else:
            _offer_send(case=locked, proposal=proposal, user=user)
    return proposal


def offer_approve(*, proposal: OfferProposal | Any, user: Any, note: str = "") -> OfferProposal:
    """A second person lets a pending out-of-policy offer go: it is sent now."""
    _require(user, APPROVE_OFFER)
    with transaction.atomic():
        locked = _proposal_pending(proposal, user)
        case = _case_locked(locked.case_id)
        _offer_sendable(case)
        locked.status = OfferProposal.Status.SENT
        locked.decided_by, locked.decided_at = user, timezone.now()
        locked.decision_note = note.strip()
        case_record_event(
            case=case,
            kind="offer_approved",
            actor=Actor.AGENT,
            data=_data(user, proposal=locked.pk, note=text_seal(locked.decision_note)),
        )
        _offer_send(case=case, proposal=locked, user=locked.proposed_by, approver=user)
        _audit(user=user, action="agent_offer_approve", case=case, detail={"proposal": locked.pk})
    return locked


def offer_decline(*, proposal: OfferProposal | Any, user: Any, note: str) -> OfferProposal:
    _require(user, APPROVE_OFFER)
    note = note.strip()
    if not note:
        raise ActionRefused("Say why the offer is declined.", field="note")
    with transaction.atomic():
        locked = _proposal_pending(proposal, user)
        locked.status = OfferProposal.Status.DECLINED
        locked.decided_by, locked.decided_at, locked.decision_note = user, timezone.now(), note
        locked.save(update_fields=["status", "decided_by", "decided_at", "decision_note"])
        case_record_event(
            case=locked.case,
            kind="offer_declined",
            actor=Actor.AGENT,
            data=_data(user, proposal=locked.pk, note=text_seal(note)),
        )
        _audit(
            user=user,
            action="agent_offer_decline",
            case=locked.case,
            detail={"proposal": locked.pk, "note": text_seal(note)},
        )
    return locked


def _proposal_pending(proposal: OfferProposal | Any, user: Any) -> OfferProposal:
    proposal_id = proposal.pk if isinstance(proposal, OfferProposal) else proposal
    locked = (
        OfferProposal.objects.select_for_update(of=("self",))
        .select_related("case")
        .get(pk=proposal_id)
    )
    if locked.status != OfferProposal.Status.PENDING:
        raise ActionRefused(f"This offer is {locked.get_status_display().lower()} already.")
    if locked.proposed_by_id == user.pk:
        # Four eyes: the approver is never the agent who proposed it.
        raise ActionRefused("You proposed this offer; another approver must decide it.")
    return locked


def _offer_sendable(case: Case) -> None:
    from channels.contact_rules import channel_refusal

    if case.state != CaseState.ESCALATED:
        raise ActionRefused(
            f"A new offer goes only to an escalated case; this one is "
            f"{case.get_state_display().lower()}."
        )
    if all(channel_refusal(case.customer, channel) for channel in ("sms", "email")):
        raise ActionRefused(
            "The customer cannot be sent a link: no SMS or email with consent on file. "
            "Reply on another channel or close the case."
        )


def _offer_summary(offer: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [
        {"action": item["action"], "bounds": item["bounds"]}
        for item in (offer or {}).get("actions", [])
    ]


def _offer_send(*, case: Case, proposal: OfferProposal, user: Any, approver: Any = None) -> None:
    """Within the caller's transaction: the new offer on the case (the alternative first and
    recommended, the rest as before), the offer_again transition with the offer before and
    after, and the link message once that commits."""
    now = timezone.now()
    before = case.offer
    item = proposal.item
    others = [
        {**other, "recommended": False}
        for other in (before or {}).get("actions", [])
        if other["action"] != item["action"]
    ]
    after = {
        "policy": (before or {}).get(
            "policy", {"workflow": case.workflow.key, "version": case.workflow.version}
        ),
        "computed_at": now.isoformat().replace("+00:00", "Z"),
        "today": timezone.localdate().isoformat(),
        "currency": str(case.data.get("currency", "")),
        "actions": [item, *others],
        "excluded": [
            excluded
            for excluded in (before or {}).get("excluded", [])
            if excluded.get("action") != item["action"]
        ],
        "by_agent": {"user": user.username, "proposal": proposal.pk},
    }
    # The new link must outlive the case's old expiry, or it would be dead on arrival.
    expires_at = max(case.expires_at, now + dt.timedelta(days=settings.CASE_LINK_TTL_DAYS))
    Case.objects.filter(pk=case.pk).update(offer=after, expires_at=expires_at)
    try:
        case_transition(
            case=case,
            transition="offer_again",
            actor=Actor.AGENT,
            data=_data(
                user,
                reason=proposal.reason,
                action=item["action"],
                proposal=proposal.pk,
                out_of_policy=proposal.out_of_policy,
                approved_by=approver.username if approver else None,
                before=_offer_summary(before),
                after=_offer_summary(after),
            ),
        )
    except IllegalTransition as exc:
        raise ActionRefused(str(exc)) from exc
    proposal.status = OfferProposal.Status.SENT
    proposal.save()
    if approver is None:
        _audit(
            user=user,
            action="agent_offer_sent",
            case=case,
            changes={"offer": [_offer_summary(before), _offer_summary(after)]},
            detail={"proposal": proposal.pk, "reason": proposal.reason},
        )
    case_id, proposal_id = case.pk, proposal.pk
    transaction.on_commit(lambda: offer_link_send(case_id=case_id, proposal_id=proposal_id))


def offer_link_send(*, case_id: Any, proposal_id: int) -> None:
    """After the commit: a fresh link to the new offer, on the first permitted channel."""
    from miniapp.services import link_send

    case = Case.objects.select_related("workflow", "customer").get(pk=case_id)
    text = f"{settings.BRAND_NAME}: another option for you about {case.workflow.name}: {{link}}"
    message = link_send(case=case, text=text, key_stem="offer")
    if message is None:
        case_record_event(
            case=case,
            kind="offer_link_not_sent",
            actor=Actor.SYSTEM,
            data={"proposal": proposal_id, "reason": "no permitted channel"},
        )
        return
    case_record_event(
        case=case,
        kind="offer_link_sent",
        actor=Actor.SYSTEM,
        data={
            "proposal": proposal_id,
            "channel": message.channel,
            "message": message.key,
            "status": message.status,
        },
    )
