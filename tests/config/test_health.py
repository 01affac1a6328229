"""/healthz: database, broker, worker heartbeat and the oldest unsent job; 200 when all pass,
503 naming what failed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.test import Client
from django.utils import timezone
from django_q.models import OrmQ

from cases.services import case_transition
from channels.models import Message
from hooks.models import WebhookDelivery
from hooks.services import webhook_endpoint_create
from tests import factories
from tests.workers import running_worker, wait_for


def healthz(query: str = ""):
    response = Client().get("/healthz" + query)
    return response.status_code, response.json()


def test_the_database_and_broker_answer(db):
    status, body = healthz("?checks=database,broker")
    assert status == 200
    assert body == {
        "status": "ok",
        "failing": [],
        "checks": {
            "database": {"status": "ok"},
            "broker": {"status": "ok", "kind": "orm", "jobs": 0},
        },
    }


def test_no_worker_is_a_503_that_names_it(db):
    # A worker another test stopped a moment ago may still have its last status cached.
    cache.clear()
    status, body = healthz()
    assert status == 503
    assert body["status"] == "error"
    assert body["failing"] == ["worker"]
    assert body["checks"]["worker"] == {
        "status": "error",
        "detail": "no worker cluster has reported in the last 3 seconds",
    }
    assert body["checks"]["oldest_unsent_job"]["status"] == "ok"


def test_an_unknown_check_is_a_400(db):
    status, body = healthz("?checks=database,vibes")
    assert status == 400
    assert body["detail"] == "Unknown check(s): vibes."


def test_never_cached_and_only_get(db):
    response = Client().get("/healthz?checks=database")
    assert "no-cache" in response["Cache-Control"]
    assert Client().post("/healthz").status_code == 405


def test_a_due_webhook_waiting_too_long_fails_the_queue_check(db, workflow, settings):
    settings.HEALTHZ_MAX_JOB_AGE_SECONDS = 600
    client, _ = factories.api_client()
    webhook_endpoint_create(client=client, url="http://127.0.0.1:9/hooks")
    case_transition(case=factories.case(client), transition="escalate")  # its job never ran
    delivery = WebhookDelivery.objects.get()

    status, body = healthz("?checks=oldest_unsent_job")
    assert status == 200
    assert body["checks"]["oldest_unsent_job"]["depth"]["webhooks"] == 1

    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now() - timedelta(minutes=20)
    )
    status, body = healthz("?checks=oldest_unsent_job")
    assert status == 503
    assert body["failing"] == ["oldest_unsent_job"]
    check = body["checks"]["oldest_unsent_job"]
    assert check["oldest_queue"] == "webhooks"
    assert 1199 <= check["oldest_seconds"] <= 1260
    assert check["detail"].startswith("the oldest due webhooks job has waited")


def test_a_queued_message_or_job_counts_too(db, workflow, settings):
    settings.HEALTHZ_MAX_JOB_AGE_SECONDS = 60
    case = factories.case()
    long_ago = timezone.now() - timedelta(minutes=5)
    Message.objects.create(
        case=case, customer=case.customer, channel="sms", to="+447911123456", not_before=long_ago
    )
    status, body = healthz("?checks=oldest_unsent_job")
    assert status == 503
    assert body["checks"]["oldest_unsent_job"]["oldest_queue"] == "messages"

    Message.objects.all().delete()
    OrmQ.objects.create(key="closeloop", payload="x", lock=long_ago)
    status, body = healthz("?checks=oldest_unsent_job")
    assert status == 503
    assert body["checks"]["oldest_unsent_job"]["oldest_queue"] == "jobs"


def test_a_future_message_is_not_late(db, workflow, settings):
    """Quiet hours hold messages with a future not_before: waiting is their job."""
    settings.HEALTHZ_MAX_JOB_AGE_SECONDS = 60
    case = factories.case()
    Message.objects.create(
        case=case,
        customer=case.customer,
        channel="sms",
        to="+447911123456",
        not_before=timezone.now() + timedelta(hours=8),
    )
    status, body = healthz("?checks=oldest_unsent_job")
    assert status == 200
    assert body["checks"]["oldest_unsent_job"]["depth"]["messages"] == 0


def test_an_unreachable_redis_fails_the_broker_check(db, settings):
    settings.REDIS_URL = "redis://127.0.0.1:9/0"  # discard port: nothing listens
    status, body = healthz("?checks=broker")
    assert status == 503
    assert body["checks"]["broker"] == {"status": "error", "detail": "ConnectionError"}


@pytest.mark.django_db(transaction=True)
def test_a_running_worker_makes_it_healthy():
    factories.writeback_target_shipped()
    with running_worker():
        assert wait_for(lambda: healthz()[0] == 200, timeout=30), healthz()
        _, body = healthz()
    assert body["failing"] == []
    assert body["checks"]["worker"]["status"] == "ok"
    assert body["checks"]["worker"]["clusters"] == 1
    assert body["checks"]["worker"]["workers"] >= 1
