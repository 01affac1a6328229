"""Scale-out benchmark: one worker cluster against two, on one PostgreSQL and one Redis.

    .venv/bin/python bench/scaleout.py [--triggers 300] [--keep]

Three runs, each on a fresh database (closeloop_bench_scaleout, dropped first and after,
unless --keep), a fresh Twilio stand-in (tests/standins/twilio.py) and a fresh demo core
(`python -m democore`, 20 ms of latency per request, as a core system on a LAN might add):

1. one cluster: two web processes (gunicorn, 2 workers each), one `manage.py qcluster`
   (Q_BROKER=redis, Q_WORKERS=2);
2. two clusters: the same with a second qcluster;
3. two clusters, one SIGKILLed (its whole process group) once a third of the outcomes are
   confirmed; the writeback sweep's next run is brought forward to when its claims expire.

Each run: --triggers promise_to_pay triggers POSTed to the batch API (batches of 50 dealt to
both web processes), each case prepared and sent its first SMS by the clusters; then each
customer verifies and promises to pay (`outcome_submit`, from a thread here) and the clusters
write each outcome back to the core and read it back. The steps are tests/scaleout.py's, the
same as tests/test_scaleout.py's. Printed: seconds and rates for outreach (trigger pushed →
SMS sent) and writeback (first submission → last confirmation), and the tally: SMS received,
duplicates, outcomes written back, duplicates; the run stops if any count is off.

A benchmark, not a test: pytest never collects it and it asserts nothing about timings.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import (  # noqa: E402  (the repository root must be importable first)
    database_drop,
    database_recreate,
    database_url,
    server_environment,
)

BENCH_DB = "closeloop_bench_scaleout"
LEASE_SECONDS = 5
CORE_LATENCY_MS = 20


def run_prepare(db_url: str) -> str:
    """A fresh database, migrated, with the promise_to_pay workflow, its sequence and an
    API key; returns the key."""
    from django.core.management import call_command
    from django.db import connections

    from cases.services import api_client_create
    from channels.sequences import sequences_install_shipped
    from policies.services import WORKFLOWS_DIR, workflow_install, workflow_spec_read

    connections.close_all()
    database_recreate(BENCH_DB)
    call_command("migrate", verbosity=0)
    workflow_install(spec=workflow_spec_read(WORKFLOWS_DIR / "promise_to_pay.yaml"))
    sequences_install_shipped()
    _, raw_key = api_client_create(name="bench")
    return raw_key


def run_once(*, clusters: int, kill: bool, triggers: int, logs: Path) -> dict:
    from django.db import connection
    from django.utils import timezone
    from django_q.models import Schedule

    from democore.testing import DemoCore
    from tests import scaleout
    from tests.standins.twilio import TwilioStandIn
    from tests.workers import cluster_kill, running_web, running_worker

    raw_key = run_prepare(os.environ["DATABASE_URL"])
    bodies = scaleout.trigger_bodies(triggers, f"bench-{uuid.uuid4().hex[:6]}")
    figures: dict = {"clusters": clusters, "kill": kill}
    with ExitStack() as stack:
        sms = stack.enter_context(
            TwilioStandIn(account_sid=scaleout.TWILIO_SID, auth_token=scaleout.TWILIO_TOKEN)
        )
        core = stack.enter_context(
            DemoCore.start_process(
                db_path=logs / f"democore-{clusters}-{kill}.sqlite3", token=scaleout.CORE_TOKEN
            )
        )
        core.faults(latency_ms=CORE_LATENCY_MS)
        env = {
            **scaleout.cluster_env(twilio_url=sms.url, core_url=core.url),
            "WRITEBACK_LEASE_SECONDS": str(LEASE_SECONDS),
        }
        webs = [
            stack.enter_context(running_web(log=logs / f"web-{n}.log", **env)) for n in range(2)
        ]
        workers = [
            stack.enter_context(running_worker(log=logs / f"cluster-{n}.log", **env))
            for n in range(clusters)
        ]
        started = time.perf_counter()
        scaleout.triggers_push(web_urls=webs, raw_key=raw_key, bodies=bodies)
        figures["outreach_s"] = time.perf_counter() - started
        figures["outreach_s"] += scaleout.settle(
            lambda: scaleout.messages_settled(triggers), timeout=600, what="SMS sent"
        )

        submitted: list[int] = []

        def submit_all() -> None:
            try:
                submitted.append(scaleout.outcomes_submit())
            finally:
                connection.close()

        started = time.perf_counter()
        submitting = threading.Thread(target=submit_all)
        submitting.start()
        if kill:
            scaleout.settle(
                lambda: scaleout.outcomes_confirmed() >= triggers // 3,
                timeout=600,
                what="a third confirmed",
            )
            cluster_kill(workers[0])
            figures["confirmed_at_kill"] = scaleout.outcomes_confirmed()
            Schedule.objects.filter(name="writeback_deliver_due").update(
                next_run=timezone.now() + dt.timedelta(seconds=LEASE_SECONDS + 1)
            )
        submitting.join()
        scaleout.settle(
            lambda: scaleout.outcomes_confirmed() == triggers, timeout=600, what="all confirmed"
        )
        figures["writeback_s"] = time.perf_counter() - started
        time.sleep(1)
        figures["tally"] = scaleout.tally(
            sms_received=list(sms.messages), core_stats=core.stats()
        ).as_dict()
    expected = {
        "cases": triggers,
        "sms_received": triggers,
        "sms_duplicates": 0,
        "messages_sent": triggers,
        "outcomes_confirmed": triggers,
        "written_back": triggers,
        "written_back_duplicates": 0,
        "cases_resolved": triggers,
    }
    if figures["tally"] != expected or submitted != [triggers]:
        raise SystemExit(f"Counts are off: {figures['tally']}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--triggers", type=int, default=300)
    parser.add_argument("--keep", action="store_true", help=f"keep {BENCH_DB} afterwards")
    args = parser.parse_args()

    # A stop (SIGTERM) unwinds like Ctrl-C: the web and worker processes are stopped too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))
    db_url = database_url(BENCH_DB)
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
    name = f"closeloop-bench-{uuid.uuid4().hex[:8]}"
    os.environ.update(
        server_environment(db_url),
        Q_BROKER="redis",
        REDIS_URL=redis_url,
        Q_CLUSTER_NAME=name,
        LOG_LEVEL="WARNING",
    )
    # Personal fields are encrypted at rest; a key of this run's own (base64 of 32 bytes).
    os.environ.setdefault(
        "FIELD_ENCRYPTION_KEYS", base64.urlsafe_b64encode(os.urandom(32)).decode()
    )
    database_recreate(BENCH_DB)
    import django

    django.setup()
    results = []
    try:
        # The processes' logs, kept when a run fails.
        logs = Path(tempfile.mkdtemp(prefix="closeloop-scaleout-"))
        print(f"Logs in {logs}", flush=True)
        for clusters, kill in ((1, False), (2, False), (2, True)):
            figures = run_once(clusters=clusters, kill=kill, triggers=args.triggers, logs=logs)
            results.append(figures)
            print(f"  done: {figures}", flush=True)
        shutil.rmtree(logs)
    finally:
        import redis
        from django.db import connections

        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(f"django_q:{name}:*"):
            client.delete(key)
        connections.close_all()
        if not args.keep:
            database_drop(BENCH_DB)

    n = args.triggers
    print(
        f"\nScale-out: {n} triggers, 2 web processes (gunicorn, 2 workers each), Q_BROKER=redis,"
        f" Q_WORKERS=2 per cluster, core latency {CORE_LATENCY_MS} ms"
    )
    print(f"  {'run':<28}{'outreach':>18}{'writeback':>20}   sent/dup  written/dup")
    for figures in results:
        label = f"{figures['clusters']} cluster(s)" + (", one killed" if figures["kill"] else "")
        tally = figures["tally"]
        print(
            f"  {label:<28}"
            f"{n / figures['outreach_s']:7.1f}/s ({figures['outreach_s']:5.1f} s)"
            f"{n / figures['writeback_s']:9.1f}/s ({figures['writeback_s']:5.1f} s)"
            f"   {tally['sms_received']}/{tally['sms_duplicates']}"
            f"     {tally['written_back']}/{tally['written_back_duplicates']}"
        )


if __name__ == "__main__":
    main()
