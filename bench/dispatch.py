"""Outreach dispatch benchmark: SMS sent per second by one worker, beside the provider's ceiling.

    .venv/bin/python bench/dispatch.py [--messages 20000] [--keep]

It builds its own database (closeloop_bench_dispatch, dropped first and after, unless
--keep), runs the migrations, installs the promise_to_pay workflow and the shipped
sequences, creates one case per message through `triggers_ingest` (batches of 1,000, COPY on
PostgreSQL) and queues one step-1 SMS per case. The messages are bulk-inserted with exactly
the fields `channels.services.message_queue_step` sets: this benchmark measures dispatch,
not the sequence engine that decides what to queue.

The Twilio stand-in (tests/standins/twilio.py) runs in a process of its own, so that it
does not share the dispatcher's GIL; SMS_PROVIDER=twilio points at it. Then:

1. ours: this process is the one worker. It calls `channels.dispatch.dispatch_until_idle`
   until no message is queued; wall clock from the first claim until every message is
   `sent`. Checked: N messages sent, N received by the stand-in, no key twice, every body
   with a working /m/ link.
2. baseline: the same N bodies POSTed to the same stand-in with `config.http.http_request`
   from one thread pool as wide as the dispatcher's (OUTREACH_SEND_CONCURRENCY), with no
   database work at all: the ceiling the provider (and the HTTP client) imposes.
3. Where the time goes: the worker thread's steps, summed over the run, and the rest of
   the wall clock, spent waiting for sends.

A benchmark, not a test: pytest never collects it (bench/ is outside testpaths) and it
asserts nothing about timings.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import (  # noqa: E402  (the repository root must be importable first)
    batches_make,
    database_drop,
    database_recreate,
    database_url,
    server_environment,
)

BENCH_DB = "closeloop_bench_dispatch"
TARGET_MESSAGES = 200_000  # a mid-sized retail bank's reminder programme, per month
TARGET_SECONDS = 300
TWILIO_SID = "ACbench0000000000000000000000000"
TWILIO_TOKEN = "bench-token"
TWILIO_FROM = "+15005550006"
LINK = re.compile(r"/m/[A-Za-z0-9_-]{40,}/")
# The worker thread's steps, as module functions of channels.dispatch, timed over the run.
# Sends run in the dispatcher's threads meanwhile; what the worker thread spends waiting
# for them is the wall clock less these.
PHASES = (
    "messages_claim",
    "_messages_load",
    "_prepare",
    "_save",
    "_events_insert",
    "_record",
)


# --- the stand-in ---------------------------------------------------------------------------


class StandInProcess:
    """tests/standins/twilio.py run as `python -m`: it prints its URL, then answers each
    line on its stdin with one JSON line listing every message received so far."""

    def __init__(self, env: dict[str, str]):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.standins.twilio", TWILIO_SID, TWILIO_TOKEN],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.url = self.process.stdout.readline().strip()
        if not self.url.startswith("http://127.0.0.1:"):
            self.stop()
            raise SystemExit("The Twilio stand-in did not start; see its output above.")

    def messages(self) -> list[dict[str, Any]]:
        self.process.stdin.write("report\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=30)


# --- the data -------------------------------------------------------------------------------


def project_prepare() -> None:
    """Migrate; install the shipped promise_to_pay workflow and the shipped sequences."""
    from django.core.management import call_command

    from channels.sequences import sequences_install_shipped
    from policies.services import WORKFLOWS_DIR, workflow_install, workflow_spec_read

    call_command("migrate", verbosity=0)
    workflow_install(spec=workflow_spec_read(WORKFLOWS_DIR / "promise_to_pay.yaml"))
    sequences_install_shipped()


def cases_create(count: int) -> None:
    """One promise_to_pay case (and customer, SMS consent given) per message."""
    from cases.services import api_client_create, triggers_ingest

    client, _ = api_client_create(name="bench")
    for body in batches_make("run", count, 1000):
        results = triggers_ingest(client=client, raw_triggers=json.loads(body)["triggers"])
        if any(result.status != "created" for result in results):
            raise SystemExit("The ingest did not create every case.")


def messages_queue() -> int:
    """One step-1 SMS per case, with the fields message_queue_step gives it."""
    from django.utils import timezone

    from cases.bulk import bulk_copy
    from cases.models import Case
    from channels.models import Message, MessageStatus

    now = timezone.now()
    cases = Case.objects.order_by("pk").values_list("pk", "customer_id", "customer__phone")
    messages = [
        Message(
            key=f"{case_id}:step1",
            case_id=case_id,
            customer_id=customer_id,
            workflow_key="promise_to_pay",
            channel="sms",
            purpose="step",
            step_position=1,
            variant="A",
            template_name="first_reminder",
            locale="en",
            to=phone,
            status=MessageStatus.QUEUED,
            not_before=now,
        )
        for case_id, customer_id, phone in cases.iterator(chunk_size=5000)
    ]
    bulk_copy(messages)
    return len(messages)


# --- ours -----------------------------------------------------------------------------------


@contextmanager
def phases_timed() -> Iterator[dict[str, float]]:
    """Wrap the dispatcher's steps in timers: seconds per phase, summed over every batch."""
    from channels import dispatch

    totals = dict.fromkeys(PHASES, 0.0)
    originals = {name: getattr(dispatch, name) for name in PHASES}

    def timed(name: str):
        function = originals[name]

        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                totals[name] += time.perf_counter() - started

        return wrapper

    for name in PHASES:
        setattr(dispatch, name, timed(name))
    try:
        yield totals
    finally:
        for name, function in originals.items():
            setattr(dispatch, name, function)


