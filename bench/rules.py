"""Rule-evaluation benchmark: offers computed per second for the four shipped workflows,
beside the same rules hand-written in plain Python.

    .venv/bin/python bench/rules.py [--cases 2000] [--rounds 5]

Without DATABASE_URL it runs on a fresh SQLite file in a temporary folder; with one, on
its own PostgreSQL database (closeloop_bench_rules on that server, dropped first and
after). It migrates, installs the shipped workflows and creates `--cases` cases per
workflow through `triggers_ingest`, with varied data (balances, days past due, optional
minimums, flags, document lists). Then, per workflow, with every blueprint compiled once:

1. offer_compute: the whole offer for every case (rule context, every eligibility and
   bound rule through the CEL interpreter, the bounds turned into dates, amounts and
   plans). This is the figure the product lives with.
2. CEL rules: only the rules (eligibility, bounds, fork rules) over prebuilt contexts.
3. Python: the same rules hand-written as Python lambdas, over the same contexts, as
   many evaluations as step 2. Before timing, every lambda is checked to give what its
   CEL rule gives for every case, so the baseline computes the same thing.

Each figure is the median of `--rounds` passes. A benchmark, not a test: pytest never
collects it and it asserts nothing about timings.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB = "closeloop_bench_rules"
TODAY = dt.date(2026, 3, 10)
WORKFLOW_KEYS = ("promise_to_pay", "failed_payment", "compliance_refresh", "address_update")
DOCUMENTS = (
    "proof_of_identity",
    "proof_of_address",
    "source_of_funds",
    "tax_residency_self_certification",
)
# Customer flags, each on about this share of triggers, so that fork rules fire sometimes.
FLAG_SHARES = (
    ("vulnerable", 0.03),
    ("deceased", 0.01),
    ("complaint_open", 0.02),
    ("insolvency", 0.01),
)

Context = dict[str, Any]

# Every rule in the shipped files, keyed by its exact text, as a plain-Python twin.
PYTHON_RULES: dict[str, Callable[[Context], Any]] = {
    "true": lambda c: True,
    # promise_to_pay
    "data.days_past_due < 90 && data.balance <= 5000.0": lambda c: (
        c["data"]["days_past_due"] < 90 and c["data"]["balance"] <= 5000.0
    ),
    "data.days_past_due < 30 ? 30 : 14": lambda c: 30 if c["data"]["days_past_due"] < 30 else 14,
    "has(data.minimum_payment) ? data.minimum_payment : data.balance * 0.25": lambda c: (
        c["data"]["minimum_payment"]
        if "minimum_payment" in c["data"]
        else c["data"]["balance"] * 0.25
    ),
    "data.balance": lambda c: c["data"]["balance"],
    "data.balance >= 200.0 && data.days_past_due < 120": lambda c: (
        c["data"]["balance"] >= 200.0 and c["data"]["days_past_due"] < 120
    ),
    "[3, 6, 12]": lambda c: [3, 6, 12],
    "25.0": lambda c: 25.0,
    "data.balance > 2000.0 ? 12 : 6": lambda c: 12 if c["data"]["balance"] > 2000.0 else 6,
    '["I have already paid", "The amount is wrong", "I do not recognise this debt", '
    '"Something else"]': lambda c: [
        "I have already paid",
        "The amount is wrong",
        "I do not recognise this debt",
        "Something else",
    ],
    '["09:00-12:00", "12:00-17:00", "17:00-20:00"]': lambda c: [
        "09:00-12:00",
        "12:00-17:00",
        "17:00-20:00",
    ],
    "7": lambda c: 7,
    '"vulnerable" in customer.flags || "deceased" in customer.flags': lambda c: (
        "vulnerable" in c["customer"]["flags"] or "deceased" in c["customer"]["flags"]
    ),
    '"complaint_open" in customer.flags || "insolvency" in customer.flags': lambda c: (
        "complaint_open" in c["customer"]["flags"] or "insolvency" in c["customer"]["flags"]
    ),
    "data.balance > 10000.0": lambda c: c["data"]["balance"] > 10000.0,
    "data.balance > 2500.0 ? 70 : 40": lambda c: 70 if c["data"]["balance"] > 2500.0 else 40,
    "data.days_past_due >= 60 ? 60 : 30": lambda c: 60 if c["data"]["days_past_due"] >= 60 else 30,
    # failed_payment
    "data.amount <= 2000.0": lambda c: c["data"]["amount"] <= 2000.0,
    "data.amount": lambda c: c["data"]["amount"],
    '["09:00-12:00", "12:00-17:00"]': lambda c: ["09:00-12:00", "12:00-17:00"],
    '"insolvency" in customer.flags': lambda c: "insolvency" in c["customer"]["flags"],
    # compliance_refresh
    "size(data.documents_required) > 0": lambda c: len(c["data"]["documents_required"]) > 0,
    "data.documents_required": lambda c: c["data"]["documents_required"],
    "size(data.documents_required) + 2": lambda c: len(c["data"]["documents_required"]) + 2,
    "10": lambda c: 10,
    '"I confirm that the information and documents I have provided are true, complete and '
    'current."': lambda c: (
        "I confirm that the information and documents I have provided are true, complete and "
        "current."
    ),
    '"vulnerable" in customer.flags': lambda c: "vulnerable" in c["customer"]["flags"],
    "data.refresh_due_date < today": lambda c: c["data"]["refresh_due_date"] < c["today"],
    # address_update
    '["address", "phone", "email"]': lambda c: ["address", "phone", "email"],
    '"I confirm that the contact details I have given are correct."': lambda c: (
        "I confirm that the contact details I have given are correct."
    ),
}


# --- set-up ---------------------------------------------------------------------------------


def django_setup() -> str:
    """Production settings on a throwaway database; returns a description of it."""
    sys.path.insert(0, str(ROOT))
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "SECRET_KEY": "bench",
            "DEBUG": "0",  # DEBUG would keep every query in memory
            "LOG_LEVEL": "WARNING",
        }
    )
    if os.environ.get("DATABASE_URL"):
        from ingest import database_recreate, database_url

        database_recreate(BENCH_DB)
        os.environ["DATABASE_URL"] = database_url(BENCH_DB)
        where = f"PostgreSQL ({BENCH_DB})"
    else:
        os.environ["DATA_DIR"] = tempfile.mkdtemp(prefix="closeloop-bench-rules-")
        where = f"SQLite ({os.environ['DATA_DIR']})"
    import django

    django.setup()
    return where


def trigger_make(key: str, n: int, rng: random.Random) -> dict[str, Any]:
    flags = [flag for flag, share in FLAG_SHARES if rng.random() < share]
    if key == "promise_to_pay":
        data = {
            "balance": f"{rng.randrange(5_000, 1_200_000) / 100:.2f}",
            "currency": "GBP",
            "due_date": (TODAY - dt.timedelta(days=rng.randrange(150))).isoformat(),
            "days_past_due": rng.randrange(0, 150),
        }
        if rng.random() < 0.3:
            data["minimum_payment"] = f"{rng.randrange(1_000, 50_000) / 100:.2f}"
    elif key == "failed_payment":
        data = {
            "amount": f"{rng.randrange(500, 300_000) / 100:.2f}",
            "currency": "GBP",
            "failed_at": "2026-03-01T09:00:00Z",
            "failure_reason": rng.choice(
                ["insufficient_funds", "card_expired", "card_declined", "account_closed", "other"]
            ),
        }
    elif key == "compliance_refresh":
        data = {
            "refresh_due_date": (TODAY + dt.timedelta(days=rng.randrange(-20, 90))).isoformat(),
            "documents_required": rng.sample(DOCUMENTS, rng.randrange(1, len(DOCUMENTS) + 1)),
        }
    else:
        data = {"returned_at": "2026-03-01", "address_on_file": f"{n} High Street, Leeds"}
    return {
        "workflow": key,
        "event_id": f"{key}-{n:06d}",
        "customer": {
            "external_id": f"{key}-cust-{n:06d}",
            "name": "Bench Customer",
            "phone": f"+447400{rng.randrange(10**6):06d}",
            "timezone": rng.choice(["Europe/London", "Europe/Dublin", "America/New_York"]),
            "consent": {"sms": True},
            "flags": flags,
        },
        "segment": rng.choice(["retail", "small_business"]),
        "data": {"account_reference": f"ACC-{n:06d}", **data},
    }


def cases_create(count: int) -> None:
    from cases.services import api_client_create, triggers_ingest

    client, _ = api_client_create(name="bench-rules")
    rng = random.Random(7)
    for key in WORKFLOW_KEYS:
        triggers = [trigger_make(key, n, rng) for n in range(count)]
        for start in range(0, count, 500):
            results = triggers_ingest(client=client, raw_triggers=triggers[start : start + 500])
            bad = [r for r in results if r.status != "created"]
            if bad:
                raise SystemExit(f"{key}: trigger refused: {bad[0]}")


# --- measuring ------------------------------------------------------------------------------


def rules_of(blueprint) -> list:
    """Every compiled rule a case's preparation may evaluate, in blueprint order."""
    rules = []
    for action in blueprint.actions:
        rules.append(action.eligible)
        rules.extend(action.params.values())
    rules.extend(fork.when for fork in blueprint.forks)
    rules.extend(route.priority_rule for route in blueprint.routes.values() if route.priority_rule)
    return rules


