"""Writeback benchmark: outcomes posted per second to the demo core, beside raw POSTs.

    .venv/bin/python bench/writeback.py [--outcomes 400] [--postgres URL]

The demo core runs as a subprocess (`python -m democore`) on a free loopback port. This
process is the one worker. For each fault mix (none, then 30% injected failures: 15%
answered 500 before the work, 15% answered 500 after it):

1. ours: N promise_to_pay outcomes submitted through `outcome_submit` (their jobs queued,
   not run), then delivered by `outcomes_deliver_due`, the sweep the scheduled job runs,
   until every outcome is confirmed. Each delivery claims the outcome, POSTs the
   arrangement with its Idempotency-Key, reads it back and compares, records its attempt
   events and resolves the case. Backoff is zero, so a failed attempt is retried on the
   next pass. Wall clock from the first claim to the last confirmation.
2. raw: the same N arrangement bodies POSTed with `config.http.http_request` to the same
   core, each retried with its key until it answers 201: no database, no read-back.

It prints both rates, their ratio, and the core's duplicate count, which must be 0.
The database is a fresh SQLite file in a temporary folder, or with --postgres a database
`closeloop_bench_writeback` on that server (dropped first and after).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TOKEN = "bench-core-token"
MIXES = {
    "0% failures": {},
    "30% failures": {"error_rate": 0.15, "error_after_commit_rate": 0.15},
}


def server_url(postgres: str) -> str:
    parts = urlsplit(postgres)
    return f"{parts.scheme}://{parts.netloc}"


def database_prepare(postgres: str | None) -> None:
    if not postgres:
        os.environ.pop("DATABASE_URL", None)
        return
    import psycopg

    server = server_url(postgres)
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS closeloop_bench_writeback")
        conn.execute("CREATE DATABASE closeloop_bench_writeback")
    os.environ["DATABASE_URL"] = f"{server}/closeloop_bench_writeback"


def database_drop(postgres: str | None) -> None:
    if postgres:
        import psycopg
        from django.db import connections

        connections.close_all()
        server = server_url(postgres)
        with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS closeloop_bench_writeback")


def cases_verified(count: int, run: str) -> list:
    from cases.services import api_client_create, case_transition, triggers_ingest

    client, _ = api_client_create(name=f"bench-{run}")
    triggers = [
        {
            "workflow": "promise_to_pay",
            "event_id": f"{run}-{n}",
            "customer": {"external_id": f"{run}-cust-{n}", "name": "Bench Customer"},
            "data": {
                "account_reference": f"ACC-{run}-{n:06d}",
                "balance": "420.50",
                "currency": "GBP",
                "due_date": "2026-11-01",
                "days_past_due": 22,
            },
        }
        for n in range(count)
    ]
    results = triggers_ingest(client=client, raw_triggers=triggers)
    cases = []
    for result in results:
        case = result.case_id
        for transition in ("start_outreach", "engage", "verify"):
            case = case_transition(case=case, transition=transition)
        cases.append(case)
    return cases


def ours(core, count: int, run: str) -> tuple[float, int]:
    from writeback.models import Outcome
    from writeback.outbox import outcomes_deliver_due
    from writeback.services import outcome_submit

    cases = cases_verified(count, run)
    ids = [
        outcome_submit(
            case=case, action="promise_to_pay", values={"amount": "120.00", "date": "2026-12-01"}
        ).pk
        for case in cases
    ]
    passes = 0
    started = time.perf_counter()
    while Outcome.objects.filter(pk__in=ids).exclude(state="confirmed").exists():
        outcomes_deliver_due(limit=count, budget_seconds=3600)
        passes += 1
        if passes > 200:
            raise SystemExit("outcomes did not all confirm; see the admin")
    elapsed = time.perf_counter() - started
    return count / elapsed, passes


def raw(core, count: int, run: str) -> tuple[float, int]:
    from config.http import http_request

    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    bodies = [
        json.dumps(
            {
                "type": "promise",
                "amount": "120.00",
                "currency": "GBP",
                "date": "2026-12-01",
                "external_id": f"raw-{run}-{n}",
            }
        ).encode()
        for n in range(count)
    ]
    tries = 0
    started = time.perf_counter()
    for n, body in enumerate(bodies):
        key = {"Idempotency-Key": f"raw-{run}-{n}"}
        while True:
            tries += 1
            answer = http_request(
                "POST",
                f"{core.url}/accounts/ACC-raw-{run}-{n:06d}/arrangements",
                headers={**headers, **key},
                content=body,
            )
            if answer.status == 201:
                break
    elapsed = time.perf_counter() - started
    return count / elapsed, tries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--outcomes", type=int, default=400)
    parser.add_argument("--postgres", help="e.g. postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench-writeback-"))
    from democore.testing import DemoCore

    core = DemoCore.start_process(
        db_path=scratch / "democore.sqlite3",
        token=TOKEN,
        seed=args.seed,
        log_path=scratch / "democore.log",
    )
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "SECRET_KEY": "bench-only",
            "DATA_DIR": str(scratch),
            "CORE_API_URL": core.url,
            "CORE_API_TOKEN": TOKEN,
            "LOG_LEVEL": "WARNING",
        }
    )
    try:
        database_prepare(args.postgres)
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connection

        from policies.services import WORKFLOWS_DIR, workflow_install, workflow_spec_read
        from writeback.models import WritebackTarget

        call_command("migrate", verbosity=0)
        workflow_install(spec=workflow_spec_read(WORKFLOWS_DIR / "promise_to_pay.yaml"))
        WritebackTarget.objects.filter(key="core_rest").update(
            backoff_base_seconds=0, backoff_cap_seconds=0, max_attempts=100, breaker_threshold=1000
        )
        print(
            f"Writeback to the demo core on {core.url}, {args.outcomes} outcomes per run, "
            f"database {connection.vendor}, one worker process."
        )
        print(
            f"{'mix':<14} {'ours/s':>8} {'raw/s':>8} {'ratio':>6} {'passes':>6} "
            f"{'raw tries':>9} {'records':>7} {'dupes':>5}"
        )
        for number, (mix, faults) in enumerate(MIXES.items()):
            core.reset()
            core.faults(seed=args.seed, **faults)
            ours_rate, passes = ours(core, args.outcomes, f"r{number}")
            ours_stats = core.stats()
            raw_rate, tries = raw(core, args.outcomes, f"r{number}")
            stats = core.stats()
            print(
                f"{mix:<14} {ours_rate:>8.1f} {raw_rate:>8.1f} {ours_rate / raw_rate:>6.2f} "
                f"{passes:>6} {tries:>9} {ours_stats['arrangements']:>7} "
                f"{stats['duplicates']:>5}"
            )
            if ours_stats["arrangements"] != args.outcomes or stats["duplicates"]:
                raise SystemExit("writeback was not exactly once")
    finally:
        core.stop()
        if "django" in sys.modules:
            database_drop(args.postgres)


if __name__ == "__main__":
    main()
