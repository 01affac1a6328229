"""Rules: safe expressions over a case's customer and trigger data.

We use CEL (Google's Common Expression Language) through the `common-expression-language`
bindings to the Rust interpreter, after comparing it with `cel-python` (pure Python, about
100x slower per evaluation) and hand-rolled parsers. CEL is side-effect free, cannot loop
forever or touch the host, has no Python `eval`, and is widely known from Kubernetes and
IAM policies, so operations staff can read rules like `data.balance <= 5000.0`.

Rules are compiled once (`rule_compile`) and checked against the workflow's data contract
before they can be saved: a syntax error, a field the contract does not have, or a type
mismatch the sample evaluation exposes is reported with the rule's text and the problem.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import cel
from django.utils import timezone

# What a rule can see. Data values are typed from the contract: decimal fields are CEL
# doubles (write 5000.0, not 5000), integers ints, dates "YYYY-MM-DD" strings, so that
# comparisons between dates and `today` work as text.
CUSTOMER_FIELDS = {
    "flags": ["vulnerable"],
    "timezone": "Europe/London",
    "locale": "en-GB",
    "preferred_channel": "sms",
    "has_phone": True,
    "has_email": True,
    "has_whatsapp": False,
    "consent": {"sms": True, "email": True, "whatsapp": False},
}
CASE_FIELDS = {"segment": "retail"}
ROOTS = ("data", "customer", "case", "today")
FIELD_REF = re.compile(r"\b(data|customer|case)\.([A-Za-z_][A-Za-z0-9_]*)")
SAMPLE_BY_TYPE: dict[str, Any] = {
    "string": "sample",
    "integer": 30,
    "decimal": 1000.0,
    "boolean": True,
    "date": "2026-01-31",
    "datetime": "2026-01-31T09:00:00Z",
    "currency": "GBP",
    "email": "customer@example.com",
    "phone": "+447911123456",
    "choice": None,  # the first choice, filled in by _sample_value
    "list": ["sample"],
}


class RuleError(ValueError):
    """A rule that cannot be used, with a message that names the rule and the problem."""


@dataclass(frozen=True)
class Rule:
    source: str
    program: Any

    def evaluate(self, context: dict[str, Any]) -> Any:
        return self.program.execute(context)


def _sample_value(spec: dict[str, Any]) -> Any:
    if spec["type"] == "choice":
        return spec["choices"][0]
    if spec["type"] == "list" and spec.get("choices"):
        return [spec["choices"][0]]
    return SAMPLE_BY_TYPE[spec["type"]]


def sample_contexts(contract: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Two contexts for checking rules: every field present, and only required ones, so a
    rule that reads an optional field without `has(...)` is caught before it is saved."""
    full = {spec["name"]: _sample_value(spec) for spec in contract}
    required = {
        spec["name"]: _sample_value(spec) for spec in contract if spec.get("required", True)
    }
    base = {"customer": CUSTOMER_FIELDS, "case": CASE_FIELDS, "today": "2026-01-01"}
    return [{**base, "data": full}, {**base, "data": required}]


@lru_cache(maxsize=4096)
def _compile(source: str) -> Any:
    return cel.compile(source)


def rule_compile(
    source: str,
    *,
    contract: list[dict[str, Any]] | None = None,
    expect: type | tuple[type, ...] | None = None,
    label: str = "rule",
) -> Rule:
    """Compile and check a rule. `expect` is the Python type its result must have (bool
    for conditions, float for amounts, …); `contract` enables the field and type checks."""
    source = (source or "").strip()
    if not source:
        raise RuleError(f"{label}: the rule is empty.")
    if len(source) > 2000:
        raise RuleError(f"{label}: the rule is longer than 2,000 characters.")
    try:
        program = _compile(source)
    except (ValueError, RuntimeError) as exc:
        detail = str(exc).split("ERROR: <input>:", 1)[-1].split("\n")[0]
        raise RuleError(f"{label}: syntax error in `{source}`: {detail}") from exc
    rule = Rule(source=source, program=program)
    if contract is not None:
        _check_against_contract(rule, contract, expect, label)
    return rule