def median_seconds(run: Callable[[], None], rounds: int) -> float:
    run()  # warm-up: caches, branch predictors, the allocator
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(key: str, rounds: int) -> dict[str, Any]:
    import cel

    from cases.models import Case
    from policies.blueprint import blueprint_for
    from policies.models import Workflow
    from policies.offers import offer_compute
    from policies.rules import rule_context

    workflow = Workflow.objects.get(key=key, status="active")
    blueprint = blueprint_for(workflow)
    cases = list(Case.objects.filter(workflow=workflow).select_related("customer", "workflow"))
    rules = rules_of(blueprint)
    missing = [rule.source for rule in rules if rule.source not in PYTHON_RULES]
    if missing:
        raise SystemExit(f"{key}: no Python twin for: {missing}")
    twins = [PYTHON_RULES[rule.source] for rule in rules]
    contexts = [rule_context(case=case, today=TODAY) for case in cases]
    for context in contexts:  # every variant must compute what offer_compute's CEL does
        shared = cel.Context(context)
        for rule, twin in zip(rules, twins, strict=True):
            expected = rule.evaluate(context)
            for variant, value in (("Python", twin(context)), ("Context", rule.evaluate(shared))):
                if value != expected or type(value) is not type(expected):
                    raise SystemExit(
                        f"{key}: `{rule.source}` gives {expected!r} in CEL, {value!r} with "
                        f"{variant}"
                    )

    def offers() -> None:
        for case in cases:
            offer_compute(case=case, blueprint=blueprint, today=TODAY)

    def cel_rules() -> None:
        for context in contexts:
            for rule in rules:
                rule.evaluate(context)

    def cel_rules_shared_context() -> None:
        for context in contexts:
            shared = cel.Context(context)
            for rule in rules:
                rule.evaluate(shared)

    def python_rules() -> None:
        for context in contexts:
            for twin in twins:
                twin(context)

    return {
        "key": key,
        "cases": len(cases),
        "rules": len(rules),
        "offer_s": median_seconds(offers, rounds),
        "cel_s": median_seconds(cel_rules, rounds),
        "shared_s": median_seconds(cel_rules_shared_context, rounds),
        "python_s": median_seconds(python_rules, rounds),
    }


