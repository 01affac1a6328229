"""Trigger-ingest benchmark: the batch API's throughput on PostgreSQL, beside raw COPY.

    .venv/bin/python bench/ingest.py [--triggers 20000] [--batch 1000] [--concurrency 2]

It builds its own database (closeloop_bench, dropped first and after, unless --keep), runs
the migrations, installs the promise_to_pay workflow, creates an API key and starts a real
gunicorn server on a free loopback port. Then:

1. ours: N distinct triggers, POSTed in batches to /api/v1/triggers/batch/ from
   `concurrency` client threads, each with one keep-alive http.client connection; every
   item must come back `created`. Wall clock from the first request sent to the last
   answer read. gunicorn's default sync worker closes the connection after each answer and
   http.client reconnects; that is chosen over the gthread worker, which keeps connections
   alive but may take both clients' connections into one worker while the other idles.
2. COPY: the very customer, case and case-event rows that step 1 wrote, read back into
   Python tuples beforehand, then written with psycopg 3 COPY into LIKE copies of the real
   tables (same columns, defaults, indexes, unique and foreign-key constraints), in one
   transaction. Wall clock from BEGIN to COMMIT.
3. Where the time goes: one 1,000-trigger batch in-process, phase by phase, beside the same
   batch through Django's request handler and through gunicorn.

A benchmark, not a test: pytest never collects it (bench/ is outside testpaths) and it
asserts nothing about timings.
"""

from __future__ import annotations

import argparse
import gc
import http.client
import io
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB = "closeloop_bench"
DEFAULT_SERVER = "postgres://postgres@127.0.0.1:5432/postgres"
# Rows of the ingest's three tables, copied by the baseline in this order (foreign keys).
COPIED_TABLES = ("cases_customer", "cases_case", "cases_caseevent")

FIRST_NAMES = ("Ada", "Grace", "Alan", "Mary", "Tim", "Katherine", "Edsger", "Barbara", "Linus")
LAST_NAMES = ("Lovelace", "Hopper", "Turing", "Somerville", "Berners-Lee", "Johnson", "Liskov")
TOWNS = (
    ("London", "SW1A 1AA", "Europe/London", "GBP"),
    ("Manchester", "M1 1AE", "Europe/London", "GBP"),
    ("Dublin", "D02 X285", "Europe/Dublin", "EUR"),
    ("Leeds", "LS1 4DY", "Europe/London", "GBP"),
)


# --- the database ---------------------------------------------------------------------------


def database_url(name: str) -> str:
    """DATABASE_URL names the server (and credentials); the database is always ours."""
    parts = urlsplit(os.environ.get("DATABASE_URL") or DEFAULT_SERVER)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


