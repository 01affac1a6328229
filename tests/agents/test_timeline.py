"""Every kind of event the product records reads as a sentence on the case page."""

from __future__ import annotations

import re
from pathlib import Path

from django.utils import timezone

from agents.timeline import TITLES, entry_for

APPS = ("cases", "policies", "channels", "miniapp", "writeback", "agents")
# How the code names an event kind: kind="…" / kind = "…", a transition's _record("…"),
# dispatch's _event(message, "…"), and the consent and reconcile assignments.
PATTERNS = [
    re.compile(r'\bkind\s*=\s*"([a-z_]+)"'),
    re.compile(r'_record\(\s*"([a-z_]+)"'),
    re.compile(r'_event\(\s*message,\s*"([a-z_]+)"'),
    re.compile(r'kind, data = "([a-z_]+)"'),
    re.compile(r'kind = "([a-z_]+)" if value else "([a-z_]+)"'),
    re.compile(r'kind="([a-z_]+)" if sent else "([a-z_]+)"'),
]
# Task kinds, writeback target kinds and error kinds: not CaseEvent kinds.
NOT_EVENTS = {"exception", "callback", "document", "file", "rest"}


def recorded_kinds() -> set[str]:
    root = Path(__file__).resolve().parents[2]
    found: set[str] = set()
    for app in APPS:
        for path in (root / app).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            text = path.read_text(encoding="utf-8")
            for pattern in PATTERNS:
                for match in pattern.finditer(text):
                    found.update(group for group in match.groups() if group)
    return found - NOT_EVENTS


def test_every_recorded_kind_has_a_sentence():
    kinds = recorded_kinds()
    assert {"escalated", "message_sent", "offered_again", "consent_revoked"} <= kinds
    assert sorted(kinds - set(TITLES)) == []


def test_an_unknown_kind_still_reads_as_words_and_fields():
    entry = entry_for(
        "something_new", "system", {"reason": "late", "items": [1, 2]}, timezone.now(), {}
    )
    assert entry.title == "Something new"
    assert entry.details == [("Reason", "late"), ("Items", "1, 2")]


def test_a_correction_shows_before_and_after():
    entry = entry_for(
        "agent_correction",
        "agent",
        {
            "user": "ada",
            "changes": {"amount": ["100.00", "120.00"]},
            "before": {"action": "promise_to_pay"},
            "after": {"action": "promise_to_pay"},
        },
        timezone.now(),
        {},
    )
    assert entry.title == "ada corrected the customer's submission"
    assert ("Amount", "100.00 → 120.00") in entry.details
    assert entry.tone == "agent"
