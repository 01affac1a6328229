"""The case's timeline in words: one sentence per CaseEvent kind, and the rest of its data as
labelled fields, so an agent reads what happened instead of JSON. Every kind the product
records has a sentence here (tests/agents/test_timeline.py checks the list); a kind added
later still reads as its name and its fields."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from policies.catalogue import ACTIONS
from privacy.crypto import sealed_opened


@dataclass
class Entry:
    at: dt.datetime
    actor: str
    kind: str
    title: str
    details: list[tuple[str, str]] = field(default_factory=list)
    # problem (a failure the agent should read), agent (a person's action), or "".
    tone: str = ""


def action_label(key: Any) -> str:
    spec = ACTIONS.get(str(key))
    return spec.label if spec else str(key or "an action")


def _words(value: Any) -> str:
    return str(value or "").replace("_", " ")


def plain_text(value: Any) -> str:
    """Any JSON value as text a person reads: lists joined, objects as "name: value"."""
    if isinstance(value, dict):
        return "; ".join(
            f"{_words(k)}: {plain_text(v)}" for k, v in value.items() if v not in (None, "")
        )
    if isinstance(value, list):
        return ", ".join(plain_text(v) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _channel(data: dict[str, Any]) -> str:
    return {"sms": "SMS", "email": "Email", "whatsapp": "WhatsApp"}.get(
        str(data.get("channel", "")), str(data.get("channel", "")) or "Message"
    )


def _message_sent(data: dict[str, Any]) -> str:
    purpose = data.get("purpose", "step")
    what = {
        "step": f"reminder (step {data.get('step', '?')})",
        "code": "one-time code",
        "link": "new link",
        "reply": "reply",
    }.get(purpose, _words(purpose))
    return f"{_channel(data)} {what} sent"


TITLES: dict[str, Callable[[dict[str, Any]], str]] = {
    # intake and policy
    "triggered": lambda d: (
        f"Trigger {d.get('event_id', '')} received from {d.get('api_client', 'the source')}"
    ),
    "offer_computed": lambda d: (
        "Offer computed: "
        + (", ".join(action_label(a) for a in d.get("actions", [])) or "nothing eligible")
    ),
    "pilot_admitted": lambda d: f"Admitted to the pilot ({_words(d.get('mode'))})",
    "pilot_excluded": lambda d: f"Not in the pilot ({_words(d.get('why'))})",
    "exception_retry": lambda d: (
        f"Exception {_words(d.get('exception'))}: retrying (attempt {d.get('attempt')})"
    ),
    "alternative_offered": lambda d: (
        f"Exception {_words(d.get('exception'))}: {action_label(d.get('action'))} offered instead"
    ),
    "escalated": lambda d: f"Escalated to an agent: {_words(d.get('reason')) or 'no reason given'}",
    "closed_by_rule": lambda d: f"Closed by a rule: {_words(d.get('reason') or d.get('rule'))}",
    # outreach
    "outreach_started": lambda d: "Outreach started",
    "outreach_skipped": lambda d: f"Outreach step skipped: {_words(d.get('reason'))}",
    "outreach_channel_fallback": lambda d: (
        f"Channel fallback: {_words(d.get('reason') or d.get('to_channel'))}"
    ),
    "message_sent": _message_sent,
    "message_failed": lambda d: (
        f"{_channel(d)} message failed: {d.get('error') or d.get('code') or 'no reason given'}"
    ),
    "message_retry": lambda d: (
        f"{_channel(d)} message will be retried: {d.get('error') or _words(d.get('reason'))}"
    ),
    "message_cancelled": lambda d: (
        f"{_channel(d)} message cancelled before sending: {_words(d.get('reason'))}"
    ),
    "message_fallback": lambda d: (
        f"{_channel(d)} failed for good; trying {_channel({'channel': d.get('to_channel')})}"
    ),
    "message_unconfirmed": lambda d: f"{_channel(d)} message interrupted; not repeated",
    "message_status": lambda d: f"{_channel(d)} message {_words(d.get('status'))}",
    "inbound_message": lambda d: f"Customer wrote by {_channel(d)}: “{d.get('text', '')}”",
    "agent_review_requested": lambda d: f"Customer reply needs an agent: {_words(d.get('reason'))}",
    "consent_revoked": lambda d: (
        f"Customer withdrew consent for {_channel(d)} ({_words(d.get('source'))})"
    ),
    "consent_restored": lambda d: (
        f"Customer gave consent again for {_channel(d)} ({_words(d.get('source'))})"
    ),
    # mini-app
    "engaged": lambda d: "Customer opened the link",
    "link_opened": lambda d: "Customer opened the link again",
    "link_renewed": lambda d: (
        f"Customer asked for a new link (sent by {_channel(d)}, {_words(d.get('status'))})"
    ),
    "code_sent": lambda d: f"One-time code sent by {_channel(d)} to {d.get('number', '')}",
    "code_not_sent": lambda d: f"One-time code could not be sent by {_channel(d)}",
    "verification_failed": lambda d: (
        f"Identity check failed ({_words(d.get('factor'))}, "
        f"{d.get('failures')} failure(s){', now locked' if d.get('locked') else ''})"
    ),
    "verified": lambda d: (
        "Customer proved who they are"
        + (f" ({plain_text(d.get('factors'))})" if d.get("factors") else "")
    ),
    "actions_viewed": lambda d: f"Customer looked at {action_label(d.get('shown'))}",
    "option_chosen": lambda d: (
        f"Customer chose {action_label(d.get('action'))}"
        + (" (the recommended option)" if d.get("recommended") else "")
    ),
    "validation_failed": lambda d: (
        f"Customer's {action_label(d.get('action'))} was refused: "
        + (plain_text(d.get("errors")) or "fields " + plain_text(d.get("fields")))
    ),
    "consent_given": lambda d: f"Customer agreed to {action_label(d.get('action'))}",
    "payment_started": lambda d: (
        f"Payment started ({d.get('amount') or ''} {d.get('currency') or ''})".replace(
            "(  )", ""
        ).strip()
    ),
    "payment_cancelled": lambda d: "Customer cancelled the payment",
    "payment_declined": lambda d: f"Payment declined: {_words(d.get('decline_code'))}",
    "payment_unmatched": lambda d: f"Payment could not be matched: {d.get('reason', '')}",
    "payment_webhook": lambda d: (
        f"Payment provider reported {_words(d.get('type'))}: {_words(d.get('result'))}"
    ),
    "help_requested": lambda d: (
        "Customer asked for help" + (f": “{d['note']}”" if d.get("note") else "")
    ),
    "feedback_given": lambda d: f"Customer rated the experience {d.get('score')}",
    "action_submitted": lambda d: f"Customer submitted {action_label(d.get('action'))}",
    "submission_refused": lambda d: (
        f"Submission of {action_label(d.get('action'))} refused: {d.get('reason', '')}"
    ),
    # writeback
    "writeback_attempt": lambda d: (
        f"Writeback {d.get('operation', '')} {_words(d.get('step'))} to "
        f"{d.get('target', '')}: {_words(d.get('result'))}"
        + (f" (HTTP {d['status']})" if d.get("status") else "")
    ),
    "writeback_confirmed": lambda d: (
        f"System of record confirmed the outcome ({plain_text(d.get('references'))})"
    ),
    "writeback_confirmed_late": lambda d: (
        f"System of record confirmed late, case already {_words(d.get('state'))}"
    ),
    "writeback_failed": lambda d: (
        f"Writeback failed: {_words(d.get('error_kind'))} after {d.get('attempts')} attempt(s)"
    ),
    "writeback_retried": lambda d: "Writeback retried by an agent",
    # endings
    "abandoned": lambda d: "Abandoned: the link expired without a submission",
    "cancelled": lambda d: (
        "Cancelled by the source" + (f": {d['reason']}" if d.get("reason") else "")
    ),
    # agents
    "agent_claimed": lambda d: f"{d.get('user')} claimed the {d.get('kind', 'exception')} task",
    "agent_assigned": lambda d: f"{d.get('user')} assigned the task to {d.get('assignee')}",
    "agent_unassigned": lambda d: f"{d.get('user')} released the task from {d.get('previous')}",
    "agent_note": lambda d: f"{d.get('user')} noted: “{d.get('text', '')}”",
    "agent_correction": lambda d: f"{d.get('user')} corrected the customer's submission",
    "agent_reply": lambda d: (
        f"{d.get('user')} replied by {_channel(d)} ({_words(d.get('status'))})"
    ),
    "completed_by_agent": lambda d: (
        f"{d.get('user') or 'An agent'} completed {action_label(d.get('action'))}"
        + (" (writeback re-driven)" if d.get("redrive") else "")
    ),
    "closed_by_agent": lambda d: (
        f"{d.get('user') or 'An agent'} closed the case: {d.get('reason', '')}"
    ),
    "offer_proposed": lambda d: (
        f"{d.get('user')} proposed {action_label(d.get('action'))} outside policy "
        f"({d.get('amount')} is above the {d.get('limit')} limit): waiting for approval"
    ),
    "offer_approved": lambda d: f"{d.get('user')} approved the out-of-policy offer",
    "offer_declined": lambda d: (
        f"{d.get('user')} declined the out-of-policy offer: {d.get('note', '')}"
    ),
    "offered_again": lambda d: (
        f"{d.get('user')} offered {action_label(d.get('action'))} with a new link"
        + (" (outside policy)" if d.get("out_of_policy") else "")
    ),
    "offer_link_sent": lambda d: f"New link sent by {_channel(d)} ({_words(d.get('status'))})",
    "offer_link_not_sent": lambda d: f"New link not sent: {d.get('reason', '')}",
    "callback_completed": lambda d: (
        f"{d.get('user')} called the customer back: “{d.get('note', '')}”"
    ),
}

# Data shown in the title already, or internal (ids a person does not need).
HIDDEN = {"user", "task", "proposal", "outcome", "message", "text", "note", "by"}
PROBLEM_KINDS = {
    "message_failed",
    "message_cancelled",
    "verification_failed",
    "validation_failed",
    "submission_refused",
    "writeback_failed",
    "payment_declined",
    "payment_unmatched",
    "escalated",
    "code_not_sent",
    "offer_link_not_sent",
    "agent_review_requested",
}


def _offer_lines(offer: list[dict[str, Any]]) -> str:
    return "; ".join(
        f"{action_label(item['action'])} ({plain_text(item['bounds'])})" for item in offer
    )


def entry_for(kind: str, actor: str, data: Any, at: dt.datetime, messages: dict[str, Any]) -> Entry:
    # Notes and customers' words are sealed (encrypted) in the timeline; staff read them here.
    data = sealed_opened(data) if isinstance(data, dict) else {"value": data}
    describe = TITLES.get(kind)
    try:
        title = describe(data) if describe else _words(kind).capitalize()
    except (KeyError, TypeError, ValueError, AttributeError):
        title = _words(kind).capitalize()
    details: list[tuple[str, str]] = []
    if kind in ("offered_again",):
        details.append(("Offer before", _offer_lines(data.get("before", [])) or "none"))
        details.append(("Offer after", _offer_lines(data.get("after", []))))
        hidden = HIDDEN | {"before", "after"}
    elif kind == "agent_correction":
        for name, (before, after) in (data.get("changes") or {}).items():
            details.append(
                (_words(name).capitalize(), f"{plain_text(before)} → {plain_text(after)}")
            )
        before, after = data.get("before") or {}, data.get("after") or {}
        if before.get("action") != after.get("action"):
            details.append(
                (
                    "Action",
                    f"{action_label(before.get('action'))} → {action_label(after.get('action'))}",
                )
            )
        hidden = HIDDEN | {"changes", "before", "after"}
    else:
        hidden = HIDDEN
    message = messages.get(str(data.get("message", ""))) if data.get("message") else None
    if message is not None:
        details.append(("Now", message.get_status_display()))
        if kind in ("agent_reply", "message_sent") and message.purpose == "reply":
            details.append(("Text", message.body_masked))
    for key, value in data.items():
        if key in hidden or value in (None, "", [], {}):
            continue
        details.append((_words(key).capitalize(), plain_text(value)))
    tone = "problem" if kind in PROBLEM_KINDS else "agent" if actor == "agent" else ""
    return Entry(at=at, actor=actor, kind=kind, title=title, details=details, tone=tone)
