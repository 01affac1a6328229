"""Scale-out on this machine: two web processes (gunicorn) and worker clusters (`manage.py
qcluster`, Q_BROKER=redis) sharing one PostgreSQL database and one Redis, with the Twilio
stand-in as the SMS provider and the demo core as the system of record.

The steps, shared by tests/test_scaleout.py (the proof, with a cluster killed half-way) and
bench/scaleout.py (the figures, one cluster against two):

1. `triggers_push`: triggers POSTed to the batch API, batches dealt round-robin to the web
   processes, one client thread per web process;
2. the clusters prepare each case, begin its outreach and send its first SMS to the stand-in
   (`messages_settled` waits for it);
3. `outcomes_submit`: each case's customer verifies and promises to pay, through
   `outcome_submit` (its writeback job goes to Redis on commit); the clusters post each
   outcome to the demo core and read it back (`outcomes_settled` waits for it);
4. `tally`: what the stand-in and the core received, against what was asked of them.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

PROMISE = {"amount": "120.00", "date": "2026-12-01"}
TWILIO_SID = "ACscaleout00000000000000000000000"
TWILIO_TOKEN = "scaleout-token"
CORE_TOKEN = "scaleout-core-token"


def cluster_env(*, twilio_url: str, core_url: str) -> dict[str, str]:
    """What a worker node needs beyond the broker: the providers on loopback."""
    return {
        "SMS_PROVIDER": "twilio",
        "TWILIO_API_BASE": twilio_url,
        "TWILIO_ACCOUNT_SID": TWILIO_SID,
        "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        "TWILIO_FROM_NUMBER": "+15005550006",
        "CORE_API_URL": core_url,
        "CORE_API_TOKEN": CORE_TOKEN,
        "Q_WORKERS": "2",
    }


def trigger_bodies(count: int, run: str) -> list[dict[str, Any]]:
    """promise_to_pay triggers, one customer (and phone number) each, SMS consent given."""
    from tests.factories import daytime_zone

    zone = daytime_zone()
    return [
        {
            "workflow": "promise_to_pay",
            "event_id": f"{run}-{n}",
            "customer": {
                "external_id": f"{run}-customer-{n}",
                "phone": f"+447911{n:06d}",
                "timezone": zone,
                "locale": "en-GB",
                "consent": {"sms": True},
            },
            "data": {
                "account_reference": f"{run}-ACC-{n:06d}",
                "balance": "420.50",
                "currency": "GBP",
                "due_date": "2026-11-01",
                "days_past_due": 22,
            },
        }
        for n in range(count)
    ]


def triggers_push(
    *, web_urls: list[str], raw_key: str, bodies: list[dict[str, Any]], batch: int = 50
) -> float:
    """POST the triggers in batches, dealt round-robin to the web processes; one client thread
    per web process, on a kept-alive connection. Returns the seconds it took."""
    batches = [bodies[i : i + batch] for i in range(0, len(bodies), batch)]
    shares = {url: batches[i :: len(web_urls)] for i, url in enumerate(web_urls)}
    failures: list[str] = []

    def post_all(url: str, mine: list[list[dict[str, Any]]]) -> None:
        parts = urlsplit(url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        try:
            for triggers in mine:
                connection.request(
                    "POST",
                    "/api/v1/triggers/batch/",
                    body=json.dumps({"triggers": triggers}),
                    headers={
                        "Authorization": f"Bearer {raw_key}",
                        "Content-Type": "application/json",
                    },
                )
                response = connection.getresponse()
                body = response.read()
                try:
                    answer = json.loads(body)
                except ValueError:
                    failures.append(f"{url}: {response.status} {body[:300]!r}")
                    continue
                statuses = Counter(item["status"] for item in answer.get("results", []))
                if response.status != 200 or statuses != {"created": len(triggers)}:
                    failures.append(f"{url}: {response.status} {str(answer)[:300]}")
        finally:
            connection.close()

    threads = [threading.Thread(target=post_all, args=item) for item in shares.items()]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise AssertionError(f"triggers refused: {failures[:3]}")
    return time.perf_counter() - started


def settle(condition: Callable[[], bool], *, timeout: float, what: str) -> float:
    """Wait until `condition` holds; the seconds it took, or AssertionError naming `what`."""
    started = time.perf_counter()
    while not condition():
        if time.perf_counter() - started > timeout:
            raise AssertionError(f"not settled within {timeout:.0f} s: {what}")
        time.sleep(0.2)
    return time.perf_counter() - started


def messages_settled(expected: int) -> bool:
    from channels.models import Message

    return Message.objects.filter(status="sent").count() >= expected


def outcomes_submit(*, workflow_key: str = "promise_to_pay", threads: int = 4) -> int:
    """Every case in outreach: engaged, verified, then its promise submitted (the customer's
    path through the mini-app, as services), from `threads` threads as from several web
    processes. Each writeback job is enqueued on commit. Returns the number submitted."""
    from django.db import connection

    from cases.models import Case
    from cases.services import case_transition
    from writeback.services import outcome_submit

    case_ids = list(
        Case.objects.filter(workflow__key=workflow_key, state="outreach")
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    done: list[int] = []

    def submit(mine: list[Any]) -> None:
        try:
            for case_id in mine:
                case = Case.objects.get(pk=case_id)
                for transition in ("engage", "verify"):
                    case = case_transition(case=case, transition=transition)
                outcome_submit(case=case, action="promise_to_pay", values=PROMISE)
                done.append(1)
        finally:
            connection.close()

    workers = [
        threading.Thread(target=submit, args=(case_ids[n::threads],)) for n in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return len(done)


def outcomes_confirmed() -> int:
    from writeback.models import Outcome

    return Outcome.objects.filter(state=Outcome.State.CONFIRMED).count()


@dataclass(frozen=True)
class Tally:
    cases: int
    sms_received: int
    sms_duplicates: int
    messages_sent: int
    outcomes_confirmed: int
    written_back: int
    written_back_duplicates: int
    cases_resolved: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def tally(*, sms_received: list[dict[str, Any]], core_stats: dict[str, Any]) -> Tally:
    """What reached the providers, beside what the database says was done."""
    from cases.models import Case
    from channels.models import Message

    recipients = Counter(message["To"] for message in sms_received)
    return Tally(
        cases=Case.objects.count(),
        sms_received=len(sms_received),
        sms_duplicates=sum(count - 1 for count in recipients.values()),
        messages_sent=Message.objects.filter(status="sent").count(),
        outcomes_confirmed=outcomes_confirmed(),
        written_back=core_stats["arrangements"],
        written_back_duplicates=core_stats["duplicates"],
        cases_resolved=Case.objects.filter(state="resolved").count(),
    )