def database_recreate(name: str) -> None:
    import psycopg

    with psycopg.connect(database_url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def database_drop(name: str) -> None:
    import psycopg

    with psycopg.connect(database_url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def server_environment(db_url: str) -> dict[str, str]:
    """The production settings shape, with only what a loopback benchmark must change."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "SECRET_KEY": "bench",
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "0",
        "DATABASE_URL": db_url,
        "LOG_LEVEL": "WARNING",
        # One key pushes the whole load: the per-key budget would be what gets measured.
        "API_RATE_LIMIT": "off",
    }


def django_setup(db_url: str) -> None:
    os.environ.update(server_environment(db_url))
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def project_prepare() -> None:
    """Migrate and install the shipped promise_to_pay workflow."""
    from django.core.management import call_command

    from policies.services import WORKFLOWS_DIR, workflow_install, workflow_spec_read

    call_command("migrate", verbosity=0)
    workflow_install(spec=workflow_spec_read(WORKFLOWS_DIR / "promise_to_pay.yaml"))


# --- triggers -------------------------------------------------------------------------------


def trigger_make(n: int, run: str, rng: random.Random) -> dict[str, Any]:
    """A promise_to_pay trigger shaped like tests/factories.trigger_body, with values that
    vary per customer: a new customer, case and event for every n."""
    town, postcode, zone, currency = rng.choice(TOWNS)
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    born = date(1950, 1, 1) + timedelta(days=rng.randrange(365 * 50))
    due = date(2026, 9, 1) + timedelta(days=rng.randrange(90))
    return {
        "workflow": "promise_to_pay",
        "event_id": f"{run}-evt-{n:08d}",
        "customer": {
            "external_id": f"{run}-cust-{n:08d}",
            "name": f"{first} {last}",
            # 07400 is a UK mobile range: libphonenumber takes any six digits after it.
            "phone": f"+447400{rng.randrange(10**6):06d}",
            "email": f"{first.lower()}.{last.lower()}.{n}@example.com",
            "timezone": zone,
            "locale": "en-GB",
            "address": {
                "lines": [f"{rng.randrange(1, 300)} High Street"],
                "city": town,
                "postcode": postcode,
                "country": "gb",
            },
            "consent": {"sms": True, "email": rng.random() < 0.8},
            "known_facts": {
                "date_of_birth": born.isoformat(),
                "postcode": postcode,
                "account_last4": f"{rng.randrange(10**4):04d}",
            },
        },
        "segment": rng.choice(("retail", "retail", "small_business")),
        "data": {
            "account_reference": f"ACC-{n:08d}",
            "balance": f"{rng.randrange(2000, 500000) / 100:.2f}",
            "currency": currency,
            "due_date": due.isoformat(),
            "days_past_due": rng.randrange(1, 120),
        },
    }


def batches_make(run: str, count: int, size: int, seed: int = 7) -> list[bytes]:
    """Request bodies, encoded before any clock starts: the client's JSON work is not ours."""
    rng = random.Random(seed)
    triggers = [trigger_make(n, run, rng) for n in range(count)]
    return [
        json.dumps({"triggers": triggers[i : i + size]}).encode() for i in range(0, count, size)
    ]


# --- the server -----------------------------------------------------------------------------


def port_free() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def gunicorn(db_url: str, workers: int, worker_class: str) -> Iterator[int]:
    port = port_free()
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "config.wsgi:application",
        f"--workers={workers}",
        f"--worker-class={worker_class}",
        f"--bind=127.0.0.1:{port}",
        "--timeout=120",
        "--log-level=warning",
    ]
    process = subprocess.Popen(command, cwd=ROOT, env=server_environment(db_url))
    try:
        deadline = time.monotonic() + 30
        while True:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            try:
                # The web side only: no worker runs beside this server.
                conn.request("GET", "/healthz?checks=database")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            finally:
                conn.close()
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("gunicorn did not start; see its output above.")
            time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


def batches_post(
    port: int, raw_key: str, bodies: list[bytes], concurrency: int
) -> tuple[float, list[bytes]]:
    """POST every body from `concurrency` threads, each on one http.client connection
    (kept alive where the server allows, reopened where it closes it).
    Returns (wall-clock seconds, raw answers in body order); answers are parsed later."""
    answers: list[bytes] = [b""] * len(bodies)
    pending = iter(range(len(bodies)))
    lock = threading.Lock()
    failures: list[str] = []
    headers = {"Authorization": f"Bearer {raw_key}", "Content-Type": "application/json"}
    start_gate = threading.Barrier(concurrency + 1)

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        start_gate.wait()
        try:
            while True:
                with lock:
                    index = next(pending, None)
                if index is None:
                    break
                conn.request("POST", "/api/v1/triggers/batch/", bodies[index], headers)
                response = conn.getresponse()
                answers[index] = response.read()
                if response.status != 200:
                    failures.append(f"HTTP {response.status}: {answers[index][:300]!r}")
        except OSError as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    start_gate.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{len(failures)} batch(es) failed; first: {failures[0]}")
    return elapsed, answers


def answers_check(answers: list[bytes], expected: int) -> None:
    statuses: dict[str, int] = {}
    for answer in answers:
        for item in json.loads(answer)["results"]:
            statuses[item["status"]] = statuses.get(item["status"], 0) + 1
    if statuses != {"created": expected}:
        raise SystemExit(f"Expected {expected} created, got {statuses}")


# --- the COPY baseline ----------------------------------------------------------------------


def _copy_tables_create(cursor) -> None:
    """LIKE copies of the ingest's tables, with their foreign keys pointing at each other."""
    for table in COPIED_TABLES:
        cursor.execute(f"DROP TABLE IF EXISTS copy_{table} CASCADE")
        cursor.execute(f"CREATE TABLE copy_{table} (LIKE {table} INCLUDING ALL)")
    for table in COPIED_TABLES:
        cursor.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = %s::regclass AND contype = 'f'",
            [table],
        )
        for name, definition in cursor.fetchall():
            for target in COPIED_TABLES:
                definition = definition.replace(
                    f"REFERENCES {target}(", f"REFERENCES copy_{target}("
                )
            cursor.execute(f"ALTER TABLE copy_{table} ADD CONSTRAINT copy_{name} {definition}")


