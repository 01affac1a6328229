"""Two web processes and two worker clusters on one PostgreSQL and one Redis, one cluster
SIGKILLed half-way through the writebacks: every message is sent once and every outcome is
written back once (tests/scaleout.py has the steps; bench/scaleout.py the figures)."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone
from django_q.models import Schedule

from channels.sequences import sequences_install_shipped
from tests import factories, scaleout
from tests.standins.twilio import TwilioStandIn
from tests.workers import cluster_kill, running_web, running_worker

TRIGGERS = 300
# A claim held by a killed worker is taken over after this (180 s in production, where it
# must outlast Q_TIMEOUT; here no live delivery takes longer than the core's latency).
LEASE_SECONDS = 5


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_clusters_send_each_message_once_and_write_back_each_outcome_once(
    redis_broker, demo_core, tmp_path
):
    factories.workflow_shipped("promise_to_pay")
    sequences_install_shipped()
    _, raw_key = factories.api_client()
    # Each delivery waits on the core a little, so the kill lands with deliveries in flight.
    demo_core.faults(latency_ms=60)
    bodies = scaleout.trigger_bodies(TRIGGERS, "scaleout")
    submitted: list[int] = []

    def submit_all() -> None:
        try:
            submitted.append(scaleout.outcomes_submit())
        finally:
            connection.close()

    with TwilioStandIn(account_sid=scaleout.TWILIO_SID, auth_token=scaleout.TWILIO_TOKEN) as sms:
        env = {
            **redis_broker.env,
            **scaleout.cluster_env(twilio_url=sms.url, core_url=demo_core.url),
            "CORE_API_TOKEN": "test-core-token",
            "WRITEBACK_LEASE_SECONDS": str(LEASE_SECONDS),
        }
        with (
            running_web(log=tmp_path / "web-a.log", **env) as web_a,
            running_web(log=tmp_path / "web-b.log", **env) as web_b,
            running_worker(log=tmp_path / "cluster-a.log", **env) as cluster_a,
            running_worker(log=tmp_path / "cluster-b.log", **env) as cluster_b,
        ):
            pushed_s = scaleout.triggers_push(
                web_urls=[web_a, web_b], raw_key=raw_key, bodies=bodies
            )
            sent_s = scaleout.settle(
                lambda: scaleout.messages_settled(TRIGGERS),
                timeout=90,
                what=f"{TRIGGERS} first SMS sent",
            )

            # The customers act while the clusters deliver: submissions in a thread of their
            # own, the kill as soon as a third of the outcomes are confirmed.
            submitting = threading.Thread(target=submit_all)
            submitting.start()
            third_s = scaleout.settle(
                lambda: scaleout.outcomes_confirmed() >= TRIGGERS // 3,
                timeout=90,
                what="a third of the outcomes confirmed",
            )
            cluster_kill(cluster_a)
            confirmed_at_kill = scaleout.outcomes_confirmed()
            assert confirmed_at_kill < TRIGGERS, "every outcome was done before the kill"
            submitting.join(timeout=120)
            assert submitted == [TRIGGERS]
            # Jobs the dead cluster had taken off Redis are gone with it; the writeback sweep
            # (scheduled every minute) finds their outcomes in the database. Its next run is
            # brought forward to when the dead cluster's claims expire, instead of waiting up
            # to a minute.
            Schedule.objects.filter(name="writeback_deliver_due").update(
                next_run=timezone.now() + dt.timedelta(seconds=LEASE_SECONDS + 1)
            )
            recovered_s = scaleout.settle(
                lambda: scaleout.outcomes_confirmed() == TRIGGERS,
                timeout=90,
                what=f"all outcomes confirmed after the kill ({confirmed_at_kill} before it)",
            )
            assert cluster_b.poll() is None, "the surviving cluster exited"
            time.sleep(1)  # a straggling duplicate, if there were one, would arrive by now
            print(
                f"pushed {pushed_s:.1f} s, sent {sent_s:.1f} s, third {third_s:.1f} s,"
                f" recovered {recovered_s:.1f} s"
            )
            result = scaleout.tally(sms_received=list(sms.messages), core_stats=demo_core.stats())

    assert result.as_dict() == {
        "cases": TRIGGERS,
        "sms_received": TRIGGERS,
        "sms_duplicates": 0,
        "messages_sent": TRIGGERS,
        "outcomes_confirmed": TRIGGERS,
        "written_back": TRIGGERS,
        "written_back_duplicates": 0,
        "cases_resolved": TRIGGERS,
    }
    assert settings.Q_BROKER == "redis"
