"""Outbound webhooks against a loopback receiver: one delivery per transition, signed, retried
with backoff, given up after the limit, never sent twice by a job that runs twice."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from cases.models import CaseEvent
from cases.services import IllegalTransition, case_transition
from hooks.delivery import deliveries_send_due, delivery_send
from hooks.jobs import delivery_send_job
from hooks.models import WebhookDelivery
from hooks.services import (
    RedeliveryRefused,
    delivery_redeliver,
    webhook_endpoint_create,
    webhooks_for_transition,
)
from tests import factories
from tests.standins.webhook import WebhookReceiver

State = WebhookDelivery.State


def receiver_verifies(secret: str, body: bytes, header: str, tolerance: int = 300) -> bool:
    """The receiver's check, written as docs/webhooks.md tells a client to write it."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    timestamp = int(parts["t"])
    if abs(time.time() - timestamp) > tolerance:
        return False
    signed = f"{timestamp}.".encode() + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])


@pytest.fixture
def receiver():
    with WebhookReceiver() as standin:
        yield standin


@pytest.fixture
def fast_retries(settings):
    """No backoff, so a test can run the retry sweep at once."""
    settings.WEBHOOK_BACKOFF_BASE_SECONDS = 0
    settings.WEBHOOK_BACKOFF_CAP_SECONDS = 0
    settings.WEBHOOK_TIMEOUT_SECONDS = 2


@pytest.fixture
def client_with_endpoint(workflow, receiver):
    client, _ = factories.api_client()
    endpoint = webhook_endpoint_create(client=client, url=receiver.url + "/hooks")
    return client, endpoint


def transition(case, name, capture):
    """A transition with its on-commit jobs run (django-q runs jobs inline in tests)."""
    with capture(execute=True):
        return case_transition(case=case, transition=name)


def test_a_transition_sends_one_signed_delivery(
    client_with_endpoint, receiver, django_capture_on_commit_callbacks
):
    client, endpoint = client_with_endpoint
    case = factories.case(client)
    case = transition(case, "start_outreach", django_capture_on_commit_callbacks)

    [request] = receiver.requests
    delivery = WebhookDelivery.objects.get()
    event = CaseEvent.objects.get(case=case, kind="outreach_started")
    assert request.method == "POST" and request.path == "/hooks"
    signature = request.headers["x-closeloop-signature"]
    assert receiver_verifies(endpoint.secret, request.body, signature)
    assert not receiver_verifies("whsec_other", request.body, signature)
    assert request.headers["x-closeloop-delivery"] == str(delivery.pk)
    assert request.headers["x-closeloop-event"] == "case.outreach"
    assert request.headers["content-type"] == "application/json"
    assert request.json() == {
        "delivery_id": str(delivery.pk),
        "type": "case.outreach",
        "case_id": str(case.pk),
        "event_id": case.event_id,
        "workflow": "promise_to_pay",
        "workflow_version": case.workflow.version,
        "transition": "start_outreach",
        "from_state": "received",
        "to_state": "outreach",
        "outcome": "",
        "occurred_at": event.created_at.isoformat(),
    }
    delivery.refresh_from_db()
    assert delivery.state == State.DELIVERED
    assert delivery.attempts == 1 and delivery.last_status_code == 200
    assert delivery.case_event_id == event.pk
    [attempt] = delivery.attempt_log.all()
    assert attempt.status_code == 200 and attempt.error == ""


def test_a_replayed_body_fails_the_documented_check_after_the_window(
    client_with_endpoint, receiver, django_capture_on_commit_callbacks
):
    client, endpoint = client_with_endpoint
    transition(factories.case(client), "escalate", django_capture_on_commit_callbacks)
    [request] = receiver.requests
    header = request.headers["x-closeloop-signature"]
    assert receiver_verifies(endpoint.secret, request.body, header)
    timestamp = int(header.split(",")[0].removeprefix("t="))
    assert abs(timestamp - time.time()) < 60
    # The same body under a timestamp six minutes old: the signature no longer matches, and
    # the original header ages out of the five-minute window.
    old = timestamp - 360
    forged = f"t={old},v1=" + header.split("v1=")[1]
    assert not receiver_verifies(endpoint.secret, request.body, forged)
    assert not receiver_verifies(endpoint.secret, request.body + b" ", header)