def copy_rows_read(cursor, client_id: int) -> dict[str, tuple[list[str], list[tuple]]]:
    """The rows our ingest wrote for one client, as Python values (JSON as text)."""
    where = {
        "cases_customer": "api_client_id = %s",
        "cases_case": "api_client_id = %s",
        "cases_caseevent": "case_id IN (SELECT id FROM cases_case WHERE api_client_id = %s)",
    }
    out = {}
    for table in COPIED_TABLES:
        cursor.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            [table],
        )
        columns = cursor.fetchall()
        select = ", ".join(f"{name}::text" if kind == "jsonb" else name for name, kind in columns)
        cursor.execute(f"SELECT {select} FROM {table} WHERE {where[table]}", [client_id])
        out[table] = ([name for name, _ in columns], cursor.fetchall())
    return out


def copy_baseline(db_url: str, client_id: int) -> tuple[float, int]:
    """Seconds to COPY the rows of `client_id`'s triggers into the LIKE copies."""
    import psycopg

    with psycopg.connect(db_url) as conn:
        with conn.cursor() as cursor:
            _copy_tables_create(cursor)
            rows = copy_rows_read(cursor, client_id)
        conn.commit()
        started = time.perf_counter()
        with conn.transaction(), conn.cursor() as cursor:
            for table in COPIED_TABLES:
                columns, values = rows[table]
                statement = f"COPY copy_{table} ({', '.join(columns)}) FROM STDIN"
                with cursor.copy(statement) as copy:
                    for row in values:
                        copy.write_row(row)
        elapsed = time.perf_counter() - started
        with conn.cursor() as cursor:
            for table in COPIED_TABLES:
                cursor.execute(f"DROP TABLE copy_{table} CASCADE")
        conn.commit()
    return elapsed, len(rows["cases_case"][1])


# --- where the time goes --------------------------------------------------------------------

PHASES = {
    "parse + validate": "_triggers_validate",
    "customer upsert": "_customers_upsert",
    "case insert": "_cases_insert",
    "event insert": "_events_insert",
}


@contextmanager
def phases_timed() -> Iterator[dict[str, list[float]]]:
    """Wrap the ingest's batch-level steps (module functions in cases.services) in timers."""
    from cases import services

    timings: dict[str, list[float]] = {label: [] for label in PHASES}
    originals = {name: getattr(services, name) for name in PHASES.values()}

    def timed(label: str, function: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                timings[label].append(time.perf_counter() - started)

        return wrapper

    for label, name in PHASES.items():
        setattr(services, name, timed(label, originals[name]))
    try:
        yield timings
    finally:
        for name, function in originals.items():
            setattr(services, name, function)


def _wsgi_post(handler, path: str, body: bytes, raw_key: str) -> tuple[int, bytes]:
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "HTTP_HOST": "127.0.0.1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_AUTHORIZATION": f"Bearer {raw_key}",
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }
    status: list[str] = []
    chunks = handler(environ, lambda s, h, exc_info=None: status.append(s))
    content = b"".join(chunks)
    return int(status[0].split()[0]), content


