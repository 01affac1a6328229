"""Writeback fixtures: the shipped core_rest target pointed at a demo core on loopback."""

from __future__ import annotations

import pytest

from tests import factories
from writeback.models import WritebackTarget

PROMISE = {"amount": "120.00", "date": "2026-12-01"}


@pytest.fixture
def core_target(workflow, demo_core, settings):
    """The shipped target, as a deployment would run it: bearer token from CORE_API_TOKEN.
    Backoff is zero so a test can re-run a retry at once."""
    settings.CORE_API_TOKEN = "test-core-token"
    factories.writeback_target_shipped()
    target = WritebackTarget.objects.get(key="core_rest")
    target.base_url = demo_core.url
    target.timeout_seconds = 2
    target.backoff_base_seconds = 0
    target.backoff_cap_seconds = 0
    target.full_clean()
    target.save()
    return target


@pytest.fixture
def verified_case(workflow):
    return factories.case_in_state("verified")


def case_ready(workflow_key: str, state: str = "verified", **overrides):
    """A case of a shipped workflow (installed here) walked to `state`."""
    from cases.services import case_transition
    from policies.models import Workflow

    if not Workflow.objects.filter(key=workflow_key, status="active").exists():
        factories.workflow_shipped(workflow_key)
    case = factories.case_for(workflow_key, **overrides)
    for transition in factories.PATHS_TO_STATE[state]:
        case = case_transition(case=case, transition=transition)
    return case


def submit(case, capture, **kwargs):
    """outcome_submit with its on-commit delivery run (django-q runs jobs inline in tests)."""
    from writeback.services import outcome_submit

    kwargs.setdefault("action", "promise_to_pay")
    kwargs.setdefault("values", PROMISE)
    with capture(execute=True):
        return outcome_submit(case=case, **kwargs)