def test_only_subscribed_active_endpoints_of_the_cases_client_hear(
    workflow, receiver, django_capture_on_commit_callbacks
):
    client, _ = factories.api_client()
    other_client, _ = factories.api_client()
    wanted = webhook_endpoint_create(
        client=client, url=receiver.url + "/resolved-or-escalated", events=["case.escalated"]
    )
    webhook_endpoint_create(client=client, url=receiver.url + "/resolved", events=["case.resolved"])
    webhook_endpoint_create(client=client, url=receiver.url + "/off", active=False)
    webhook_endpoint_create(client=other_client, url=receiver.url + "/other")

    transition(factories.case(client), "escalate", django_capture_on_commit_callbacks)

    assert [r.path for r in receiver.requests] == ["/resolved-or-escalated"]
    assert WebhookDelivery.objects.get().endpoint == wanted


def test_a_transition_that_rolls_back_owes_nothing(client_with_endpoint, receiver):
    client, _ = client_with_endpoint
    case = factories.case(client)
    with pytest.raises(RuntimeError), transaction.atomic():
        case_transition(case=case, transition="start_outreach")
        raise RuntimeError("the caller failed after the transition")
    assert not WebhookDelivery.objects.exists()
    with pytest.raises(IllegalTransition):
        case_transition(case=case, transition="verify")  # not allowed from received
    assert not WebhookDelivery.objects.exists()
    assert not receiver.requests


def test_case_creation_sends_nothing(client_with_endpoint, receiver):
    client, _ = client_with_endpoint
    factories.case(client)
    assert not WebhookDelivery.objects.exists()


def test_a_job_that_runs_twice_sends_once(
    client_with_endpoint, receiver, django_capture_on_commit_callbacks
):
    client, _ = client_with_endpoint
    transition(factories.case(client), "escalate", django_capture_on_commit_callbacks)
    delivery = WebhookDelivery.objects.get()

    assert delivery_send_job(str(delivery.pk)) == "not_claimed"
    assert deliveries_send_due() == {}
    assert len(receiver.requests) == 1
    assert delivery.attempt_log.count() == 1


def test_the_same_transition_recorded_twice_is_one_delivery(client_with_endpoint, receiver):
    client, _ = client_with_endpoint
    case = case_transition(case=factories.case(client), transition="escalate")
    event = CaseEvent.objects.get(case=case, kind="escalated")
    webhooks_for_transition(
        case=case, event=event, previous_state="received", transition="escalate"
    )
    assert WebhookDelivery.objects.filter(case_event=event).count() == 1


def test_a_500_is_retried_and_then_delivered(
    client_with_endpoint, receiver, fast_retries, django_capture_on_commit_callbacks
):
    client, _ = client_with_endpoint
    receiver.fail_next(1, status=500)
    transition(factories.case(client), "escalate", django_capture_on_commit_callbacks)

    delivery = WebhookDelivery.objects.get()
    assert delivery.state == State.PENDING
    assert delivery.attempts == 1
    assert delivery.last_status_code == 500 and delivery.last_error == "HTTP 500"

    assert deliveries_send_due() == {"delivered": 1}
    delivery.refresh_from_db()
    assert delivery.state == State.DELIVERED and delivery.attempts == 2
    assert [a.status_code for a in delivery.attempt_log.all()] == [500, 200]
    first, second = receiver.requests
    assert first.body == second.body  # the same bytes, so the receiver can de-duplicate
    assert first.headers["x-closeloop-delivery"] == second.headers["x-closeloop-delivery"]


def test_the_retry_waits_for_its_backoff(
    client_with_endpoint, receiver, settings, django_capture_on_commit_callbacks
):
    settings.WEBHOOK_BACKOFF_BASE_SECONDS = 60
    client, _ = client_with_endpoint
    receiver.fail_next(1, status=503)
    transition(factories.case(client), "escalate", django_capture_on_commit_callbacks)
    delivery = WebhookDelivery.objects.get()
    assert timezone.now() <= delivery.next_attempt_at <= timezone.now() + timedelta(seconds=61)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now() + timedelta(seconds=30)
    )
    assert deliveries_send_due() == {}
    assert len(receiver.requests) == 1


def test_gives_up_after_the_limit(
    client_with_endpoint, receiver, fast_retries, settings, django_capture_on_commit_callbacks
):
    settings.WEBHOOK_MAX_ATTEMPTS = 3
    client, _ = client_with_endpoint
    receiver.fail_next(10, status=500)
    transition(factories.case(client), "escalate", django_capture_on_commit_callbacks)
    assert deliveries_send_due() == {"retry": 1}
    assert deliveries_send_due() == {"failed": 1}
    assert deliveries_send_due() == {}

    delivery = WebhookDelivery.objects.get()
    assert delivery.state == State.FAILED and delivery.attempts == 3
    assert len(receiver.requests) == 3
    assert delivery.attempt_log.count() == 3


