"""Phone numbers: E.164 in, E.164 stored. libphonenumber knows which numbers can exist."""

from __future__ import annotations

from typing import Any

import phonenumbers


def phone_normalise(value: Any) -> str:
    """Return the number in E.164 form, or raise ValueError with a message for people."""
    if not isinstance(value, str) or not value.strip().startswith("+"):
        raise ValueError("Enter the number in international E.164 form, e.g. +447911123456.")
    try:
        number = phonenumbers.parse(value.strip(), None)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(
            "Enter the number in international E.164 form, e.g. +447911123456."
        ) from exc
    if not phonenumbers.is_valid_number(number):
        raise ValueError("This is not a valid phone number for its country code.")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
