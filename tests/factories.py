"""Small factories for test data. Each returns saved objects through the same services the
product uses, so tests exercise real paths."""

from __future__ import annotations

import itertools
from typing import Any

from cases.models import Case
from cases.services import api_client_create, triggers_ingest
from policies.models import Workflow
from policies.services import WORKFLOWS_DIR, workflow_install, workflow_spec_read

_sequence = itertools.count(1)


def workflow_promise_to_pay() -> Workflow:
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
