"""Evidence benchmark: what the timelines' hash chain costs, on PostgreSQL.

    .venv/bin/python bench/evidence.py [--triggers 5000] [--batch 1000] [--rounds 6] [--keep]

It builds its own database (closeloop_bench_evidence, dropped first and after unless --keep),
runs the migrations and installs the promise_to_pay workflow. Then, in-process:

1. ingest: `triggers_ingest` in batches (customers, cases and their first events, written
   with COPY), with the sealer's partial index `caseevent_unsealed` in place and, in
   alternating rounds, dropped: the only work the chain adds to an insert. (Sealing itself
   happens later, in the scheduled job, so no insert path computes or reads a hash.)
2. events: the dispatcher's and the ingest's event write alone (`bulk_copy` of CaseEvents
   for those cases), with and without that index, alternating.
3. seal: `events_seal()` over every event written above (the scheduled job's work): events
   per second.
4. verify: `chains_verify()` over every chain (`evidence verify`): events per second.

A benchmark, not a test: it asserts nothing about timings.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import (
    database_drop,
    database_recreate,
    database_url,
    django_setup,
    project_prepare,
    trigger_make,
)

BENCH_DB = "closeloop_bench_evidence"
INDEX = "caseevent_unsealed"


def index_set(*, present: bool) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        if present:
            cursor.execute(
                f"CREATE INDEX IF NOT EXISTS {INDEX} ON cases_caseevent (case_id, id) "
                "WHERE hash = ''"
            )
        else:
            cursor.execute(f"DROP INDEX IF EXISTS {INDEX}")


def ingest_round(client, run: str, count: int, batch: int) -> float:
    from cases.services import triggers_ingest

    rng = random.Random(run)
    triggers = [trigger_make(n, run, rng) for n in range(count)]
    started = time.perf_counter()
    for start in range(0, count, batch):
        results = triggers_ingest(client=client, raw_triggers=triggers[start : start + batch])
        assert all(result.status == "created" for result in results)
    return time.perf_counter() - started


def events_round(case_ids: list, batch: int) -> float:
    from django.db import transaction
    from django.utils import timezone

    from cases.bulk import bulk_copy
    from cases.models import CaseEvent

    started = time.perf_counter()
    for start in range(0, len(case_ids), batch):
        now = timezone.now()
        events = [
            CaseEvent(
                case_id=case_id,
                kind="message_sent",
                actor="system",
                data={"message": f"{case_id}:step1", "channel": "sms", "purpose": "step"},
                created_at=now,
            )
            for case_id in case_ids[start : start + batch]
        ]
        with transaction.atomic():
            bulk_copy(events)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--triggers", type=int, default=5000, help="per ingest round")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=6, help="rounds with and without")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    args = parser.parse_args()

    database_recreate(BENCH_DB)
    try:
        django_setup(database_url(BENCH_DB))
        project_prepare()
        from cases.evidence import chains_verify, events_seal
        from cases.models import Case, CaseEvent
        from cases.services import api_client_create

        client, _ = api_client_create(name="bench")
        # A warm-up round, so neither side pays for first-use costs.
        ingest_round(client, "warm", args.batch, args.batch)
        timings: dict[str, dict[bool, list[float]]] = {"ingest": {}, "events": {}}
        for round_number in range(args.rounds):
            for present in (True, False) if round_number % 2 == 0 else (False, True):
                index_set(present=present)
                run = f"r{round_number}{'i' if present else 'n'}"
                seconds = ingest_round(client, run, args.triggers, args.batch)
                timings["ingest"].setdefault(present, []).append(seconds)
                ids = list(
                    Case.objects.filter(event_id__startswith=f"{run}-").values_list("pk", flat=True)
                )
                timings["events"].setdefault(present, []).append(events_round(ids, args.batch))
        index_set(present=True)

        # The best round as well as the median: on a shared machine the slow rounds are
        # mostly other processes' time.
        for name, label in (("ingest", "triggers"), ("events", "events")):
            for summary in (statistics.median, min):
                with_index = summary(timings[name][True])
                without = summary(timings[name][False])
                per_second = args.triggers / with_index, args.triggers / without
                print(
                    f"{name} ({summary.__name__} of {args.rounds} rounds of {args.triggers:,}): "
                    f"{per_second[0]:,.0f} {label}/s with the chain's index, "
                    f"{per_second[1]:,.0f} without ({(with_index / without - 1) * 100:+.1f}% time)"
                )

        total = CaseEvent.objects.count()
        started = time.perf_counter()
        sealed = events_seal(settle_seconds=0, budget_seconds=3600)
        seal_seconds = time.perf_counter() - started
        print(f"seal: {sealed:,} events in {seal_seconds:.2f} s, {sealed / seal_seconds:,.0f}/s")
        assert sealed == total

        started = time.perf_counter()
        reports = list(chains_verify())
        verify_seconds = time.perf_counter() - started
        assert all(report.ok for report in reports)
        print(
            f"verify: {len(reports):,} chains, {total:,} events in {verify_seconds:.2f} s, "
            f"{total / verify_seconds:,.0f} events/s"
        )
    finally:
        if not args.keep:
            from django.db import connections

            connections.close_all()
            database_drop(BENCH_DB)


if __name__ == "__main__":
    main()
