"""The trigger envelope: what a source system sends, checked and normalised.

This runs once per trigger on the ingest hot path (batches of 1,000), so it is plain Python
over dicts rather than a serializer per item. The field list below is also the source of
the API's OpenAPI description (cases/api/schema.py): one definition, two uses.
"""

from __future__ import annotations

import hashlib
import json
import re
import zoneinfo
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator
from django.utils.dateparse import parse_datetime

from cases.known_facts import (
    KNOWN_FACT_KINDS,
    known_fact_fingerprint,
    known_fact_normalise,
)
from cases.models import Channel
from cases.phones import phone_normalise

TRIGGER_FIELDS = ("workflow", "event_id", "customer", "segment", "data")
CUSTOMER_FIELDS = (
    "external_id",
    "name",
    "phone",
    "email",
    "timezone",
    "locale",
    "whatsapp",
    "address",
    "preferred_channel",
    "flags",
    "consent",
    "known_facts",
)
ADDRESS_FIELDS = ("lines", "city", "region", "postcode", "country")
CONSENT_FIELDS = ("value", "timestamp", "source")
CHANNELS = tuple(Channel.values)
LOCALE = re.compile(r"^[a-zA-Z]{2,3}(?:[-_][a-zA-Z0-9]{2,8}){0,2}$")
FLAG = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
MAX_FLAGS = 20

_email_validator = EmailValidator()

Errors = dict[str, list[str]]


@dataclass
class TriggerInput:
    """One valid trigger envelope. `data` is checked later, against the workflow's
    contract, once the workflow is known."""

    index: int
    workflow_key: str
    event_id: str
    customer: dict[str, Any]
    known_facts: dict[str, str]
    segment: str
    data: dict[str, Any]
    payload: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""


@cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _text(value: Any, path: str, errors: Errors, *, max_length: int, required: bool = False):
    if value is None:
        if required:
            errors[path] = ["This field is required."]
        return None
    if not isinstance(value, str):
        errors[path] = ["Must be text."]
        return None
    value = value.strip()
    if required and not value:
        errors[path] = ["This field is required."]
        return None
    if len(value) > max_length:
        errors[path] = [f"Must be at most {max_length} characters."]
        return None
    return value


def _unknown(obj: dict, allowed: tuple[str, ...], path: str, errors: Errors) -> None:
    for key in obj:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            errors[where] = [f"Unknown field; allowed here: {', '.join(allowed)}."]


def _consent(value: Any, path: str, errors: Errors) -> dict[str, Any] | None:
    if isinstance(value, bool):
        return {"value": value}
    if not isinstance(value, dict):
        errors[path] = ['Must be true, false, or {"value": …, "timestamp": …, "source": …}.']
        return None
    _unknown(value, CONSENT_FIELDS, path, errors)
    if not isinstance(value.get("value"), bool):
        errors[f"{path}.value"] = ["Must be true or false."]
        return None
    consent: dict[str, Any] = {"value": value["value"]}
    if value.get("timestamp") is not None:
        moment = parse_datetime(value["timestamp"]) if isinstance(value["timestamp"], str) else None
        if moment is None or moment.tzinfo is None:
            errors[f"{path}.timestamp"] = [
                "Must be an ISO 8601 date and time with an offset, e.g. 2026-03-01T09:30:00Z."
            ]
            return None
        consent["timestamp"] = moment.isoformat()
    source = _text(value.get("source"), f"{path}.source", errors, max_length=200)
    if source:
        consent["source"] = source
    return consent


def _customer(raw: Any, errors: Errors) -> tuple[dict[str, Any], dict[str, str]]:
    """Return (normalised customer fields that were given, known-fact canonical values)."""
    if not isinstance(raw, dict):
        errors["customer"] = ["Must be an object with at least an external_id."]
        return {}, {}
    _unknown(raw, CUSTOMER_FIELDS, "customer", errors)
    out: dict[str, Any] = {}
    external_id = _text(
        raw.get("external_id"), "customer.external_id", errors, max_length=200, required=True
    )
    if external_id:
        out["external_id"] = external_id
    name = _text(raw.get("name"), "customer.name", errors, max_length=200)
    if name is not None:
        out["name"] = name
    for key in ("phone", "whatsapp"):
        if raw.get(key) not in (None, ""):
            try:
                out[key] = phone_normalise(raw[key])
            except ValueError as exc:
                errors[f"customer.{key}"] = [str(exc)]
    if raw.get("email") not in (None, ""):
        email = _text(raw["email"], "customer.email", errors, max_length=254)
        if email is not None:
            try:
                _email_validator(email)
                out["email"] = email
            except ValidationError:
                errors["customer.email"] = ["Must be a valid email address."]
    if raw.get("timezone") is not None:
        if isinstance(raw["timezone"], str) and raw["timezone"] in _time_zones():
            out["timezone"] = raw["timezone"]
        else:
            errors["customer.timezone"] = [
                "Must be an IANA time zone name, e.g. Europe/London or America/New_York."
            ]
    if raw.get("locale") is not None:
        locale = raw["locale"]
        if isinstance(locale, str) and LOCALE.match(locale):
            parts = locale.replace("_", "-").split("-")
            out["locale"] = "-".join([parts[0].lower(), *(p.upper() for p in parts[1:])])
        else:
            errors["customer.locale"] = ["Must be a language tag, e.g. en or en-GB."]
    if raw.get("preferred_channel") not in (None, ""):
        if raw["preferred_channel"] in CHANNELS:
            out["preferred_channel"] = raw["preferred_channel"]
        else:
            errors["customer.preferred_channel"] = [f"Must be one of: {', '.join(CHANNELS)}."]
    if raw.get("address") is not None:
        out["address"] = _address(raw["address"], errors)
    if raw.get("flags") is not None:
        flags = raw["flags"]
        if (
            not isinstance(flags, list)
            or len(flags) > MAX_FLAGS
            or not all(isinstance(f, str) and FLAG.match(f) for f in flags)
        ):
            errors["customer.flags"] = [
                f"Must be a list of at most {MAX_FLAGS} lower-case flags, e.g. "
                '["vulnerable", "complaint_open"].'
            ]
        else:
            out["flags"] = sorted(set(flags))
    if raw.get("consent") is not None:
        consent = raw["consent"]
        if not isinstance(consent, dict):
            errors["customer.consent"] = [
                "Must be an object keyed by channel: sms, email, whatsapp."
            ]
        else:
            _unknown(consent, CHANNELS, "customer.consent", errors)
            normalised = {}
            for channel in CHANNELS:
                if channel in consent:
                    item = _consent(consent[channel], f"customer.consent.{channel}", errors)
                    if item is not None:
                        normalised[channel] = item
            out["consent"] = normalised
    facts: dict[str, str] = {}
    if raw.get("known_facts") is not None:
        known = raw["known_facts"]
        if not isinstance(known, dict):
            errors["customer.known_facts"] = [
                f"Must be an object with any of: {', '.join(KNOWN_FACT_KINDS)}."
            ]
        else:
            _unknown(known, KNOWN_FACT_KINDS, "customer.known_facts", errors)
            for kind in KNOWN_FACT_KINDS:
                if known.get(kind) not in (None, ""):
                    try:
                        facts[kind] = known_fact_normalise(kind, known[kind])
                    except ValueError as exc:
                        errors[f"customer.known_facts.{kind}"] = [str(exc)]
    return out, facts


