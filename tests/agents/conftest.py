"""Agents fixtures: staff with the queue's permissions, and escalated cases with a real offer
(computed by case_prepare, as the intake job does)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from cases.services import case_transition
from policies.services import case_prepare
from tests import factories
from tests.writeback.conftest import core_target  # noqa: F401  (the demo core's REST target)


def staff_with(*codenames: str, username: str | None = None):
    user = factories.user(username)
    for codename in codenames:
        user.user_permissions.add(
            Permission.objects.get(codename=codename, content_type__app_label="agents")
        )
    # A fresh instance: has_perm caches what it read first.
    return type(user).objects.get(pk=user.pk)


@pytest.fixture
def agent(db):
    return staff_with("work_queue", "view_task", username="ada-agent")


@pytest.fixture
def other_agent(db):
    return staff_with("work_queue", "view_task", username="bob-agent")


@pytest.fixture
def approver(db):
    return staff_with("approve_offer", "view_offerproposal", username="rita-risk")


def escalated(*, reason: str = "customer_reply", priority: int = 50, **overrides):
    """A promise_to_pay case with its offer computed, escalated for `reason`."""
    case = factories.case(**overrides)
    case_prepare(case=case)
    return case_transition(
        case=case, transition="escalate", data={"reason": reason, "priority": priority}
    )


@pytest.fixture
def escalated_case(workflow):
    return escalated()
