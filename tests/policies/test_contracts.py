"""Trigger data contracts: the compiler names every mistake in a spec by its path, and the
compiled validator holds its bounds exactly (at the bound, and just beyond it)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from policies.contracts import ContractError, contract_compile, contract_json_schema
from policies.models import Workflow


def _errors(fields) -> dict[str, list[str]]:
    with pytest.raises(ContractError) as caught:
        contract_compile(fields)
    return caught.value.errors


def _check(spec: dict, value):
    """(clean value, errors) for one value against a one-field contract."""
    contract = contract_compile([{"name": "amount", **spec}])
    clean, errors = contract.validate({"amount": value})
    return clean.get("amount"), errors.get("data.amount")


# --- the compiler ------------------------------------------------------------------------------


@pytest.mark.parametrize("fields", [{"name": "balance", "type": "decimal"}, "balance", None, 3])
def test_contract_must_be_a_list(fields):
    assert _errors(fields) == {"fields": ["The contract must be a list of field specs."]}


def test_unknown_type():
    errors = _errors([{"name": "balance", "type": "money"}])
    assert list(errors) == ["fields[0].type"]
    assert "Unknown type 'money'" in errors["fields[0].type"][0]
    assert "decimal" in errors["fields[0].type"][0]


@pytest.mark.parametrize(
    ("spec", "rule"),
    [
        ({"name": "n", "type": "integer", "pattern": "^[0-9]+$"}, "pattern"),
        ({"name": "n", "type": "string", "gt": 0}, "gt"),
        ({"name": "n", "type": "boolean", "min": 0}, "min"),
        ({"name": "n", "type": "decimal", "maximum": 5}, "maximum"),
    ],
)
def test_unknown_rule_for_the_type(spec, rule):
    errors = _errors([{"name": "ok", "type": "string"}, spec])
    assert list(errors) == ["fields[1]"]
    assert f"Unknown rule(s) {rule} for type {spec['type']}" in errors["fields[1]"][0]


@pytest.mark.parametrize("pattern", ["[A-Z", "(?P<x", "*abc", 12])
def test_bad_regex(pattern):
    errors = _errors([{"name": "ref", "type": "string", "pattern": pattern}])
    assert list(errors) == ["fields[0].pattern"]
    assert errors["fields[0].pattern"][0].startswith("Not a valid regular expression")


def test_duplicate_names():
    errors = _errors(
        [
            {"name": "balance", "type": "decimal"},
            {"name": "currency", "type": "currency"},
            {"name": "balance", "type": "integer"},
        ]
    )
    assert errors == {"fields[2].name": ["Duplicate field name 'balance'."]}


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        ("balance", "fields[0]"),
        ({"type": "string"}, "fields[0].name"),
        ({"name": "Balance", "type": "string"}, "fields[0].name"),
        ({"name": "due-date", "type": "date"}, "fields[0].name"),
        ({"name": "n", "type": "string", "required": "yes"}, "fields[0].required"),
        ({"name": "n", "type": "string", "max_length": -1}, "fields[0].max_length"),
        ({"name": "n", "type": "string", "min_length": "3"}, "fields[0].min_length"),
        ({"name": "n", "type": "decimal", "max_places": 1.5}, "fields[0].max_places"),
        ({"name": "n", "type": "integer", "min": "0"}, "fields[0].min"),
        ({"name": "n", "type": "integer", "max": 1.5}, "fields[0].max"),
        ({"name": "n", "type": "integer", "min": True}, "fields[0].min"),
        ({"name": "n", "type": "decimal", "gt": "zero"}, "fields[0].gt"),
        ({"name": "n", "type": "decimal", "lt": True}, "fields[0].lt"),
        ({"name": "n", "type": "date", "min": "2026-13-01"}, "fields[0].min"),
        ({"name": "n", "type": "choice"}, "fields[0].choices"),
        ({"name": "n", "type": "choice", "choices": []}, "fields[0].choices"),
        ({"name": "n", "type": "list", "choices": "a,b"}, "fields[0].choices"),
        ({"name": "n", "type": "list", "choices": [["a"], ["b"]]}, "fields[0].choices"),
        ({"name": "n", "type": "list", "max_items": -2}, "fields[0].max_items"),
    ],
)
def test_bad_field_spec_is_named_by_path(spec, path):
    errors = _errors([spec])
    assert path in errors, errors
    assert all(isinstance(m, str) and m for m in errors[path])


def test_every_problem_is_reported_at_once():
    errors = _errors(
        [
            {"name": "a", "type": "money"},
            {"name": "b", "type": "string", "pattern": "("},
            {"name": "c", "type": "integer", "min": "x"},
            {"name": "d", "type": "decimal"},
        ]
    )
    assert set(errors) == {"fields[0].type", "fields[1].pattern", "fields[2].min"}
    message = str(ContractError(errors))
    assert "fields[0].type" in message and "fields[2].min" in message


def test_a_good_contract_compiles():
    contract = contract_compile(
        [
            {"name": "balance", "type": "decimal", "gt": 0, "max_places": 2},
            {"name": "note", "type": "string", "required": False, "description": "Free text"},
            {"name": "plan", "type": "choice", "choices": ["weekly", "monthly"], "label": "Plan"},
        ]
    )
    assert contract.names == {"balance", "note", "plan"}
    assert [f.required for f in contract.fields] == [True, False, True]


# --- validate(): bounds at the edge and just beyond ------------------------------------------


@pytest.mark.parametrize(
    ("value", "clean"),
    [(0.01, "0.01"), ("0.01", "0.01"), (1, "1"), ("1250.00", "1250.00"), (12.1, "12.1")],
)
def test_gt_zero_accepts_just_above(value, clean):
    assert _check({"type": "decimal", "gt": 0, "max_places": 2}, value) == (clean, None)


@pytest.mark.parametrize("value", [0, "0", "0.00", -0.01, "-0"])
def test_gt_zero_rejects_zero_and_below(value):
    _, errors = _check({"type": "decimal", "gt": 0, "max_places": 2}, value)
    assert errors == ["Must be greater than 0."]


@pytest.mark.parametrize(("value", "ok"), [(1.005, False), ("1.005", False), (1.01, True)])
def test_max_places(value, ok):
    clean, errors = _check({"type": "decimal", "max_places": 2}, value)
    if ok:
        assert (clean, errors) == (str(value), None)
    else:
        assert errors == ["Must have at most 2 decimal places."]


def test_decimal_min_max_lt_are_inclusive_or_exclusive_as_named():
    spec = {"type": "decimal", "min": "10", "max": "20"}
    assert _check(spec, "10")[1] is None
    assert _check(spec, "20")[1] is None
    assert _check(spec, "9.99")[1] == ["Must be at least 10."]
    assert _check(spec, "20.01")[1] == ["Must be at most 20."]
    assert _check({"type": "decimal", "lt": 100}, "99.99")[1] is None
    assert _check({"type": "decimal", "lt": 100}, 100)[1] == ["Must be less than 100."]


@pytest.mark.parametrize("value", [True, "abc", "NaN", "Infinity", [1], {"v": 1}])
def test_decimal_rejects_what_is_not_a_finite_number(value):
    assert _check({"type": "decimal"}, value)[1] is not None


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (0, None),
        (1, None),
        (5.0, None),
        (-1, "Must be at least 0."),
        (1.5, "Must be a whole number."),
        ("5", "Must be a whole number."),
        (True, "Must be a whole number."),
    ],
)
def test_integer_min_zero(value, error):
    clean, errors = _check({"type": "integer", "min": 0}, value)
    assert errors == ([error] if error else None)
    if error is None:
        assert clean == int(value)
        assert type(clean) is int


def test_integer_max():
    assert _check({"type": "integer", "max": 90}, 90)[1] is None
    assert _check({"type": "integer", "max": 90}, 91)[1] == ["Must be at most 90."]


def test_string_length_and_pattern():
    spec = {"type": "string", "min_length": 2, "max_length": 4, "pattern": "[A-Z]+"}
    assert _check(spec, " AB ") == ("AB", None)
    assert _check(spec, "ABCD")[1] is None
    assert _check(spec, "ABCDE")[1] == ["Must be at most 4 characters."]
    assert _check(spec, "A")[1] == ["Must be at least 2 characters."]
    assert _check(spec, "AB1")[1] == ["Must match the pattern [A-Z]+."]  # a full match
    assert _check(spec, 12)[1] == ["Must be text."]


def test_date_bounds_are_inclusive():
    spec = {"type": "date", "min": "2026-01-01", "max": "2026-12-31"}
    assert _check(spec, "2026-01-01") == ("2026-01-01", None)
    assert _check(spec, "2026-12-31")[1] is None
    assert _check(spec, "2025-12-31")[1] == ["Must be on or after 2026-01-01."]
    assert _check(spec, "2027-01-01")[1] == ["Must be on or before 2026-12-31."]
    assert _check(spec, "2026-02-29")[1] == ["Must be a date as YYYY-MM-DD."]


def test_datetime_needs_an_offset_and_is_stored_in_utc():
    spec = {"type": "datetime"}
    assert _check(spec, "2026-03-01T09:30:00+01:00") == ("2026-03-01T08:30:00Z", None)
    assert _check(spec, "2026-03-01T09:30:00")[1] is not None
    assert _check(spec, 1700000000)[1] is not None


def test_other_types():
    assert _check({"type": "currency"}, "gbp") == ("GBP", None)
    assert _check({"type": "currency"}, "XXY")[1] is not None
    assert _check({"type": "boolean"}, False) == (False, None)
    assert _check({"type": "boolean"}, "true")[1] == ["Must be true or false."]
    assert _check({"type": "email"}, " ada@example.com ") == ("ada@example.com", None)
    assert _check({"type": "email"}, "ada@")[1] == ["Must be a valid email address."]
    assert _check({"type": "phone"}, "+44 7911 123456") == ("+447911123456", None)
    assert _check({"type": "phone"}, "07911123456")[1] is not None
    choice = {"type": "choice", "choices": ["weekly", "monthly"]}
    assert _check(choice, "weekly") == ("weekly", None)
    assert _check(choice, "daily")[1] == ["Must be one of: weekly, monthly."]


def test_list_bounds_and_choices():
    spec = {"type": "list", "min_items": 1, "max_items": 2, "choices": ["a", "b", "c"]}
    assert _check(spec, ["a", " b "]) == (["a", "b"], None)
    assert _check(spec, [])[1] == ["Must have at least 1 item(s)."]
    assert _check(spec, ["a", "b", "c"])[1] == ["Must have at most 2 items."]
    assert _check(spec, ["d"])[1] == ["Each item must be one of: a, b, c."]
    assert _check(spec, "a")[1] == ["Must be a list."]
    assert _check({"type": "list"}, [1])[1] is not None


def test_required_unknown_and_optional_fields():
    contract = contract_compile(
        [
            {"name": "balance", "type": "decimal"},
            {"name": "note", "type": "string", "required": False},
        ]
    )
    assert contract.validate({"balance": "1"}) == ({"balance": "1"}, {})
    assert contract.validate({"balance": "1", "note": ""}) == ({"balance": "1"}, {})
    _, errors = contract.validate({"note": "x", "extra": 1})
    assert errors["data.balance"] == ["This field is required."]
    assert errors["data.extra"] == ["Unknown field; this workflow accepts: balance, note."]
    assert contract.validate([], prefix="data") == (
        {},
        {"data": ["Must be an object of the workflow's data fields."]},
    )
    assert "payload.balance" in contract.validate({}, prefix="payload")[1]


def test_json_schema_mirrors_the_contract():
    fields = [
        {"name": "balance", "type": "decimal", "gt": 0, "lt": 1000000, "description": "Owed"},
        {"name": "days", "type": "integer", "min": 0, "max": 365},
        {"name": "plan", "type": "choice", "choices": ["weekly"], "required": False},
        {"name": "tags", "type": "list", "choices": ["a"]},
    ]
    schema = contract_json_schema(fields)
    assert schema["required"] == ["balance", "days", "tags"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["balance"] == {
        "type": ["number", "string"],
        "format": "decimal",
        "exclusiveMinimum": 0,
        "exclusiveMaximum": 1000000,
        "description": "Owed",
    }
    assert schema["properties"]["days"] == {"type": "integer", "minimum": 0, "maximum": 365}
    assert schema["properties"]["plan"] == {"enum": ["weekly"]}
    assert schema["properties"]["tags"]["items"] == {"type": "string", "enum": ["a"]}


# --- the model -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_workflow_full_clean_rejects_a_broken_contract():
    workflow = Workflow(
        key="broken",
        name="Broken",
        contract=[
            {"name": "balance", "type": "money"},
            {"name": "ref", "type": "string", "pattern": "("},
        ],
    )
    with pytest.raises(ValidationError) as caught:
        workflow.full_clean()
    messages = caught.value.message_dict["contract"]
    assert any(m.startswith("fields[0].type: Unknown type 'money'") for m in messages)
    assert any(m.startswith("fields[1].pattern: Not a valid regular expression") for m in messages)


@pytest.mark.django_db
def test_workflow_full_clean_rejects_a_contract_that_is_not_a_list():
    workflow = Workflow(key="broken", name="Broken", contract={"balance": "decimal"})
    with pytest.raises(ValidationError) as caught:
        workflow.full_clean()
    assert "contract" in caught.value.message_dict


@pytest.mark.django_db
def test_workflow_full_clean_accepts_a_good_contract():
    workflow = Workflow(
        key="fine", name="Fine", contract=[{"name": "balance", "type": "decimal", "gt": 0}]
    )
    workflow.full_clean()
