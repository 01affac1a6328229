"""Metrics benchmark: the dashboard's and the API's queries over 1,000,000 cases on
PostgreSQL, each beside a bare `SELECT count(*)` over the same rows in the same run.

    .venv/bin/python bench/metrics.py [--cases 1000000] [--rounds 5] [--keep] [--reuse]

It builds its own database (closeloop_bench_metrics, dropped first and after unless
--keep), runs the migrations and installs two shipped workflows. Then:

1. seed: customers, cases, case events and writeback outcomes written with psycopg COPY,
   shaped like real journeys (resolved in the message, some after a writeback retry;
   abandoned after two messages; escalated on an exception and completed by an agent;
   closed by a rule; still open), triggered over the last 365 days;
2. rebuild: `case_facts_rebuild()`, the same code as `manage.py metrics_rebuild`, reads
   every timeline and writes one fact row per case, then adds the facts up into daily
   rollups (`rollups_rebuild()`, timed on its own); then ANALYZE;
3. times each query the dashboard and the API run (median of --rounds after one warm-up
   run), each beside `SELECT count(*)` over the fact rows of the same scope, and the
   events export (NDJSON, streamed through the view) beside a bare fetch of the rows.

--reuse takes a database kept by an earlier --keep run as it is (no seed, no fact
rebuild): it applies the metrics migrations, rebuilds the rollups and measures.

A benchmark, not a test: it asserts nothing about timings.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import database_drop, database_recreate, database_url, django_setup

BENCH_DB = "closeloop_bench_metrics"
WORKFLOWS = ("promise_to_pay", "failed_payment")
CHANNELS = ("sms", "sms", "sms", "email", "whatsapp")
SEGMENTS = ("retail", "retail", "small_business", "vip")
EXCEPTIONS = ("identity_failed", "payment_declined", "customer_requested_help", "ineligible")


def uuid7_at(moment: dt.datetime, rng: random.Random) -> uuid.UUID:
    """A uuid7 whose time is the case's trigger time, as if it had arrived then."""
    unix_ms = int(moment.timestamp() * 1000)
    value = (unix_ms & (2**48 - 1)) << 80 | rng.getrandbits(80)
    value = (value & ~(0xF << 76)) | (0x7 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    return uuid.UUID(int=value)


class Journey:
    """Events of one case; returns the case's columns that follow from them."""

    def __init__(self, rng: random.Random, start: dt.datetime) -> None:
        self.rng, self.at, self.events = rng, start, []

    def add(self, kind: str, minutes: float, actor: str = "system", **data) -> dt.datetime:
        self.at += dt.timedelta(minutes=minutes)
        self.events.append((kind, actor, json.dumps(data), self.at))
        return self.at

    def sent(self, step: int, minutes: float) -> dt.datetime:
        channel = self.rng.choice(CHANNELS)
        variant = self.rng.choice("AB")
        return self.add(
            "message_sent",
            minutes,
            message=uuid.UUID(int=self.rng.getrandbits(128)).hex,
            channel=channel,
            purpose="step",
            step=step,
            variant=variant,
            template=f"{channel}-{step}-{variant}",
            provider="outbox",
        )


def journey_make(rng: random.Random, start: dt.datetime) -> tuple[Journey, dict, tuple | None]:
    """(journey, case columns, outcome (action, values, attempts) or None)."""
    j = Journey(rng, start)
    j.add("triggered", 0, "api")
    roll = rng.random()
    case: dict = {"state": "engaged", "outcome": "", "closed_at": None}
    if roll < 0.05:
        case.update(state="closed_by_rule", outcome="closed_by_rule")
        case["closed_at"] = j.add("closed_by_rule", 1, reason="insolvency", rule="no_insolvency")
        return j, case, None
    j.add("outreach_started", 1)
    case["first_sent_at"] = j.sent(1, rng.uniform(5, 600))
    if rng.random() < 0.7:
        j.add("message_status", 1, status="delivered")
    if roll < 0.25:
        j.sent(2, 1440)
        case.update(state="abandoned", outcome="abandoned")
        case["closed_at"] = j.add("abandoned", 2880, reason="no_response", last_step=2)
        return j, case, None
    case["opened_at"] = j.add("engaged", rng.uniform(1, 1440), "customer")
    if roll < 0.30:
        return j, case, None
    if roll < 0.40:
        kind = rng.choice(EXCEPTIONS)
        j.add("escalated", 3, exception=kind, reason=kind, priority=50)
        j.add("agent_claimed", rng.uniform(10, 600), "agent")
        if rng.random() < 0.1:
            j.add("agent_correction", 3, "agent")
        case["submitted_at"] = j.add("completed_by_agent", rng.uniform(4, 30), "agent")
        j.add("writeback_attempt", 1, attempt=1, result="ok", step="send", latency_ms=40)
        case["written_back_at"] = case["closed_at"] = j.add("writeback_confirmed", 0.1)
        case.update(state="resolved", outcome="completed_by_agent")
        return j, case, ("payment_plan", {"total": f"{rng.randrange(200, 3000)}.00"}, 1)
    if roll < 0.45:
        j.add("exception_retry", 2, exception="payment_declined", attempt=1)
    case["verified_at"] = j.add("verified", rng.uniform(0.5, 5), "customer")
    j.add("option_chosen", rng.uniform(0.2, 3), "customer")
    case["submitted_at"] = j.add("action_submitted", rng.uniform(0.5, 5), "customer")
    attempts = 2 if rng.random() < 0.08 else 1
    for attempt in range(1, attempts + 1):
        result = "ok" if attempt == attempts else "retry"
        j.add("writeback_attempt", 0.5 if attempt == 1 else 30, attempt=attempt, result=result)
    if rng.random() < 0.02:
        j.add("writeback_failed", 0.1)
        case.update(state="writeback_failed", outcome="writeback_failed")
        return j, case, None
    case["written_back_at"] = case["closed_at"] = j.add("writeback_confirmed", 0.1)
    case.update(state="resolved", outcome="resolved_in_message")
    action = rng.choice(("promise_to_pay", "pay_now"))
    return j, case, (action, {"amount": f"{rng.randrange(20, 900)}.00"}, attempts)


def seed(db_url: str, count: int, seed_value: int = 11) -> tuple[float, int]:
    """COPY `count` cases with their customers, events and outcomes. (seconds, events)"""
    import psycopg

    from cases.models import ApiClient
    from policies.models import Workflow
    from privacy.crypto import text_encrypt
    from writeback.models import WritebackTarget

    client_id = ApiClient.objects.get(name="bench").pk
    workflow_ids = [Workflow.objects.get(key=key, status="active").pk for key in WORKFLOWS]
    target_id = WritebackTarget.objects.get(key="core_rest").pk
    rng = random.Random(seed_value)
    now = dt.datetime.now(dt.UTC)
    customers = max(1, count // 10)
    # Addresses and payloads are encrypted at rest (privacy/fields.py); one token serves
    # every row's empty value.
    empty_encrypted = text_encrypt("{}")
    started = time.perf_counter()
    events_written = 0
    with psycopg.connect(db_url) as conn, conn.cursor() as cursor:
        with cursor.copy(
            "COPY cases_customer (api_client_id, external_id, name, phone, email, whatsapp, "
            "address, locale, timezone, preferred_channel, consent, flags, known_fact_salt, "
            "date_of_birth_hash, postcode_hash, account_last4_hash, created_at, updated_at) "
            "FROM STDIN"
        ) as copy:
            for n in range(customers):
                copy.write_row(
                    (
                        client_id,
                        f"bench-{n}",
                        "",
                        "",
                        "",
                        "",
                        empty_encrypted,
                        "en",
                        "UTC",
                        "",
                        "{}",
                        "[]",
                        "",
                        "",
                        "",
                        "",
                        now,
                        now,
                    )
                )
        cursor.execute("SELECT min(id) FROM cases_customer WHERE api_client_id = %s", [client_id])
        first_customer = cursor.fetchone()[0]
        batch = 50_000
        for offset in range(0, count, batch):
            cases, events, outcomes = [], [], []
            for n in range(offset, min(offset + batch, count)):
                start = now - dt.timedelta(seconds=rng.uniform(0, 365 * 86400))
                journey, fields, outcome = journey_make(rng, start)
                case_id = uuid7_at(start, rng)
                cases.append(
                    (
                        case_id,
                        workflow_ids[0] if rng.random() < 0.8 else workflow_ids[1],
                        first_customer + n % customers,
                        client_id,
                        f"bench-evt-{n}",
                        "0" * 64,
                        empty_encrypted,
                        '{"currency": "GBP"}',
                        rng.choice(SEGMENTS),
                        fields["state"],
                        fields["outcome"],
                        start,
                        fields.get("first_sent_at"),
                        fields.get("opened_at"),
                        fields.get("verified_at"),
                        fields.get("submitted_at"),
                        fields.get("written_back_at"),
                        fields["closed_at"],
                        start + dt.timedelta(days=7),
                        now,
                    )
                )
                events.extend((case_id, *event) for event in journey.events)
                if outcome:
                    action, values, attempts = outcome
                    outcomes.append(
                        (
                            uuid7_at(start, rng),
                            case_id,
                            target_id,
                            action,
                            json.dumps(values),
                            attempts,
                            start,
                            fields["written_back_at"],
                            now,
                        )
                    )
            with cursor.copy(
                "COPY cases_case (id, workflow_id, customer_id, api_client_id, event_id, "
                "body_fingerprint, payload, data, segment, state, outcome, triggered_at, "
                "first_sent_at, opened_at, verified_at, submitted_at, written_back_at, "
                "closed_at, expires_at, updated_at, priority, escalation_reason) FROM STDIN"
            ) as copy:
                for row in cases:
                    copy.write_row((*row, 0, ""))
            with cursor.copy(
                "COPY cases_caseevent (case_id, kind, actor, data, created_at) FROM STDIN"
            ) as copy:
                for row in events:
                    copy.write_row(row)
            with cursor.copy(
                "COPY writeback_outcome (id, case_id, target_id, action, values, attempts, "
                "created_at, confirmed_at, updated_at, evidence, documents, actor, "
                "submission_key, state, next_attempt_at, claim_token, last_error) FROM STDIN"
            ) as copy:
                for row in outcomes:
                    copy.write_row(
                        (*row, "{}", "[]", "customer", "", "confirmed", row[6], "", "{}")
                    )
            conn.commit()
            events_written += len(events)
            print(f"  seeded {offset + len(cases):,} cases", file=sys.stderr, flush=True)
    return time.perf_counter() - started, events_written


def timed(function: Callable[[], object], rounds: int) -> float:
    """Median milliseconds of `rounds` calls, after one warm-up call."""
    function()
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        function()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def count_rows(scope) -> Callable[[], object]:
    """The baseline: a bare count(*) over the fact rows of the scope."""
    from django.db import connection

    def run():
        where, params = ["TRUE"], []
        if scope.workflow_key:
            where.append("workflow_key = %s")
            params.append(scope.workflow_key)
        if scope.since:
            where.append("triggered_at >= %s")
            params.append(scope.since)
        if scope.until:
            where.append("triggered_at < %s")
            params.append(scope.until)
        if scope.api_client_id is not None:
            where.append("api_client_id = %s")
            params.append(scope.api_client_id)
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT count(*) FROM metrics_casefact WHERE {' AND '.join(where)}", params
            )
            return cursor.fetchone()

    return run


def measure(rounds: int, raw_key: str, client_id: int) -> list[tuple[str, int, float, float]]:
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from metrics.selectors import (
        Scope,
        metrics_cohorts,
        metrics_funnel,
        metrics_readiness,
        metrics_summary,
    )

    now = timezone.now()
    month = Scope(workflow_key="promise_to_pay", since=now - dt.timedelta(days=30), until=now)
    month_all = Scope(since=now - dt.timedelta(days=30), until=now)
    year = Scope(since=now - dt.timedelta(days=366), until=now)
    ready = Scope(since=now - dt.timedelta(days=90), until=now)
    http = Client(headers={"host": "127.0.0.1", "authorization": f"Bearer {raw_key}"})
    api_scope = Scope(
        workflow_key="promise_to_pay",
        since=now - dt.timedelta(days=30),
        until=now,
        api_client_id=client_id,
    )

    def api_metrics():
        answer = http.get("/api/v1/metrics/", {"workflow": "promise_to_pay"})
        assert answer.status_code == 200, answer.content[:300]

    def dashboard_page():
        return (
            metrics_summary(scope=month, by="channel"),
            metrics_funnel(scope=month),
            metrics_cohorts(scope=month),
            metrics_readiness(now=now, workflow_key="promise_to_pay"),
        )

    cases_in = {}
    for name, scope in (("month", month), ("month_all", month_all), ("year", year)):
        cases_in[name] = count_rows(scope)()[0]
    checks = [
        ("summary, 1 workflow, 30 days", month, lambda: metrics_summary(scope=month)),
        (
            "summary by channel, 30 days",
            month,
            lambda: metrics_summary(scope=month, by="channel"),
        ),
        ("funnel, 30 days", month, lambda: metrics_funnel(scope=month)),
        ("cohorts, 30 days", month, lambda: metrics_cohorts(scope=month)),
        (
            "readiness (90 days read)",
            ready,
            lambda: metrics_readiness(now=now, workflow_key="promise_to_pay"),
        ),
        ("dashboard: all of the above", month, dashboard_page),
        ("summary, all workflows, 30 days", month_all, lambda: metrics_summary(scope=month_all)),
        ("summary, all workflows, 365 days", year, lambda: metrics_summary(scope=year)),
        ("summary by segment, 365 days", year, lambda: metrics_summary(scope=year, by="segment")),
        ("funnel, 365 days", year, lambda: metrics_funnel(scope=year)),
        ("cohorts, 365 days", year, lambda: metrics_cohorts(scope=year)),
        ("API GET /api/v1/metrics/ (30 days)", api_scope, api_metrics),
    ]
    results = []
    for label, scope, function in checks:
        ours = timed(function, rounds)
        base = timed(count_rows(scope), rounds)
        rows = count_rows(scope)()[0]
        results.append((label, rows, ours, base))
        print(f"  {label}: {ours:.1f} ms", file=sys.stderr, flush=True)
    del connection
    return results


def export_rate(raw_key: str, client_id: int) -> tuple[int, float, float]:
    """Events of the last 7 days streamed as NDJSON through the view, against a bare fetch
    of the same rows with psycopg. (rows, ours seconds, bare seconds)"""
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    since = timezone.now() - dt.timedelta(days=7)
    http = Client(headers={"host": "127.0.0.1", "authorization": f"Bearer {raw_key}"})
    started = time.perf_counter()
    answer = http.get("/api/v1/events/", {"since": since.isoformat().replace("+00:00", "Z")})
    lines = sum(chunk.count(b"\n") for chunk in answer.streaming_content)
    ours = time.perf_counter() - started
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT e.id, e.case_id, w.key, e.kind, e.actor, e.created_at, e.data "
            "FROM cases_caseevent e JOIN cases_case c ON c.id = e.case_id "
            "JOIN policies_workflow w ON w.id = c.workflow_id "
            "WHERE c.api_client_id = %s AND e.created_at >= %s ORDER BY e.id",
            [client_id, since],
        )
        bare_rows = len(cursor.fetchall())
    bare = time.perf_counter() - started
    assert bare_rows == lines, (bare_rows, lines)
    return lines, ours, bare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument(
        "--reuse", action="store_true", help="measure a database kept by an earlier --keep run"
    )
    args = parser.parse_args()

    db_url = database_url(BENCH_DB)
    if not args.reuse:
        database_recreate(BENCH_DB)
    seed_s = rebuild_s = None
    try:
        django_setup(db_url)
        from django.core.management import call_command
        from django.db import connection

        from cases.models import ApiClient, CaseEvent
        from cases.services import API_KEY_PREFIX, _key_hash, api_client_create
        from metrics.models import CaseFact
        from metrics.rollups import rollups_rebuild
        from metrics.services import case_facts_rebuild
        from policies.services import WORKFLOWS_DIR, workflow_install, workflow_spec_read

        if args.reuse:
            call_command("migrate", "metrics", verbosity=0)
            # The kept database's key was shown once and never stored: issue a new one.
            client = ApiClient.objects.get(name="bench")
            raw_key = API_KEY_PREFIX + uuid.uuid4().hex
            ApiClient.objects.filter(pk=client.pk).update(
                key_prefix=raw_key[:10], key_hash=_key_hash(raw_key)
            )
            events = CaseEvent.objects.count()
            facts = CaseFact.objects.count()
        else:
            call_command("migrate", verbosity=0)
            for key in WORKFLOWS:
                workflow_install(spec=workflow_spec_read(WORKFLOWS_DIR / f"{key}.yaml"))
            client, raw_key = api_client_create(name="bench")
            seed_s, events = seed(db_url, args.cases)
            started = time.perf_counter()
            facts = case_facts_rebuild(
                progress=lambda n: (
                    n % 100_000 == 0
                    and print(f"  rebuilt {n:,} facts", file=sys.stderr, flush=True)
                )
            )
            rebuild_s = time.perf_counter() - started
        started = time.perf_counter()
        rollup_rows = rollups_rebuild()
        rollup_s = time.perf_counter() - started
        with connection.cursor() as cursor:
            for table in (
                "metrics_casefact",
                "metrics_exceptionfact",
                "metrics_dailyrollup",
                "metrics_exceptionrollup",
                "cases_caseevent",
                "cases_case",
            ):
                cursor.execute(f"ANALYZE {table}")
        results = measure(args.rounds, raw_key, client.pk)
        exported, export_s, bare_s = export_rate(raw_key, client.pk)
        with connection.cursor() as cursor:
            cursor.execute("SELECT version()")
            version = cursor.fetchone()[0].split(" on ")[0]
    finally:
        if not args.keep:
            from django.db import connections

            connections.close_all()
            database_drop(BENCH_DB)

    print(f"\nMetrics on {version}: {facts:,} cases, {events:,} events")
    if seed_s is not None:
        print(f"  seed (COPY)            {seed_s:8.1f} s")
        print(f"  rebuild facts          {rebuild_s:8.1f} s  ({facts / rebuild_s:,.0f} cases/s)")
    print(f"  rebuild rollups        {rollup_s:8.1f} s  ({rollup_rows:,} daily rows)")
    print(f"\nQuery, median of {args.rounds} (ms)            rows   ours  count(*)  ratio")
    for label, rows, ours, base in results:
        print(f"  {label:<38}{rows:>9,} {ours:7.1f} {base:8.1f} {ours / base:7.1f}")
    print(
        f"\nEvents export, last 7 days, NDJSON: {exported:,} events in {export_s:.2f} s "
        f"({exported / export_s:,.0f}/s); bare fetch {bare_s:.2f} s "
        f"({exported / bare_s:,.0f}/s); ratio {export_s / bare_s:.1f}"
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
