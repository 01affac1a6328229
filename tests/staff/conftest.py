from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.test import Client

from tests import factories


@pytest.fixture
def member(db):
    """A staff user in the named role's group (created by staff/migrations/0002_roles.py)."""

    def make(role: str, username: str | None = None):
        person = factories.user(username)
        person.groups.add(Group.objects.get(name=role))
        return person

    return make


@pytest.fixture
def as_role(member):
    """A client signed in as a new member of the named role."""

    def sign_in(role: str) -> Client:
        client = Client()
        client.force_login(member(role))
        return client

    return sign_in


@pytest.fixture
def fresh_counters(db):
    """Sign-in throttle counters live in the shared cache; start each test from zero."""
    cache.clear()
    yield
    cache.clear()
