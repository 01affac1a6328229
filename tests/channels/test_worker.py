"""End to end with a real worker: a trigger through the API becomes one SMS at a loopback
Twilio stand-in within seconds."""

from __future__ import annotations

import re

import pytest
from rest_framework.test import APIClient

from cases.models import Case
from channels.models import Message
from channels.sequences import sequences_install_shipped
from miniapp.services import link_resolve
from tests import factories
from tests.standins.twilio import TwilioStandIn
from tests.workers import running_worker, wait_for

LINK = re.compile(r"/m/([A-Za-z0-9_-]{40,})/")


@pytest.mark.django_db(transaction=True)
def test_triggers_become_one_sms_each_within_seconds_even_if_the_worker_was_down(
    queued_jobs,
):
    factories.workflow_shipped("promise_to_pay")
    sequences_install_shipped()
    _, raw_key = factories.api_client()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")

    def post_trigger(phone: str) -> dict:
        body = factories.trigger_body(
            customer={
                "timezone": factories.daytime_zone(),
                "consent": {"sms": True},
                "phone": phone,
            }
        )
        response = api.post("/api/v1/triggers/", body, format="json")
        assert response.status_code == 201, response.content
        return body

    with TwilioStandIn(account_sid="AC123", auth_token="tok") as twilio:
        # The first trigger arrives while no worker runs: its jobs wait in the queue.
        early = post_trigger("+447911123401")
        with running_worker(
            SMS_PROVIDER="twilio",
            TWILIO_API_BASE=twilio.url,
            TWILIO_ACCOUNT_SID="AC123",
            TWILIO_AUTH_TOKEN="tok",
            TWILIO_FROM_NUMBER="+15005550006",
        ) as worker:
            late = post_trigger("+447911123402")
            arrived = wait_for(lambda: len(twilio.messages) >= 2, timeout=30)
            assert arrived, worker.stderr.read1().decode() if worker.poll() is not None else ""
            for body in (early, late):
                case = Case.objects.get(event_id=body["event_id"])
                [sms] = [m for m in twilio.messages if m["To"] == case.customer.phone]
                [token] = LINK.findall(sms["Body"])
                assert link_resolve(token=token).case_id == case.pk
                assert wait_for(
                    lambda case=case: Message.objects.filter(case=case, status="sent").exists()
                )
            assert len(twilio.messages) == 2