def _check_against_contract(
    rule: Rule, contract: list[dict[str, Any]], expect: Any, label: str
) -> None:
    known = {
        "data": {spec["name"] for spec in contract},
        "customer": set(CUSTOMER_FIELDS),
        "case": set(CASE_FIELDS),
    }
    for root, name in FIELD_REF.findall(_strip_strings(rule.source)):
        if name not in known[root]:
            allowed = ", ".join(sorted(known[root]))
            raise RuleError(
                f"{label}: `{rule.source}` uses {root}.{name}, which this workflow does not "
                f"have; {root} has: {allowed}."
            )
    optional = {spec["name"] for spec in contract if not spec.get("required", True)}
    for context in sample_contexts(contract):
        try:
            value = rule.evaluate(context)
        except KeyError as exc:
            name = str(exc).strip("'\"")
            if name in optional:
                raise RuleError(
                    f"{label}: `{rule.source}` reads data.{name}, which triggers may leave "
                    f"out; guard it with has(data.{name})."
                ) from exc
            raise RuleError(f"{label}: `{rule.source}` uses an unknown name {name!r}.") from exc
        except TypeError as exc:
            raise RuleError(
                f"{label}: `{rule.source}` mixes types that do not combine "
                "(decimal fields are doubles: write 5000.0, not 5000; convert with "
                "double(x) or int(x))."
            ) from exc
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            raise RuleError(f"{label}: `{rule.source}` fails on sample data: {exc}") from exc
        if expect is not None and not _has_type(value, expect):
            raise RuleError(
                f"{label}: `{rule.source}` gives {type(value).__name__} on sample data; "
                f"it must give {_type_name(expect)}."
            )


def _strip_strings(source: str) -> str:
    """The rule without its string literals, so "data.x" inside quotes is not a field."""
    return re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'', '""', source)


def _has_type(value: Any, expect: Any) -> bool:
    if expect is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expect is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expect == list[int]:
        return isinstance(value, list) and all(
            isinstance(x, int) and not isinstance(x, bool) for x in value
        )
    if expect == list[str]:
        return isinstance(value, list) and all(isinstance(x, str) for x in value)
    return isinstance(value, expect)


def _type_name(expect: Any) -> str:
    names = {
        bool: "true or false",
        float: "a number",
        int: "a whole number",
        str: "text",
        list[int]: "a list of whole numbers",
        list[str]: "a list of text",
    }
    return names.get(expect, str(expect))


def rule_scope(context: dict[str, Any]) -> Any:
    """The context converted to CEL values once. Passing a plain dict to each rule converts
    it again on every call, which was ~90% of an evaluation (bench/rules.py)."""
    return cel.Context(context)


def rule_context(*, case: Any, today: dt.date | None = None) -> dict[str, Any]:
    """The values a rule sees for one case, typed as the sample contexts are."""
    customer = case.customer
    types = {spec["name"]: spec["type"] for spec in case.workflow.contract}
    data: dict[str, Any] = {}
    for name, value in case.data.items():
        data[name] = float(value) if types.get(name) == "decimal" else value
    return {
        "data": data,
        "customer": {
            "flags": list(customer.flags),
            "timezone": customer.timezone,
            "locale": customer.locale,
            "preferred_channel": customer.preferred_channel,
            "has_phone": bool(customer.phone),
            "has_email": bool(customer.email),
            "has_whatsapp": bool(customer.whatsapp),
            "consent": {ch: customer.has_consent(ch) for ch in ("sms", "email", "whatsapp")},
        },
        "case": {"segment": case.segment},
        "today": (today or customer_today(customer.timezone)).isoformat(),
    }


def customer_today(zone: str) -> dt.date:
    """Bounds like "within 30 days" count from the customer's own calendar day."""
    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        tz = dt.UTC
    return timezone.now().astimezone(tz).date()