def dispatch_run() -> tuple[float, Counter, dict[str, float]]:
    """Seconds until nothing is queued, the dispatch report's totals, and the phases."""
    from channels.dispatch import dispatch_until_idle

    totals: Counter = Counter()
    with phases_timed() as phases:
        started = time.perf_counter()
        while True:
            report = dispatch_until_idle(budget_seconds=90).as_dict()
            report.pop("reconciled")
            totals.update(report)
            if report["claimed"] == 0:
                break
        elapsed = time.perf_counter() - started
    return elapsed, totals, phases


def dispatch_check(expected: int, received: list[dict[str, Any]]) -> None:
    from channels.models import Message

    statuses = Counter(Message.objects.values_list("status", flat=True))
    if statuses != {"sent": expected}:
        raise SystemExit(f"Expected {expected} sent, got {dict(statuses)}")
    if len(received) != expected:
        raise SystemExit(f"The stand-in received {len(received)} messages, expected {expected}")
    recipients = Counter(message["To"] for message in received)
    queued = Counter(Message.objects.values_list("to", flat=True))
    if recipients != queued:
        raise SystemExit("The stand-in's recipients differ from the queued messages")
    tokens = [LINK.search(message["Body"]) for message in received]
    if not all(tokens) or len({token.group() for token in tokens}) != expected:
        raise SystemExit("Not every message carries its own /m/ link")


# --- the baseline ---------------------------------------------------------------------------


def baseline_run(url: str, received: list[dict[str, Any]], width: int) -> float:
    """The stand-in's messages POSTed again, as the provider posts them, no database."""
    from config.http import http_request

    endpoint = f"{url}/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"
    forms = [
        {key: message[key] for key in ("To", "From", "Body", "StatusCallback") if message.get(key)}
        for message in received
    ]

    def post(form: dict[str, str]) -> int:
        return http_request("POST", endpoint, data=form, auth=(TWILIO_SID, TWILIO_TOKEN)).status

    with ThreadPoolExecutor(max_workers=width) as pool:
        started = time.perf_counter()
        statuses = Counter(pool.map(post, forms))
        elapsed = time.perf_counter() - started
    if statuses != {201: len(forms)}:
        raise SystemExit(f"Baseline answers: {dict(statuses)}")
    return elapsed


# --- the run --------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--messages", type=int, default=20000, help=f"messages to send (try {TARGET_MESSAGES})"
    )
    parser.add_argument(
        "--keep", action="store_true", help=f"keep the {BENCH_DB} database afterwards"
    )
    args = parser.parse_args()

    db_url = database_url(BENCH_DB)
    env = {
        **server_environment(db_url),
        "SMS_PROVIDER": "twilio",
        "TWILIO_ACCOUNT_SID": TWILIO_SID,
        "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        "TWILIO_FROM_NUMBER": TWILIO_FROM,
    }
    database_recreate(BENCH_DB)
    standin = StandInProcess(env)
    try:
        os.environ.update(env, TWILIO_API_BASE=standin.url)
        import django

        django.setup()
        from django.conf import settings

        project_prepare()
        started = time.perf_counter()
        cases_create(args.messages)
        queued = messages_queue()
        setup_s = time.perf_counter() - started
        print(f"Set up {queued} cases and queued messages in {setup_s:.1f} s", flush=True)

        ours_s, report, phases = dispatch_run()
        received = standin.messages()
        dispatch_check(queued, received)
        width = settings.OUTREACH_SEND_CONCURRENCY
        baseline_s = baseline_run(standin.url, received, width)
        if len(standin.messages()) != 2 * queued:
            raise SystemExit("The stand-in did not receive every baseline message")
    finally:
        standin.stop()
        if not args.keep:
            from django.db import connections

            connections.close_all()
            database_drop(BENCH_DB)

    ours_rate = queued / ours_s
    baseline_rate = queued / baseline_s
    print(
        f"\nOutreach dispatch: {queued} SMS to the Twilio stand-in (own process), one worker, "
        f"batches of {settings.OUTREACH_DISPATCH_BATCH}, {width} send threads"
    )
    print(f"  ours (dispatch)        {ours_rate:8,.0f} msg/s   ({ours_s:.2f} s)")
    print(f"  baseline (HTTP only)   {baseline_rate:8,.0f} msg/s   ({baseline_s:.2f} s)")
    print(f"  ratio ours / baseline  {ours_rate / baseline_rate:8.2f}")
    print(
        f"  {TARGET_MESSAGES:,} messages: ours {TARGET_MESSAGES / ours_rate:.0f} s, baseline "
        f"{TARGET_MESSAGES / baseline_rate:.0f} s (target {TARGET_SECONDS} s, "
        f"{TARGET_MESSAGES / TARGET_SECONDS:.0f} msg/s)"
    )
    print(f"  report: {dict(report)}")
    print("\nWhere the worker thread's time went (s, summed over the run):")
    for name in PHASES:
        print(f"  {name:<24}{phases[name]:8.2f}")
    waiting = ours_s - sum(phases.values())
    print(f"  {'waiting for sends':<24}{waiting:8.2f}")
    print(f"  {'= wall clock':<24}{ours_s:8.2f}")


if __name__ == "__main__":
    main()
