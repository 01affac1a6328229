"""Trigger data contracts: what a source system must send in a trigger's `data`.

A workflow's contract is a list of field specs (JSON, edited in the admin or in a workflow
file). `contract_compile` checks the spec itself and returns a `CompiledContract` whose
`validate` is called once per trigger on the ingest hot path, so everything that can be
decided up front (types, bounds, patterns) is decided once, at compile time.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator
from django.utils.dateparse import parse_datetime

from cases.phones import phone_normalise
from policies.currencies import ISO_4217_CODES

FIELD_TYPES = (
    "string",
    "integer",
    "decimal",
    "boolean",
    "date",
    "datetime",
    "currency",
    "email",
    "phone",
    "choice",
    "list",
)
# Which optional rules each type accepts; anything else in a spec is a mistake worth naming.
TYPE_RULES: dict[str, set[str]] = {
    "string": {"min_length", "max_length", "pattern"},
    "integer": {"min", "max"},
    "decimal": {"min", "max", "gt", "lt", "max_places"},
    "boolean": set(),
    "date": {"min", "max"},
    "datetime": set(),
    "currency": set(),
    "email": set(),
    "phone": set(),
    "choice": {"choices"},
    "list": {"min_items", "max_items", "choices", "max_length"},
}
COMMON_KEYS = {"name", "type", "required", "description", "label"}
FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
DEFAULT_STRING_MAX = 1000

_email_validator = EmailValidator()


class ContractError(ValueError):
    """The contract spec itself is wrong. `errors` maps a spec path to messages."""

    def __init__(self, errors: dict[str, list[str]]):
        self.errors = errors
        super().__init__("; ".join(f"{path}: {' '.join(msgs)}" for path, msgs in errors.items()))


class FieldInvalid(ValueError):
    pass


Check = Callable[[Any], Any]


@dataclass(frozen=True)
class CompiledField:
    name: str
    required: bool
    check: Check


@dataclass(frozen=True)
class CompiledContract:
    fields: tuple[CompiledField, ...]

    @property
    def names(self) -> frozenset[str]:
        return frozenset(field.name for field in self.fields)

    def validate(
        self, data: Any, *, prefix: str = "data"
    ) -> tuple[dict[str, Any], dict[str, list[str]]]:
        """Return (normalised data, errors by field path). Normalised values are JSON-safe:
        decimals and dates as canonical strings, so what is stored is what was validated."""
        if not isinstance(data, dict):
            return {}, {prefix: ["Must be an object of the workflow's data fields."]}
        errors: dict[str, list[str]] = {}
        clean: dict[str, Any] = {}
        known = self.names
        for key in data:
            if key not in known:
                errors[f"{prefix}.{key}"] = [
                    f"Unknown field; this workflow accepts: {', '.join(sorted(known))}."
                ]
        for field in self.fields:
            value = data.get(field.name)
            if value is None or value == "":
                if field.required:
                    errors[f"{prefix}.{field.name}"] = ["This field is required."]
                continue
            try:
                clean[field.name] = field.check(value)
            except FieldInvalid as exc:
                errors[f"{prefix}.{field.name}"] = [str(exc)]
        return clean, errors


# --- value checks (one per type), built with their rules bound ------------------------------


def _decimal(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise FieldInvalid("Must be a number, e.g. 1250.00.")
    try:
        # repr() of a float is its shortest round-trip form, so 12.1 stays 12.1.
        number = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
    except InvalidOperation as exc:
        raise FieldInvalid("Must be a number, e.g. 1250.00.") from exc
    if not number.is_finite():
        raise FieldInvalid("Must be a finite number.")
    return number


def _parse_date(value: Any) -> dt.date:
    if not isinstance(value, str):
        raise FieldInvalid("Must be a date as YYYY-MM-DD.")
    try:
        return dt.date.fromisoformat(value.strip())
    except ValueError as exc:
        raise FieldInvalid("Must be a date as YYYY-MM-DD.") from exc


def _build_check(spec: dict[str, Any]) -> Check:
    kind = spec["type"]
    if kind == "string":
        min_length = spec.get("min_length", 0)
        max_length = spec.get("max_length", DEFAULT_STRING_MAX)
        pattern = re.compile(spec["pattern"]) if spec.get("pattern") else None

        def check_string(value: Any) -> str:
            if not isinstance(value, str):
                raise FieldInvalid("Must be text.")
            value = value.strip()
            if len(value) < min_length:
                raise FieldInvalid(f"Must be at least {min_length} characters.")
            if len(value) > max_length:
                raise FieldInvalid(f"Must be at most {max_length} characters.")
            if pattern and not pattern.fullmatch(value):
                raise FieldInvalid(f"Must match the pattern {pattern.pattern}.")
            return value

        return check_string

    if kind == "integer":
        low, high = spec.get("min"), spec.get("max")

        def check_integer(value: Any) -> int:
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                else:
                    raise FieldInvalid("Must be a whole number.")
            if low is not None and value < low:
                raise FieldInvalid(f"Must be at least {low}.")
            if high is not None and value > high:
                raise FieldInvalid(f"Must be at most {high}.")
            return value

        return check_integer

    if kind == "decimal":
        low = Decimal(str(spec["min"])) if "min" in spec else None
        high = Decimal(str(spec["max"])) if "max" in spec else None
        above = Decimal(str(spec["gt"])) if "gt" in spec else None
        below = Decimal(str(spec["lt"])) if "lt" in spec else None
        max_places = spec.get("max_places")

        def check_decimal(value: Any) -> str:
            number = _decimal(value)
            if low is not None and number < low:
                raise FieldInvalid(f"Must be at least {low}.")
            if high is not None and number > high:
                raise FieldInvalid(f"Must be at most {high}.")
            if above is not None and number <= above:
                raise FieldInvalid(f"Must be greater than {above}.")
            if below is not None and number >= below:
                raise FieldInvalid(f"Must be less than {below}.")
            if max_places is not None and -number.as_tuple().exponent > max_places:
                raise FieldInvalid(f"Must have at most {max_places} decimal places.")
            return str(number)

        return check_decimal

    if kind == "boolean":

        def check_boolean(value: Any) -> bool:
            if not isinstance(value, bool):
                raise FieldInvalid("Must be true or false.")
            return value

        return check_boolean

    if kind == "date":
        low = dt.date.fromisoformat(spec["min"]) if "min" in spec else None
        high = dt.date.fromisoformat(spec["max"]) if "max" in spec else None

        def check_date(value: Any) -> str:
            day = _parse_date(value)
            if low and day < low:
                raise FieldInvalid(f"Must be on or after {low.isoformat()}.")
            if high and day > high:
                raise FieldInvalid(f"Must be on or before {high.isoformat()}.")
            return day.isoformat()

        return check_date

    if kind == "datetime":

        def check_datetime(value: Any) -> str:
            moment = parse_datetime(value.strip()) if isinstance(value, str) else None
            if moment is None or moment.tzinfo is None:
                raise FieldInvalid(
                    "Must be an ISO 8601 date and time with an offset, e.g. 2026-03-01T09:30:00Z."
                )
            return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")

        return check_datetime

    if kind == "currency":

        def check_currency(value: Any) -> str:
            code = value.strip().upper() if isinstance(value, str) else None
            if code not in ISO_4217_CODES:
                raise FieldInvalid("Must be an ISO 4217 currency code, e.g. GBP, EUR or USD.")
            return code

        return check_currency

    if kind == "email":

        def check_email(value: Any) -> str:
            if not isinstance(value, str):
                raise FieldInvalid("Must be an email address.")
            try:
                _email_validator(value.strip())
            except ValidationError as exc:
                raise FieldInvalid("Must be a valid email address.") from exc
            return value.strip()

        return check_email

    if kind == "phone":

        def check_phone(value: Any) -> str:
            try:
                return phone_normalise(value)
            except ValueError as exc:
                raise FieldInvalid(str(exc)) from exc

        return check_phone

    if kind == "choice":
        choices = tuple(spec["choices"])

        def check_choice(value: Any) -> Any:
            if value not in choices:
                raise FieldInvalid(f"Must be one of: {', '.join(map(str, choices))}.")
            return value

        return check_choice

    # list of short strings, optionally from a fixed set
    choices = frozenset(spec.get("choices") or ())
    min_items, max_items = spec.get("min_items", 0), spec.get("max_items", 100)
    item_max = spec.get("max_length", 200)

    def check_list(value: Any) -> list[str]:
        if not isinstance(value, list):
            raise FieldInvalid("Must be a list.")
        if len(value) < min_items:
            raise FieldInvalid(f"Must have at least {min_items} item(s).")
        if len(value) > max_items:
            raise FieldInvalid(f"Must have at most {max_items} items.")
        items = []
        for item in value:
            if not isinstance(item, str) or not item.strip() or len(item) > item_max:
                raise FieldInvalid(f"Each item must be text of 1 to {item_max} characters.")
            if choices and item.strip() not in choices:
                raise FieldInvalid(f"Each item must be one of: {', '.join(sorted(choices))}.")
            items.append(item.strip())
        return items

    return check_list


def _spec_errors(index: int, spec: Any) -> dict[str, list[str]]:
    """Everything wrong with one field spec, keyed by its path in the contract."""
    path = f"fields[{index}]"
    if not isinstance(spec, dict):
        return {path: ["Each field must be an object with at least a name and a type."]}
    errors: dict[str, list[str]] = {}
    name, kind = spec.get("name"), spec.get("type")
    if not isinstance(name, str) or not FIELD_NAME.match(name):
        errors[f"{path}.name"] = [
            "Must be a lower-case identifier (letters, digits, underscores), e.g. due_date."
        ]
    if kind not in FIELD_TYPES:
        errors[f"{path}.type"] = [f"Unknown type {kind!r}; use one of: {', '.join(FIELD_TYPES)}."]
        return errors
    allowed = COMMON_KEYS | TYPE_RULES[kind]
    unknown = sorted(set(spec) - allowed)
    if unknown:
        errors[path] = [
            f"Unknown rule(s) {', '.join(unknown)} for type {kind}; "
            f"allowed: {', '.join(sorted(TYPE_RULES[kind])) or 'none'}."
        ]
    if "required" in spec and not isinstance(spec["required"], bool):
        errors[f"{path}.required"] = ["Must be true or false."]
    for rule in ("min_length", "max_length", "max_places", "min_items", "max_items"):
        if rule in spec and (not isinstance(spec[rule], int) or spec[rule] < 0):
            errors[f"{path}.{rule}"] = ["Must be a whole number of at least 0."]
    for rule in ("min", "max", "gt", "lt"):
        if rule not in spec:
            continue
        value = spec[rule]
        if kind == "date":
            try:
                dt.date.fromisoformat(str(value))
            except ValueError:
                errors[f"{path}.{rule}"] = ["Must be a date as YYYY-MM-DD."]
        elif kind == "integer" and (isinstance(value, bool) or not isinstance(value, int)):
            errors[f"{path}.{rule}"] = ["Must be a whole number."]
        elif kind == "decimal":
            try:
                _decimal(value)
            except FieldInvalid:
                errors[f"{path}.{rule}"] = ["Must be a number."]
    if "pattern" in spec:
        try:
            re.compile(spec["pattern"])
        except (re.error, TypeError) as exc:
            errors[f"{path}.pattern"] = [f"Not a valid regular expression: {exc}."]
    if kind == "choice" and (not isinstance(spec.get("choices"), list) or not spec["choices"]):
        errors[f"{path}.choices"] = ["A choice field needs a non-empty list of choices."]
    if (
        "choices" in spec
        and kind == "list"
        and (
            not isinstance(spec["choices"], list)
            or not all(isinstance(choice, str) for choice in spec["choices"])
        )
    ):
        # A list field's items are text, so its choices must be too (and hashable).
        errors[f"{path}.choices"] = ["Must be a list of allowed text values."]
    return errors


def contract_compile(fields: Any) -> CompiledContract:
    """Check a contract spec and compile it. Raises ContractError naming every problem."""
    if not isinstance(fields, list):
        raise ContractError({"fields": ["The contract must be a list of field specs."]})
    errors: dict[str, list[str]] = {}
    seen: set[str] = set()
    compiled = []
    for index, spec in enumerate(fields):
        spec_errors = _spec_errors(index, spec)
        if not spec_errors and spec["name"] in seen:
            spec_errors = {f"fields[{index}].name": [f"Duplicate field name {spec['name']!r}."]}
        if spec_errors:
            errors.update(spec_errors)
            continue
        seen.add(spec["name"])
        compiled.append(
            CompiledField(
                name=spec["name"], required=spec.get("required", True), check=_build_check(spec)
            )
        )
    if errors:
        raise ContractError(errors)
    return CompiledContract(fields=tuple(compiled))


def contract_json_schema(fields: list[dict[str, Any]]) -> dict[str, Any]:
    """The contract as a JSON Schema object, for the API docs and the workflows endpoint."""
    formats = {
        "string": {"type": "string"},
        "integer": {"type": "integer"},
        "decimal": {"type": ["number", "string"], "format": "decimal"},
        "boolean": {"type": "boolean"},
        "date": {"type": "string", "format": "date"},
        "datetime": {"type": "string", "format": "date-time"},
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "email": {"type": "string", "format": "email"},
        "phone": {"type": "string", "pattern": r"^\+[1-9]\d{6,14}$"},
        "choice": {},
        "list": {"type": "array", "items": {"type": "string"}},
    }
    properties = {}
    for spec in fields:
        prop = dict(formats[spec["type"]])
        if spec.get("choices"):
            target = prop["items"] if spec["type"] == "list" else prop
            target["enum"] = list(spec["choices"])
        for rule, keyword in (("min", "minimum"), ("max", "maximum")):
            if rule in spec and spec["type"] in {"integer", "decimal"}:
                prop[keyword] = spec[rule]
        if "gt" in spec:
            prop["exclusiveMinimum"] = spec["gt"]
        if "lt" in spec:
            prop["exclusiveMaximum"] = spec["lt"]
        if spec.get("description"):
            prop["description"] = spec["description"]
        properties[spec["name"]] = prop
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
        "required": [spec["name"] for spec in fields if spec.get("required", True)],
    }