def _address(raw: Any, errors: Errors) -> dict[str, Any]:
    if isinstance(raw, str):
        lines = [line.strip() for line in raw.splitlines() if line.strip()]
        if not lines or len(raw) > 500:
            errors["customer.address"] = ["Must be 1 to 500 characters."]
        return {"lines": lines}
    if not isinstance(raw, dict):
        errors["customer.address"] = [
            f"Must be text or an object with any of: {', '.join(ADDRESS_FIELDS)}."
        ]
        return {}
    _unknown(raw, ADDRESS_FIELDS, "customer.address", errors)
    address: dict[str, Any] = {}
    lines = raw.get("lines", [])
    if not isinstance(lines, list) or not all(isinstance(x, str) and len(x) <= 200 for x in lines):
        errors["customer.address.lines"] = ["Must be a list of text lines of up to 200 characters."]
    else:
        address["lines"] = [line.strip() for line in lines if line.strip()]
    for key in ("city", "region", "postcode", "country"):
        value = _text(raw.get(key), f"customer.address.{key}", errors, max_length=100)
        if value:
            address[key] = value.upper() if key == "country" else value
    return address


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def trigger_parse(raw: Any, index: int = 0) -> tuple[TriggerInput | None, Errors]:
    """Check one trigger envelope. Returns (input, {}) or (None, errors by field path)."""
    errors: Errors = {}
    if not isinstance(raw, dict):
        return None, {"trigger": ["Each trigger must be a JSON object."]}
    _unknown(raw, TRIGGER_FIELDS, "", errors)
    workflow = _text(raw.get("workflow"), "workflow", errors, max_length=64, required=True)
    event_id = _text(raw.get("event_id"), "event_id", errors, max_length=200, required=True)
    segment = _text(raw.get("segment"), "segment", errors, max_length=64) or ""
    customer, facts = _customer(raw.get("customer"), errors)
    data = raw.get("data")
    if data is None:
        errors["data"] = ["This field is required."]
    elif not isinstance(data, dict):
        errors["data"] = ["Must be an object of the workflow's data fields."]
    if errors:
        return None, errors
    return TriggerInput(
        index=index,
        workflow_key=workflow,
        event_id=event_id,
        customer=customer,
        known_facts=facts,
        segment=segment,
        data=data,
    ), {}


def trigger_seal(trigger: TriggerInput, clean_data: dict[str, Any]) -> None:
    """Fix the trigger's stored payload and fingerprint once its data is validated.
    Known facts enter the payload only as keyed digests: never in clear."""
    customer = dict(trigger.customer)
    if trigger.known_facts:
        customer["known_facts"] = {
            kind: known_fact_fingerprint(kind=kind, normalised=value)
            for kind, value in trigger.known_facts.items()
        }
    trigger.data = clean_data
    trigger.payload = {
        "workflow": trigger.workflow_key,
        "event_id": trigger.event_id,
        "customer": customer,
        "segment": trigger.segment,
        "data": clean_data,
    }
    trigger.fingerprint = hashlib.sha256(canonical_json(trigger.payload).encode()).hexdigest()


def payload_differences(stored: Any, incoming: Any, path: str = "") -> list[str]:
    """Field paths whose values differ, to explain a 409 without echoing stored data."""
    if isinstance(stored, dict) and isinstance(incoming, dict):
        paths: list[str] = []
        for key in sorted(set(stored) | set(incoming)):
            sub = f"{path}.{key}" if path else key
            paths.extend(payload_differences(stored.get(key), incoming.get(key), sub))
        return paths
    return [] if stored == incoming else [path or "body"]