def test_an_unreachable_receiver_is_retried(
    client_with_endpoint, receiver, fast_retries, django_capture_on_commit_callbacks
):
    client, _ = client_with_endpoint
    receiver.stop()
    transition(factories.case(client), "escalate", django_capture_on_commit_callbacks)
    delivery = WebhookDelivery.objects.get()
    assert delivery.state == State.PENDING
    assert delivery.last_status_code is None
    assert delivery.last_error.startswith("refused")
    [attempt] = delivery.attempt_log.all()
    assert attempt.error.startswith("refused")


def test_a_dead_workers_claim_is_taken_over(
    client_with_endpoint, receiver, fast_retries, django_capture_on_commit_callbacks
):
    client, _ = client_with_endpoint
    receiver.fail_next(1, status=500)
    transition(factories.case(client), "escalate", django_capture_on_commit_callbacks)
    delivery = WebhookDelivery.objects.get()
    # A worker claimed it and died: its lease runs out, then the sweep sends it.
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        state=State.SENDING, lease_until=timezone.now() + timedelta(seconds=60)
    )
    assert deliveries_send_due() == {}
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        lease_until=timezone.now() - timedelta(seconds=1)
    )
    assert deliveries_send_due() == {"delivered": 1}


def test_redeliver_sends_the_same_delivery_again(
    client_with_endpoint, receiver, fast_retries, settings, django_capture_on_commit_callbacks
):
    settings.WEBHOOK_MAX_ATTEMPTS = 1
    client, _ = client_with_endpoint
    receiver.fail_next(1, status=500)
    transition(factories.case(client), "escalate", django_capture_on_commit_callbacks)
    delivery = WebhookDelivery.objects.get()
    assert delivery.state == State.FAILED

    with django_capture_on_commit_callbacks(execute=True):
        delivery_redeliver(delivery=delivery)
    delivery.refresh_from_db()
    assert delivery.state == State.DELIVERED and delivery.attempts == 1
    assert delivery.attempt_log.count() == 2
    first, second = receiver.requests
    assert json.loads(first.body)["delivery_id"] == json.loads(second.body)["delivery_id"]


def test_redeliver_refuses_while_a_worker_sends(client_with_endpoint, receiver):
    client, _ = client_with_endpoint
    case_transition(case=factories.case(client), transition="escalate")  # job not run
    delivery = WebhookDelivery.objects.get()
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        state=State.SENDING, lease_until=timezone.now() + timedelta(seconds=60)
    )
    with pytest.raises(RedeliveryRefused, match="sending it right now"):
        delivery_redeliver(delivery=delivery)
    assert WebhookDelivery.objects.get().state == State.SENDING


def test_a_delivery_sent_directly_claims_first(client_with_endpoint, receiver):
    client, _ = client_with_endpoint
    case_transition(case=factories.case(client), transition="escalate")
    delivery = WebhookDelivery.objects.get()
    assert delivery_send(delivery_id=delivery.pk) == "delivered"
    assert delivery_send(delivery_id=delivery.pk) == "not_claimed"
    assert len(receiver.requests) == 1


@pytest.mark.django_db(transaction=True)
def test_the_sweep_sends_side_by_side_outside_a_transaction(receiver, fast_retries):
    """Outside a transaction the sweep sends on several threads, each on its own
    connection; every delivery still goes exactly once."""
    factories.workflow_promise_to_pay()
    client, _ = factories.api_client()
    # Committed cases are prepared at once (jobs run inline) and move on by themselves:
    # only the cancellations below are this test's.
    webhook_endpoint_create(client=client, url=receiver.url + "/hooks", events=["case.cancelled"])
    receiver.fail_next(4, status=500)
    for _ in range(4):
        case_transition(case=factories.case(client), transition="cancel")
    # The transitions' jobs ran inline at commit and met the 500s; the sweep retries them.
    assert WebhookDelivery.objects.filter(state=State.PENDING).count() == 4
    assert deliveries_send_due() == {"delivered": 4}
    assert len(receiver.requests) == 8
    delivered = {r.headers["x-closeloop-delivery"] for r in list(receiver.requests)[4:]}
    assert len(delivered) == 4