def breakdown(port: int, rounds: int) -> dict[str, float]:
    """Median milliseconds per 1,000-trigger batch: the service's phases in-process, the
    whole request in-process through Django's WSGI handler, and the whole request over
    HTTP to gunicorn. The three are interleaved round by round, so that background work
    in PostgreSQL (autovacuum, checkpoints) falls on all of them alike."""
    from django.core.handlers.wsgi import WSGIHandler

    from cases.services import api_client_create, triggers_ingest

    client, raw_key = api_client_create(name="bench-breakdown")
    handler = WSGIHandler()
    service_ms: list[float] = []
    wsgi_ms: list[float] = []
    http_ms: list[float] = []
    with phases_timed() as timings:
        for round_ in range(rounds):
            triggers = json.loads(batches_make(f"svc{round_}", 1000, 1000, seed=100 + round_)[0])
            gc.collect()
            started = time.perf_counter()
            results = triggers_ingest(client=client, raw_triggers=triggers["triggers"])
            service_ms.append((time.perf_counter() - started) * 1000)
            if any(result.status != "created" for result in results):
                raise SystemExit("In-process ingest did not create every case.")

            body = batches_make(f"wsgi{round_}", 1000, 1000, seed=200 + round_)[0]
            gc.collect()
            started = time.perf_counter()
            status, content = _wsgi_post(handler, "/api/v1/triggers/batch/", body, raw_key)
            wsgi_ms.append((time.perf_counter() - started) * 1000)
            if status != 200:
                raise SystemExit(f"In-process request failed: {status} {content[:300]!r}")
            answers_check([content], 1000)

            bodies = batches_make(f"http{round_}", 1000, 1000, seed=300 + round_)
            elapsed, answers = batches_post(port, raw_key, bodies, concurrency=1)
            answers_check(answers, 1000)
            http_ms.append(elapsed * 1000)
    # The WSGI rounds ran through the same wrapped phases; only the service rounds count.
    figures = {label: statistics.median(values[0::2]) * 1000 for label, values in timings.items()}
    figures["service total"] = statistics.median(service_ms)
    figures["request in-process"] = statistics.median(wsgi_ms)
    figures["request over HTTP"] = statistics.median(http_ms)
    return figures


# --- the run --------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--triggers", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument(
        "--worker-class",
        default="sync",
        help="gunicorn worker class (sync: see docs/performance.md for why not gthread)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="batches per breakdown figure")
    parser.add_argument("--keep", action="store_true", help="keep the closeloop_bench database")
    args = parser.parse_args()

    db_url = database_url(BENCH_DB)
    database_recreate(BENCH_DB)
    try:
        django_setup(db_url)
        project_prepare()
        from django.db import connection

        from cases.services import api_client_create

        # Each step has its own key, so the COPY baseline copies exactly the measured rows.
        _, warmup_key = api_client_create(name="bench-warmup")
        client, raw_key = api_client_create(name="bench")

        connection.close()  # the server processes hold their own connections
        bodies = batches_make("run", args.triggers, args.batch)
        warmup = batches_make("warm", 4 * args.workers * 100, 100, seed=1)
        with gunicorn(db_url, args.workers, args.worker_class) as port:
            _, answers = batches_post(port, warmup_key, warmup, concurrency=args.workers)
            answers_check(answers, len(warmup) * 100)
            ours_s, answers = batches_post(port, raw_key, bodies, args.concurrency)
            answers_check(answers, args.triggers)
            figures = breakdown(port, args.rounds)
        copy_s, copied = copy_baseline(db_url, client.pk)
    finally:
        if not args.keep:
            from django.db import connections

            connections.close_all()
            database_drop(BENCH_DB)

    ours_rate = args.triggers / ours_s
    copy_rate = copied / copy_s
    print(
        f"\nTrigger ingest: {args.triggers} triggers, batches of {args.batch}, "
        f"{args.concurrency} client thread(s), gunicorn {args.workers} {args.worker_class} "
        "worker(s)"
    )
    print(f"  ours (batch API)   {ours_rate:9,.0f} triggers/s   ({ours_s:.2f} s)")
    print(
        f"  raw psycopg COPY   {copy_rate:9,.0f} triggers/s   ({copy_s:.2f} s for {copied} "
        "customers + cases + events)"
    )
    print(f"  ratio ours / COPY  {ours_rate / copy_rate:9.2f}")
    print(f"\nOne 1,000-trigger batch, median of {args.rounds} (ms):")
    service_phases = sum(figures[label] for label in PHASES)
    for label in PHASES:
        print(f"  {label:<24}{figures[label]:8.1f}")
    print(f"  {'other service work':<24}{figures['service total'] - service_phases:8.1f}")
    print(f"  {'= service, in-process':<24}{figures['service total']:8.1f}")
    request_overhead = figures["request in-process"] - figures["service total"]
    server_overhead = figures["request over HTTP"] - figures["request in-process"]
    print(f"  {'Django/DRF + JSON':<24}{request_overhead:8.1f}")
    print(f"  {'gunicorn + socket':<24}{server_overhead:8.1f}")
    print(f"  {'= request over HTTP':<24}{figures['request over HTTP']:8.1f}")


if __name__ == "__main__":
    main()