def report(results: list[dict[str, Any]], where: str) -> None:
    print(f"\nRule evaluation on {where}; median of the rounds; rates are cases per second.")
    print(
        "offer_compute: whole offers. CEL: every rule of the workflow, a dict context per call "
        "(as offer_compute does).\nCEL+Context: the same, one cel.Context per case. Python: "
        "the same rules hand-written.\n"
    )
    header = (
        f"{'workflow':<20}{'cases':>6}{'rules':>6}{'offer_compute':>15}{'CEL':>10}"
        f"{'CEL+Context':>13}{'Python':>12}{'Python/offer':>14}{'Python/CEL':>12}"
    )
    print(header)
    print("-" * len(header))
    total = {"cases": 0, "offer_s": 0.0, "cel_s": 0.0, "shared_s": 0.0, "python_s": 0.0}
    for row in results:
        for name in total:
            total[name] += row[name]
        print(line(row["key"], row["cases"], str(row["rules"]), row))
    print("-" * len(header))
    print(line("all four", total["cases"], "", total))
    evaluations = sum(r["cases"] * r["rules"] for r in results)
    labels = (("CEL", "cel_s"), ("CEL+Context", "shared_s"), ("Python", "python_s"))
    print(
        "\nOne rule evaluation: "
        + ", ".join(f"{label} {total[name] / evaluations * 1e6:.2f} µs" for label, name in labels)
        + " (CEL+Context includes building the Context once per case)."
    )


def line(name: str, cases: int, rules: str, row: dict[str, Any]) -> str:
    offers, cel_rate, shared, python = (
        cases / row[k] for k in ("offer_s", "cel_s", "shared_s", "python_s")
    )
    return (
        f"{name:<20}{cases:>6}{rules:>6}{offers:>15,.0f}{cel_rate:>10,.0f}{shared:>13,.0f}"
        f"{python:>12,.0f}{python / offers:>13,.0f}x{python / cel_rate:>11,.0f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=2000, help="cases per workflow")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    where = django_setup()
    try:
        from django.core.management import call_command

        from policies.services import workflows_install_shipped

        started = time.perf_counter()
        call_command("migrate", verbosity=0)
        workflows_install_shipped()
        cases_create(args.cases)
        print(
            f"Set up {len(WORKFLOW_KEYS)} workflows and {len(WORKFLOW_KEYS) * args.cases} cases "
            f"in {time.perf_counter() - started:.1f} s."
        )
        report([measure(key, args.rounds) for key in WORKFLOW_KEYS], where)
    finally:
        if os.environ.get("DATABASE_URL"):
            from django.db import connections
            from ingest import database_drop

            connections.close_all()
            database_drop(BENCH_DB)


if __name__ == "__main__":
    main()
