"""Mini-app benchmark: the summary page under concurrent load, beside a bare Django view.

    .venv/bin/python bench/miniapp.py [--cases 1500] [--seconds 10] [--connections 8]
                                      [--workers 2] [--worker-class sync] [--with-limits]

The load generator is wrk (`apt-get install -y wrk`), with a Lua script that gives every
request a different link token, so every request resolves a new link, loads its case and
records the open (the first open of a case also moves it to `engaged`). wrk's own latency
histogram gives the p95.

It builds its own PostgreSQL database (closeloop_bench_miniapp, dropped first and after,
unless --keep), runs the migrations, installs the promise_to_pay workflow, creates --cases
cases through the trigger ingest, prepares their offers and issues one link per case. Then it
starts gunicorn (production settings, BENCH_BARE_VIEW=1, rate limits off: every request
comes from 127.0.0.1 and would spend one address's budget) and, on the same server in the
same run:

1. bare: GET /bench/bare, a view returning "ok" through the full middleware stack;
2. summary, first open: GET /m/<token>/, a new token per request: each one records the
   engagement (the case moves to `engaged`, an event is written);
3. summary, reopened: the same tokens again within the hour, as customers coming back to
   their page: resolved and rendered, nothing written;
4. with --with-limits, the summary page again on a second server with the rate limits on
   (budgets raised so nothing is refused): the cost of counting in the database cache.

Each is warmed up for 2 seconds first. Printed: requests/s, p50 and p95 latency, and the
ratio summary / bare (the aim is at least 0.5). A benchmark, not a test: it asserts nothing
about timings, but stops if any answer is not 2xx.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import (  # noqa: E402  (the repository root must be importable first)
    batches_make,
    database_drop,
    database_recreate,
    database_url,
    django_setup,
    gunicorn,
)

BENCH_DB = "closeloop_bench_miniapp"

# One token per request: each wrk thread walks its own stride of the list from BENCH_START,
# so no two requests share a token until the list wraps (main() reports if it did). With
# BENCH_PATH set (the bare view) every request asks for that path instead.
WRK_SCRIPT = """
local tokens = {}
for line in io.lines(os.getenv("BENCH_TOKENS")) do tokens[#tokens + 1] = line end
local made = 0

function setup(thread)
  thread:set("offset", made)
  made = made + 1
end

function init(args)
  stride = tonumber(os.getenv("BENCH_THREADS"))
  index = tonumber(os.getenv("BENCH_START")) + offset
  fixed = os.getenv("BENCH_PATH")
end

function request()
  if fixed ~= "" then return wrk.format("GET", fixed) end
  index = index + stride
  return wrk.format("GET", "/m/" .. tokens[(index % #tokens) + 1] .. "/")
end

function done(summary, latency, requests)
  io.write(string.format(
    "BENCH {\\"requests\\": %d, \\"seconds\\": %f, \\"p50_ms\\": %f, \\"p95_ms\\": %f, "
    .. "\\"bad\\": %d, \\"socket_errors\\": %d, \\"tokens\\": %d}\\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000,
    latency:percentile(95) / 1000, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.timeout,
    #tokens))
end
"""


def cases_with_links(count: int) -> list[str]:
    """`count` prepared promise_to_pay cases, one fresh link each; returns the raw tokens."""
    from django.core.management import call_command

    from cases.models import Case
    from cases.services import api_client_create, triggers_ingest
    from channels.sequences import sequences_install_shipped
    from miniapp.services import links_issue
    from policies.services import (
        WORKFLOWS_DIR,
        cases_prepare,
        workflow_install,
        workflow_spec_read,
    )

    call_command("migrate", verbosity=0)
    # Production settings serve static files from the collected manifest.
    call_command("collectstatic", interactive=False, verbosity=0)
    workflow_install(spec=workflow_spec_read(WORKFLOWS_DIR / "promise_to_pay.yaml"))
    sequences_install_shipped()
    client, _ = api_client_create(name="bench")
    ids: list = []
    for body in batches_make("page", count, 1000):
        results = triggers_ingest(client=client, raw_triggers=json.loads(body)["triggers"])
        if any(result.status != "created" for result in results):
            raise SystemExit("The ingest did not create every case.")
        ids += [result.case_id for result in results]
    started = time.perf_counter()
    prepared = cases_prepare(case_ids=ids)
    print(f"prepared {count} offers in {time.perf_counter() - started:.1f} s", flush=True)
    if prepared.get("ready", 0) != count:
        raise SystemExit(f"Not every case was prepared: {dict(prepared)}")
    cases = list(Case.objects.filter(pk__in=ids).order_by("pk"))
    return [issued.token for issued in links_issue(cases=cases)]


def wrk_run(url: str, script: Path, tokens: Path, args, seconds: int, start: int) -> dict:
    """One wrk run; `start` is the first token index, so runs never reuse each other's."""
    threads = min(2, args.connections)
    command = [
        "wrk",
        f"--threads={threads}",
        f"--connections={args.connections}",
        f"--duration={seconds}s",
        "--timeout=10s",
        f"--script={script}",
        url,
    ]
    env = {
        **os.environ,
        "BENCH_TOKENS": str(tokens),
        "BENCH_THREADS": str(threads),
        "BENCH_START": str(start),
        "BENCH_PATH": "" if url.endswith("/m/") else urlsplit(url).path,
    }
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    match = re.search(r"^BENCH (\{.*\})$", output, re.M)
    if match is None:
        raise SystemExit(f"wrk gave no figures:\n{output}")
    figures = json.loads(match.group(1))
    if figures["bad"] or figures["socket_errors"]:
        raise SystemExit(f"{url}: {figures['bad']} non-2xx answers; wrk said:\n{output}")
    figures["rps"] = figures["requests"] / figures["seconds"]
    return figures


class Tokens:
    """The token list and how far the runs so far have used it."""

    def __init__(self, path: Path):
        self.path = path
        self.used = 0


def measure(port: int, path: str, script: Path, tokens: Tokens, args) -> dict:
    url = f"http://127.0.0.1:{port}{path}"
    figures = {}
    for seconds in (2, args.seconds):  # 2 s of warm-up: imports, connections, caches
        figures = wrk_run(url, script, tokens.path, args, seconds, start=tokens.used)
        if path == "/m/":
            tokens.used += figures["requests"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=1500, help="cases, one link (token) each")
    parser.add_argument("--seconds", type=int, default=10, help="measured seconds per page")
    parser.add_argument("--connections", type=int, default=8, help="concurrent connections")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--worker-class", default="sync", help="gunicorn worker class")
    parser.add_argument(
        "--with-limits", action="store_true", help="also measure with rate limits counting"
    )
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench/miniapp.py needs wrk: apt-get install -y wrk")

    os.environ.update(
        {
            "BENCH_BARE_VIEW": "1",
            "MINIAPP_RATE_LIMITS": "0",
            # Past these the test run would refuse itself; only counting is measured.
            "MINIAPP_RATE_PAGES_PER_IP": str(10**9),
            "MINIAPP_RATE_PAGES_PER_LINK": str(10**9),
        }
    )
    db_url = database_url(BENCH_DB)
    database_recreate(BENCH_DB)
    rows = []
    try:
        django_setup(db_url)
        tokens = cases_with_links(args.cases)
        from django.db import connections

        connections.close_all()  # the server processes hold their own connections
        with tempfile.TemporaryDirectory() as folder:
            token_file = Tokens(Path(folder, "tokens.txt"))
            token_file.path.write_text("\n".join(tokens) + "\n")
            script = Path(folder, "tokens.lua")
            script.write_text(WRK_SCRIPT)
            with gunicorn(db_url, args.workers, args.worker_class) as port:
                rows.append(("bare view", measure(port, "/bench/bare", script, token_file, args)))
                summary = measure(port, "/m/", script, token_file, args)
                rows.append(("summary, first open", summary))
                # The same links again within the hour: a customer coming back to the page
                # (reloads and later visits are not written again within the hour).
                token_file.used = 0
                again = measure(port, "/m/", script, token_file, args)
                rows.append(("summary, reopened", again))
            if args.with_limits:
                os.environ["MINIAPP_RATE_LIMITS"] = "1"
                with gunicorn(db_url, args.workers, args.worker_class) as port:
                    limited = measure(port, "/m/", script, token_file, args)
                    rows.append(("summary, limits on", limited))
    finally:
        if not args.keep:
            from django.db import connections

            connections.close_all()
            database_drop(BENCH_DB)

    used = token_file.used
    print(
        f"\nMini-app summary page: {args.cases} links, {args.connections} connections, "
        f"gunicorn {args.workers} {args.worker_class} worker(s), wrk {args.seconds} s each"
    )
    print(f"  {'':<20}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}")
    for name, figures in rows:
        print(f"  {name:<20}{figures['rps']:9,.0f}{figures['p50_ms']:9.1f}{figures['p95_ms']:9.1f}")
    bare = rows[0][1]
    for name, figures in rows[1:3]:
        print(f"  ratio {name} / bare {figures['rps'] / bare['rps']:6.2f}   (aim: at least 0.50)")
    if used > args.cases:
        print(f"  note: {used} page requests for {args.cases} tokens; later ones reopened links")


if __name__ == "__main__":
    main()
