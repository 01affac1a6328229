"""Field checks for what callers post. Each `clean_*` returns the fields to store or raises
Invalid with {field: [message]}, the shape the demo core answers with a 422."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

CURRENCY = re.compile(r"[A-Z]{3}")
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
E164 = re.compile(r"\+[1-9]\d{6,14}")
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
MAX_INSTALMENTS = 120
MAX_TEXT = 5000
MAX_SHORT = 200


class Invalid(Exception):
    def __init__(self, errors: dict[str, list[str]]):
        self.errors = errors
        super().__init__(errors)


class Checker:
    """Collects every field's problem, so one 422 lists all of them."""

    def __init__(self, payload: dict[str, Any]):
        self.payload = payload
        self.errors: dict[str, list[str]] = {}
        self.cleaned: dict[str, Any] = {}

    def fail(self, field: str, message: str) -> None:
        self.errors.setdefault(field, []).append(message)

    def amount(self, value: Any, field: str) -> str | None:
        if value is None:
            self.fail(field, "This field is required.")
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.fail(field, 'Send the amount as a decimal string such as "120.00".')
            return None
        try:
            amount = Decimal(str(value))
        except InvalidOperation:
            self.fail(field, f"{value!r} is not a decimal amount.")
            return None
        if not amount.is_finite() or amount <= 0:
            self.fail(field, "The amount must be greater than zero.")
        elif amount.as_tuple().exponent < -2:
            self.fail(field, "The amount may have at most 2 decimal places.")
        elif amount >= Decimal("1e12"):
            self.fail(field, "The amount is too large.")
        else:
            return str(amount.quantize(Decimal("0.01")))
        return None

    def date(self, value: Any, field: str) -> str | None:
        if value is None:
            self.fail(field, "This field is required.")
            return None
        if not isinstance(value, str) or not ISO_DATE.fullmatch(value):
            self.fail(field, "Send the date as YYYY-MM-DD.")
            return None
        try:
            date.fromisoformat(value)
        except ValueError:
            self.fail(field, f"{value} is not a calendar date.")
            return None
        return value

    def text(self, field: str, *, required: bool, limit: int = MAX_SHORT) -> None:
        value = self.payload.get(field)
        if value is None or value == "":
            if required:
                self.fail(field, "This field is required.")
            return
        if not isinstance(value, str):
            self.fail(field, "Must be a string.")
        elif len(value) > limit:
            self.fail(field, f"At most {limit} characters.")
        elif not value.strip():
            self.fail(field, "Must not be blank.")
        else:
            self.cleaned[field] = value

    def currency(self) -> None:
        value = self.payload.get("currency")
        if value is None:
            self.fail("currency", "This field is required.")
        elif not isinstance(value, str) or not CURRENCY.fullmatch(value):
            self.fail("currency", "Use a three-letter ISO 4217 code such as GBP.")
        else:
            self.cleaned["currency"] = value

    def external_id(self) -> None:
        self.text("external_id", required=False)
        self.cleaned.setdefault("external_id", None)

    def result(self) -> dict[str, Any]:
        if self.errors:
            raise Invalid(self.errors)
        return self.cleaned


def clean_arrangement(payload: dict[str, Any]) -> dict[str, Any]:
    check = Checker(payload)
    kind = payload.get("type")
    if kind not in ("promise", "plan"):
        check.fail("type", 'Must be "promise" or "plan".')
    else:
        check.cleaned["type"] = kind
    check.cleaned["amount"] = check.amount(payload.get("amount"), "amount")
    check.currency()
    if kind == "promise":
        check.cleaned["date"] = check.date(payload.get("date"), "date")
    elif kind == "plan":
        instalments = payload.get("instalments")
        if not isinstance(instalments, list) or not instalments:
            check.fail("instalments", "Send a non-empty list of {date, amount}.")
        elif len(instalments) > MAX_INSTALMENTS:
            check.fail("instalments", f"At most {MAX_INSTALMENTS} instalments.")
        else:
            cleaned = []
            for index, item in enumerate(instalments):
                prefix = f"instalments.{index}"
                if not isinstance(item, dict):
                    check.fail(prefix, "Each instalment is an object {date, amount}.")
                    continue
                cleaned.append(
                    {
                        "date": check.date(item.get("date"), f"{prefix}.date"),
                        "amount": check.amount(item.get("amount"), f"{prefix}.amount"),
                    }
                )
            check.cleaned["instalments"] = cleaned
    check.external_id()
    return check.result()


def clean_payment(payload: dict[str, Any]) -> dict[str, Any]:
    check = Checker(payload)
    check.cleaned["amount"] = check.amount(payload.get("amount"), "amount")
    check.currency()
    check.text("provider_reference", required=True)
    check.external_id()
    return check.result()


def clean_contact(payload: dict[str, Any]) -> dict[str, Any]:
    check = Checker(payload)
    changes = {}
    phone = payload.get("phone")
    if phone is not None:
        if not isinstance(phone, str) or not E164.fullmatch(phone):
            check.fail("phone", "Use E.164 format such as +447911123456.")
        else:
            changes["phone"] = phone
    email = payload.get("email")
    if email is not None:
        if not isinstance(email, str) or len(email) > 254 or not EMAIL.fullmatch(email):
            check.fail("email", "Enter a valid email address.")
        else:
            changes["email"] = email
    address = payload.get("address")
    if address is not None:
        text = isinstance(address, str) and address.strip() and len(address) <= 500
        lines = (
            isinstance(address, dict)
            and address
            and all(isinstance(k, str) and isinstance(v, str) for k, v in address.items())
        )
        if text or lines:
            changes["address"] = address
        else:
            check.fail("address", "Send the address as text or an object of text lines.")
    if phone is None and email is None and address is None:
        check.fail("contact", "Send at least one of phone, email or address.")
    check.cleaned["changes"] = changes
    check.external_id()
    return check.result()


def clean_note(payload: dict[str, Any]) -> dict[str, Any]:
    check = Checker(payload)
    check.text("text", required=True, limit=MAX_TEXT)
    check.text("category", required=False)
    check.cleaned.setdefault("category", None)
    check.external_id()
    return check.result()


def clean_flag(payload: dict[str, Any]) -> dict[str, Any]:
    check = Checker(payload)
    check.text("flag", required=True, limit=64)
    check.external_id()
    return check.result()


def clean_document(payload: dict[str, Any]) -> dict[str, Any]:
    """`payload` is the parsed multipart form: text fields plus "file" as
    {filename, content_type, content}."""
    check = Checker(payload)
    upload = payload.get("file")
    if not isinstance(upload, dict):
        check.fail("file", 'Attach the document as the multipart file field "file".')
    elif not upload["content"]:
        check.fail("file", "The file is empty.")
    else:
        check.cleaned["file"] = upload
    check.text("document_type", required=True, limit=64)
    check.external_id()
    return check.result()
