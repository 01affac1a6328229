"""Shared fixtures. Data is built by small factories in tests/factories.py, not fixtures
files; the database is PostgreSQL in CI (DATABASE_URL) and SQLite otherwise."""

from __future__ import annotations

import os
import socket
import uuid
from types import SimpleNamespace

import pytest
from django.db import connection
from rest_framework.test import APIClient

from cases.models import Case, CaseEvent, Customer
from tests import factories


@pytest.fixture(autouse=True)
def _no_internet(monkeypatch):
    """Tests may talk to loopback servers they start, never to the outside world."""
    real_connect = socket.socket.connect

    def guarded_connect(sock, address):
        host = address[0] if isinstance(address, tuple) else address
        if (
            isinstance(host, str)
            and host not in ("127.0.0.1", "::1", "localhost")
            and not host.startswith("/")
        ):
            raise RuntimeError(f"Test tried to reach {host!r}: only loopback is allowed.")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)


def pytest_collection_modifyitems(config, items):
    from django.conf import settings

    on_postgres = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
    skip = pytest.mark.skip(reason="needs PostgreSQL (set DATABASE_URL)")
    for item in items:
        if "postgres" in item.keywords and not on_postgres:
            item.add_marker(skip)


@pytest.fixture
def demo_core(tmp_path):
    """The demo system of record (democore/) on a loopback port with a fresh database:
    writeback tests post to `demo_core.url` and steer it with `.faults()`, `.stop()`,
    `.restart()` and `.stats()`."""
    from democore.testing import DemoCore

    with DemoCore.start(db_path=tmp_path / "democore.sqlite3", token="test-core-token") as core:
        yield core


@pytest.fixture
def queued_jobs(monkeypatch):
    """Jobs go to the database queue instead of running inline (the test settings' default):
    for tests that play the workers themselves, or start a real one (tests/workers.py)."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", False)


@pytest.fixture
def redis_broker(queued_jobs, monkeypatch, settings):
    """django-q2's Redis broker (Q_BROKER=redis) on the test Redis, under key names of this
    test alone, so parallel runs sharing one Redis never take each other's jobs. Jobs this
    process enqueues go there; `.env` gives worker and web processes (tests/workers.py) the
    same broker. Skipped where no Redis answers (.ci/run starts one)."""
    import redis
    from django_q.conf import Conf

    url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    client = redis.Redis.from_url(url, socket_timeout=2)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip(f"needs Redis at {url} (set TEST_REDIS_URL)")
    name = f"closeloop-test-{uuid.uuid4().hex[:12]}"
    for attribute, value in {
        "ORM": None,
        "REDIS": url,
        "PREFIX": name,
        "CLUSTER_NAME": name,
        "Q_STAT": f"django_q:{name}:cluster",
    }.items():
        monkeypatch.setattr(Conf, attribute, value)
    settings.Q_BROKER = "redis"
    settings.REDIS_URL = url
    yield SimpleNamespace(
        url=url,
        name=name,
        client=client,
        env={"Q_BROKER": "redis", "REDIS_URL": url, "Q_CLUSTER_NAME": name},
    )
    for key in client.scan_iter(f"django_q:{name}:*"):
        client.delete(key)
    client.close()


@pytest.fixture
def on_postgres() -> bool:
    return connection.vendor == "postgresql"


@pytest.fixture
def workflow(db):
    return factories.workflow_promise_to_pay()


@pytest.fixture
def api_key(db):
    return factories.api_client()


@pytest.fixture
def api(api_key):
    client, raw_key = api_key
    http = APIClient()
    http.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    http.api_client = client
    return http


@pytest.fixture
def trigger_body():
    return factories.trigger_body


@pytest.fixture
def row_counts(db):
    """A callable counting the rows a trigger can write, to prove a refusal wrote nothing."""

    def snapshot() -> dict[str, int]:
        return {model.__name__: model.objects.count() for model in (Customer, Case, CaseEvent)}

    return snapshot
