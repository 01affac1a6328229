"""The operations mapping and the target's settings are checked on save, with messages
that name the field and the rule."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from writeback.mapping import MappingError, render, status_set
from writeback.models import WritebackTarget


def target(**fields) -> WritebackTarget:
    base = {
        "key": "bank_core",
        "name": "Bank core",
        "kind": "rest",
        "auth_kind": "bearer",
        "secret_env": "BANK_CORE_TOKEN",
        "operations": {
            "promise_to_pay": [{"name": "arrangement", "method": "POST", "path": "/arrangements"}]
        },
    }
    return WritebackTarget(**{**base, **fields})


def errors_of(candidate: WritebackTarget) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as caught:
        candidate.full_clean()
    return caught.value.message_dict


def test_the_shipped_core_target_is_valid(db):
    WritebackTarget.objects.get(key="core_rest").full_clean()


def test_a_minimal_target_is_valid(db):
    target().full_clean()


@pytest.mark.parametrize(
    ("operations", "message"),
    [
        ({"fly": [{"name": "x", "method": "POST", "path": "/x"}]}, "Unknown action 'fly'"),
        ({"dispute": []}, "non-empty list"),
        ({"dispute": [{"name": "n", "method": "GET", "path": "/x"}]}, "method 'GET'"),
        ({"dispute": [{"name": "n", "method": "POST", "path": "x"}]}, "path must start with /"),
        (
            {"dispute": [{"name": "n", "method": "POST", "path": "/{values.amount}"}]},
            "dispute has no value 'amount'",
        ),
        (
            {"dispute": [{"name": "n", "method": "POST", "path": "/{secrets.key}"}]},
            "unknown placeholder {secrets.key}",
        ),
        (
            {
                "dispute": [
                    {"name": "n", "method": "POST", "path": "/x", "body": {"c": "{customer.email}"}}
                ]
            },
            "customer has external_id",
        ),
        (
            {
                "dispute": [
                    {
                        "name": "n",
                        "method": "POST",
                        "path": "/x",
                        "body": {"d": "{document.sha256}"},
                    }
                ]
            },
            'needs "each": "documents"',
        ),
        (
            {"dispute": [{"name": "n", "method": "POST", "path": "/x/{reference}"}]},
            "only be used in read_back",
        ),
        (
            {"dispute": [{"name": "n", "method": "POST", "path": "/x", "colour": "red"}]},
            "unknown key 'colour'",
        ),
        (
            {
                "dispute": [
                    {"name": "n", "method": "POST", "path": "/x"},
                    {"name": "n", "method": "POST", "path": "/y"},
                ]
            },
            "two operations are named 'n'",
        ),
        (
            {"dispute": [{"name": "n", "method": "POST", "path": "/x", "multipart": True}]},
            "multipart uploads",
        ),
    ],
)
def test_mapping_errors_name_the_operation_and_the_rule(db, operations, message):
    errors = errors_of(target(operations=operations))
    assert any(message in text for text in errors["operations"]), errors


def test_settings_errors_are_field_level(db):
    errors = errors_of(
        target(
            success_statuses="200-299",
            retryable_statuses="500-599,201",
            secret_env="core token",
            base_url="ftp://core",
            drop_folder="/srv/drop",
            backoff_base_seconds=10,
            backoff_cap_seconds=5,
        )
    )
    assert "Overlaps success statuses (201)" in errors["retryable_statuses"][0]
    assert "NAME of the environment variable" in errors["secret_env"][0]
    assert "http(s) URL" in errors["base_url"][0]
    assert "Only file targets" in errors["drop_folder"][0]
    assert "At least the backoff base" in errors["backoff_cap_seconds"][0]


def test_a_file_target_needs_a_folder_and_file_names(db):
    errors = errors_of(
        target(
            kind="file",
            auth_kind="none",
            secret_env="",
            drop_folder="relative/path",
            operations={"dispute": [{"name": "n", "method": "POST", "path": "/x"}]},
        )
    )
    assert "absolute folder" in errors["drop_folder"][0]
    assert any("file must name the CSV file" in e for e in errors["operations"])


def test_status_lists():
    assert status_set("200-202, 409") == {200, 201, 202, 409}
    with pytest.raises(ValueError, match="'abc'"):
        status_set("abc")
    with pytest.raises(ValueError, match="reversed"):
        status_set("599-500")


def test_render_keeps_types_and_drops_missing_optionals():
    context = {"values": {"schedule": [{"amount": "1.00"}], "phone": "+447700900123"}}
    body = {
        "s": "{values.schedule}",
        "p": "{values.phone?}",
        "e": "{values.email?}",
        "t": "x {values.phone}",
    }
    assert render(body, context) == {
        "s": [{"amount": "1.00"}],
        "p": "+447700900123",
        "t": "x +447700900123",
    }
    assert render("/a/{values.phone}", context, url=True) == "/a/%2B447700900123"
    with pytest.raises(MappingError, match=r"values\.email"):
        render({"e": "{values.email}"}, context)
