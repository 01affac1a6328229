"""Small factories for test data. Each returns saved objects through the same services the
product uses, so tests exercise real paths."""

from __future__ import annotations

import itertools
from typing import Any

from django.utils import timezone

from cases.models import Case
from cases.services import api_client_create, case_transition, triggers_ingest
from policies.models import Workflow
from policies.services import WORKFLOWS_DIR, workflow_install, workflow_spec_read

_sequence = itertools.count(1)


def daytime_zone() -> str:
    """An IANA zone where it is around midday now, so quiet hours never hold a message."""
    offset = (12 - timezone.now().hour + 12) % 24 - 12  # -12 … +11
    # Etc/GMT zones have inverted signs: Etc/GMT-3 is UTC+3.
    return f"Etc/GMT{-offset:+d}" if offset else "Etc/GMT"


def writeback_target_shipped() -> None:
    """The "core_rest" writeback target that a data migration ships and every shipped
    workflow names. Transactional tests flush it; put it back so those workflows install."""
    import importlib

    from django.apps import apps

    from writeback.models import WritebackTarget

    if not WritebackTarget.objects.filter(key="core_rest").exists():
        shipped = importlib.import_module(
            "writeback.migrations.0002_core_rest_target_and_schedules"
        )
        shipped.forwards(apps, None)


def workflow_promise_to_pay() -> Workflow:
    writeback_target_shipped()
    return workflow_install(spec=workflow_spec_read(WORKFLOWS_DIR / "promise_to_pay.yaml"))


def api_client(name: str | None = None):
    return api_client_create(name=name or f"source-{next(_sequence)}")


def trigger_body(**overrides: Any) -> dict[str, Any]:
    """A valid promise_to_pay trigger; pass customer=/data= dicts to override parts."""
    n = next(_sequence)
    body: dict[str, Any] = {
        "workflow": "promise_to_pay",
        "event_id": f"evt-{n}",
        "customer": {
            "external_id": f"cust-{n}",
            "name": "Ada Lovelace",
            "phone": "+447911123456",
            "email": "ada@example.com",
            "timezone": "Europe/London",
            "locale": "en-GB",
            "consent": {"sms": True, "email": True},
            "known_facts": {
                "date_of_birth": "1985-12-10",
                "postcode": "SW1A 1AA",
                "account_last4": "4321",
            },
        },
        "segment": "retail",
        "data": {
            "account_reference": f"ACC-{n:06d}",
            "balance": "420.50",
            "currency": "GBP",
            "due_date": "2026-11-01",
            "days_past_due": 22,
        },
    }
    for key, value in overrides.items():
        if key in ("customer", "data") and isinstance(value, dict):
            body[key] = {**body[key], **value}
        else:
            body[key] = value
    return body


def case(client=None, **overrides: Any) -> Case:
    """A case created through the trigger path."""
    if client is None:
        client, _ = api_client()
    [result] = triggers_ingest(client=client, raw_triggers=[trigger_body(**overrides)])
    assert result.status == "created", result
    return Case.objects.get(pk=result.case_id)


# The shortest legal path from a new case to each state, for tests that start mid-journey.
PATHS_TO_STATE: dict[str, tuple[str, ...]] = {
    "received": (),
    "outreach": ("start_outreach",),
    "engaged": ("start_outreach", "engage"),
    "verified": ("start_outreach", "engage", "verify"),
    "action_submitted": ("start_outreach", "engage", "verify", "submit_action"),
    "resolved": ("start_outreach", "engage", "verify", "submit_action", "confirm_writeback"),
    "writeback_failed": ("start_outreach", "engage", "verify", "submit_action", "fail_writeback"),
    "escalated": ("escalate",),
    "abandoned": ("abandon",),
    "cancelled": ("cancel",),
    "closed_by_agent": ("escalate", "close_by_agent"),
    "closed_by_rule": ("close_by_rule",),
}


def case_in_state(state: str, client=None, **overrides: Any) -> Case:
    """A case walked to `state` through real transitions, each with its CaseEvent."""
    current = case(client, **overrides)
    for transition in PATHS_TO_STATE[state]:
        current = case_transition(case=current, transition=transition)
    return current


# --- the four shipped workflows, and variants of them ------------------------------------------

# Valid trigger data for each shipped workflow; tests override the fields they are about.
SHIPPED_DATA: dict[str, dict[str, Any]] = {
    "promise_to_pay": {
        "balance": "420.50",
        "currency": "GBP",
        "due_date": "2026-11-01",
        "days_past_due": 22,
    },
    "failed_payment": {
        "amount": "120.00",
        "currency": "GBP",
        "failed_at": "2026-03-01T09:00:00Z",
        "failure_reason": "insufficient_funds",
    },
    "compliance_refresh": {
        "refresh_due_date": "2099-12-31",
        "documents_required": ["proof_of_identity", "proof_of_address"],
    },
    "address_update": {
        "returned_at": "2026-03-01",
        "address_on_file": "1 High Street, London",
    },
}


def workflow_spec(key: str) -> dict[str, Any]:
    """A fresh copy of a shipped workflow file, to change without touching the file."""
    return workflow_spec_read(WORKFLOWS_DIR / f"{key}.yaml")


def workflow_shipped(key: str) -> Workflow:
    writeback_target_shipped()
    return workflow_install(spec=workflow_spec(key))


def workflow_variant(key: str, **changes: Any) -> Workflow:
    """Install a shipped workflow with some top-level parts replaced (a new active
    version when the shipped one is installed already)."""
    writeback_target_shipped()
    return workflow_install(spec={**workflow_spec(key), **changes})


def trigger_body_for(
    workflow_key: str, *, data: dict[str, Any] | None = None, **overrides: Any
) -> dict[str, Any]:
    """A valid trigger for one of the shipped workflows; `data` overrides its fields (a
    value of None leaves the field out)."""
    body = trigger_body(workflow=workflow_key, **overrides)
    merged = {
        "account_reference": body["data"]["account_reference"],
        **SHIPPED_DATA[workflow_key],
        **(data or {}),
    }
    body["data"] = {name: value for name, value in merged.items() if value is not None}
    return body


def case_for(workflow_key: str, client=None, **overrides: Any) -> Case:
    """A case of a shipped workflow, created through the trigger path."""
    if client is None:
        client, _ = api_client()
    [result] = triggers_ingest(
        client=client, raw_triggers=[trigger_body_for(workflow_key, **overrides)]
    )
    assert result.status == "created", result
    return Case.objects.get(pk=result.case_id)


def user(username: str | None = None, *, approver: bool = False):
    """A staff user; `approver` grants the four-eyes approver permission."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission

    person = get_user_model().objects.create_user(
        username=username or f"staff-{next(_sequence)}", is_staff=True
    )
    if approver:
        person.user_permissions.add(
            Permission.objects.get(codename="approve_workflow", content_type__app_label="policies")
        )
    return person
