"""The operations mapping of a writeback target: per catalogue action, the operations that
post an outcome to the target, with placeholders filled from the case and the outcome.

    {"promise_to_pay": [
        {"name": "arrangement", "method": "POST",
         "path": "/accounts/{data.account_reference}/arrangements",
         "body": {"type": "promise", "amount": "{values.amount}", "date": "{values.date}"},
         "read_back": "/accounts/{data.account_reference}/arrangements/{reference}"}]}

A string that is exactly one placeholder keeps the value's type (a list stays a list);
`{values.phone?}` is optional: when the value is missing, the body key is left out.
Checked once when a target is saved (`target_problems`), so a typo is a form error, not a
failed writeback at two in the morning.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from policies.catalogue import ACTIONS

PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_.]*)(\?)?\}")
NAME = re.compile(r"^[a-z][a-z0-9_]{0,60}$")
ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,99}$")
METHODS = {"POST", "PUT", "PATCH", "DELETE"}
OPERATION_KEYS = {
    "name",
    "method",
    "path",
    "body",
    "multipart",
    "each",
    "when",
    "unless",
    "reference",
    "read_back",
    "expect",
    "file",
}

# What each action's `values` may hold (see writeback.services.outcome_submit).
ACTION_VALUES: dict[str, set[str]] = {
    "pay_now": {"amount", "currency", "provider_reference", "card_last4"},
    "update_payment_method": {"amount", "currency", "provider_reference", "card_last4"},
    "promise_to_pay": {"amount", "date", "currency"},
    "payment_plan": {"instalments", "instalment_amount", "schedule", "total_amount", "currency"},
    "dispute": {"reason", "note"},
    "request_callback": {"date", "window"},
    "update_contact_details": {"phone", "email", "address", "unchanged"},
    "attestation": {"typed_name", "statement"},
    "upload_documents": set(),
}
DOCUMENT_FIELDS = {"name", "content_type", "size", "sha256", "path", "document_type"}
CASE_FIELDS = {"id", "workflow", "segment", "submitted_at"}
OUTCOME_FIELDS = {"id", "action", "created_at", "actor"}
CUSTOMER_FIELDS = {"external_id"}  # never contact data: the outcome's values carry changes


class MappingError(ValueError):
    """A placeholder that the outcome cannot fill (a permanent failure for that outcome)."""


# --- HTTP status lists ------------------------------------------------------------------------


def status_set(spec: str) -> set[int]:
    """'200-299,409' → the set of statuses. Raises ValueError naming the bad part."""
    statuses: set[int] = set()
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        low, _, high = part.partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError as exc:
            raise ValueError(f"{part!r} is not a status or a range like 500-599") from exc
        if not (100 <= first <= last <= 599):
            raise ValueError(f"{part!r} is outside 100–599 or reversed")
        statuses.update(range(first, last + 1))
    return statuses


# --- rendering --------------------------------------------------------------------------------


_MISSING = object()


def _lookup(context: dict[str, Any], dotted: str) -> Any:
    value: Any = context
    for part in dotted.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return _MISSING
    return value


def render(template: Any, context: dict[str, Any], *, url: bool = False) -> Any:
    """Fill placeholders in a string, dict or list. Optional placeholders that resolve to
    nothing drop their dict key (see the module docstring)."""
    if isinstance(template, dict):
        rendered = {}
        for key, item in template.items():
            value = render(item, context, url=url)
            if value is not _MISSING:
                rendered[key] = value
        return rendered
    if isinstance(template, list):
        return [
            v for v in (render(item, context, url=url) for item in template) if v is not _MISSING
        ]
    if not isinstance(template, str):
        return template
    whole = PLACEHOLDER.fullmatch(template)
    if whole and not url:
        value = _lookup(context, whole.group(1))
        if value is _MISSING or value is None:
            if whole.group(2):
                return _MISSING
            raise MappingError(f"the outcome has no value for {{{whole.group(1)}}}")
        return value

    def fill(match: re.Match) -> str:
        value = _lookup(context, match.group(1))
        if value is _MISSING or value is None:
            if match.group(2):
                return ""
            raise MappingError(f"the outcome has no value for {{{match.group(1)}}}")
        text = str(value)
        return quote(text, safe="") if url else text

    return PLACEHOLDER.sub(fill, template)


def is_present(context: dict[str, Any], dotted: str) -> bool:
    value = _lookup(context, dotted)
    return value is not _MISSING and value not in (None, "", False, [], {})


# --- operations of one outcome ----------------------------------------------------------------


@dataclass(frozen=True)
class PlannedOperation:
    """One operation an outcome will perform, before any placeholder is filled."""

    key: str
    spec_name: str
    document_index: int | None
    spec: dict[str, Any] = field(repr=False)


def operations_plan(
    *, operations: dict[str, Any], action: str, context: dict[str, Any], documents: list[dict]
) -> list[PlannedOperation]:
    """The operations for one outcome: `when`/`unless` decided now, `each: documents`
    expanded to one operation per document."""
    planned: list[PlannedOperation] = []
    for spec in operations.get(action, []):
        if spec.get("when") and not is_present(context, spec["when"]):
            continue
        if spec.get("unless") and is_present(context, spec["unless"]):
            continue
        if spec.get("each") == "documents":
            for index, _ in enumerate(documents):
                planned.append(
                    PlannedOperation(f"{spec['name']}-{index + 1}", spec["name"], index, spec)
                )
        else:
            planned.append(PlannedOperation(spec["name"], spec["name"], None, spec))
    return planned


# --- validation -------------------------------------------------------------------------------


def _placeholders(template: Any) -> list[str]:
    if isinstance(template, dict):
        return [name for item in template.values() for name in _placeholders(item)]
    if isinstance(template, list):
        return [name for item in template for name in _placeholders(item)]
    if isinstance(template, str):
        return [m.group(1) for m in PLACEHOLDER.finditer(template)]
    return []


def _placeholder_problem(name: str, *, action: str, each: bool, reference: bool) -> str | None:
    root, _, rest = name.partition(".")
    if root == "reference" and not rest:
        return None if reference else "{reference} can only be used in read_back"
    if root == "data":
        return None if rest else "{data} needs a field, e.g. {data.account_reference}"
    if root == "values":
        first = rest.split(".")[0]
        allowed = ACTION_VALUES.get(action, set())
        if first in allowed:
            return None
        known = ", ".join(sorted(allowed)) or "none"
        return f"{{{name}}}: {action} has no value {first!r} (it has: {known})"
    if root == "evidence":
        return None if rest else "{evidence} needs a field"
    known = {
        "case": CASE_FIELDS,
        "outcome": OUTCOME_FIELDS,
        "customer": CUSTOMER_FIELDS,
        "document": DOCUMENT_FIELDS,
    }.get(root)
    if known is None:
        return (
            f"unknown placeholder {{{name}}}: use data., values., evidence., case., "
            "outcome., customer. or document."
        )
    if root == "document" and not each:
        return f'{{{name}}} needs "each": "documents"'
    if rest not in known:
        return f"unknown placeholder {{{name}}}: {root} has {', '.join(sorted(known))}"
    return None


def operation_problems(action: str, index: int, spec: Any, *, kind: str) -> list[str]:
    where = f"{action}[{index}]"
    if not isinstance(spec, dict):
        return [f"{where}: each operation is an object with name, method and path."]
    label = f"{action}.{spec.get('name', index)}"
    problems = [f"{label}: unknown key {key!r}." for key in spec if key not in OPERATION_KEYS]
    name = spec.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        problems.append(f"{where}: name must be lower-case letters, digits and _.")
    each = spec.get("each")
    if each not in (None, "documents"):
        problems.append(f'{label}: each may only be "documents".')
    if kind == "rest":
        method = spec.get("method")
        if method not in METHODS:
            problems.append(
                f"{label}: method {method!r} is not one of {', '.join(sorted(METHODS))}."
            )
        path = spec.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            problems.append(f"{label}: path must start with /.")
        if spec.get("multipart") and each != "documents":
            problems.append(f'{label}: multipart uploads go with "each": "documents".')
        read_back = spec.get("read_back")
        if read_back is not None and (
            not isinstance(read_back, str) or not read_back.startswith("/")
        ):
            problems.append(f"{label}: read_back must be a path starting with /.")
    else:
        if not isinstance(spec.get("file"), str) or not NAME.match(spec.get("file", "")):
            problems.append(f"{label}: file must name the CSV file (letters, digits, _).")
        if "method" in spec or "path" in spec:
            problems.append(f"{label}: a file target takes file and body, not method or path.")
        if spec.get("read_back") not in (None, True, False):
            problems.append(f"{label}: read_back is true or false for a file target.")
    for part in ("body", "expect"):
        if part in spec and not isinstance(spec[part], dict):
            problems.append(f"{label}: {part} must be an object.")
    if "reference" in spec and not isinstance(spec["reference"], str):
        problems.append(f"{label}: reference names the answer's field holding the reference.")
    for part in ("when", "unless"):
        if part in spec and (not isinstance(spec[part], str) or "{" in spec[part]):
            problems.append(f"{label}: {part} is a bare name like values.unchanged.")
        elif part in spec:
            problem = _placeholder_problem(spec[part], action=action, each=False, reference=False)
            if problem:
                problems.append(f"{label}: {problem}.")
    for part in ("path", "body", "expect", "read_back"):
        if part not in spec or (part == "read_back" and isinstance(spec[part], bool)):
            continue
        for placeholder in _placeholders(spec[part]):
            problem = _placeholder_problem(
                placeholder,
                action=action,
                each=each == "documents",
                reference=part == "read_back",
            )
            if problem:
                problems.append(f"{label} {part}: {problem}.")
    return problems


def operations_problems(operations: Any, *, kind: str) -> list[str]:
    if not isinstance(operations, dict):
        return ["The operations mapping is an object: {action: [operation, …]}."]
    problems: list[str] = []
    for action, specs in operations.items():
        if action not in ACTIONS:
            problems.append(f"Unknown action {action!r}; actions: {', '.join(ACTIONS)}.")
            continue
        if not isinstance(specs, list) or not specs:
            problems.append(f"{action}: give a non-empty list of operations.")
            continue
        names = [spec.get("name") for spec in specs if isinstance(spec, dict)]
        for name in {n for n in names if names.count(n) > 1}:
            problems.append(f"{action}: two operations are named {name!r}.")
        for index, spec in enumerate(specs):
            problems.extend(operation_problems(action, index, spec, kind=kind))
    return problems


def target_problems(target: Any) -> dict[str, list[str]]:
    """Field-level problems of a writeback target, for its form and for `clean()`."""
    problems: dict[str, list[str]] = {}

    def add(field_name: str, message: str) -> None:
        problems.setdefault(field_name, []).append(message)

    lists = {}
    for name in ("success_statuses", "retryable_statuses", "permanent_statuses"):
        try:
            lists[name] = status_set(getattr(target, name))
        except ValueError as exc:
            add(name, f"Statuses are numbers or ranges separated by commas: {exc}.")
    if not lists.get("success_statuses", {1}):
        add("success_statuses", "Name at least one success status.")
    names = list(lists)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            overlap = lists[first] & lists[second]
            if overlap:
                shown = ", ".join(str(s) for s in sorted(overlap)[:5])
                add(second, f"Overlaps {first.replace('_', ' ')} ({shown}).")
    if target.auth_kind != "none":
        if not ENV_NAME.match(target.secret_env or ""):
            add(
                "secret_env",
                "Give the NAME of the environment variable holding the secret "
                "(capitals, digits and _, e.g. CORE_API_TOKEN).",
            )
    elif target.secret_env:
        add("secret_env", "No authentication is chosen, so no secret is used; leave it blank.")
    if target.base_url:
        parts = urlsplit(target.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            add("base_url", "Give an http(s) URL like https://core.example.com/api, or blank.")
    if target.timeout_seconds is not None and not (0 < target.timeout_seconds <= 120):
        add("timeout_seconds", "Between 0 and 120 seconds.")
    if target.max_attempts is not None and target.max_attempts < 1:
        add("max_attempts", "At least one attempt.")
    if (target.backoff_base_seconds or 0) < 0:
        add("backoff_base_seconds", "Not negative.")
    if (target.backoff_cap_seconds or 0) < (target.backoff_base_seconds or 0):
        add("backoff_cap_seconds", "At least the backoff base.")
    if target.breaker_threshold is not None and target.breaker_threshold < 1:
        add("breaker_threshold", "At least one failure.")
    if target.kind == "file":
        if not target.drop_folder or not os.path.isabs(target.drop_folder):
            add("drop_folder", "A file target needs an absolute folder path.")
        if target.auth_kind != "none":
            add("auth_kind", "A file target has no authentication.")
    elif target.drop_folder:
        add("drop_folder", "Only file targets use a drop folder; leave it blank.")
    for message in operations_problems(target.operations, kind=target.kind):
        add("operations", message)
    return problems
