"""Model fields whose values are encrypted at rest (privacy/crypto.py).

The column holds a Fernet token as text; the model holds the plain value. A token is
randomised, so equal values give different tokens: the database cannot compare, sort or
search these columns, and every lookup other than `isnull` is refused with a FieldError
rather than silently matching nothing. Use them for personal data that is read, never
searched (an address, free-text notes); a field staff search by stays plain.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.core.exceptions import FieldError
from django.db import models

from privacy.crypto import text_decrypt, text_encrypt


class _Encrypted:
    """Shared by both fields: the value is made into text, then encrypted, on the way in."""

    def get_internal_type(self) -> str:
        # A text column on every database; no JSON operators apply to ciphertext anyway.
        return "TextField"

    def get_lookup(self, lookup_name: str):
        if lookup_name == "isnull":
            return super().get_lookup(lookup_name)
        raise FieldError(
            f"{self.model.__name__}.{self.name} is encrypted at rest: it can only be tested "
            f"with isnull, not with {lookup_name!r}."
        )

    def get_transform(self, lookup_name: str):
        raise FieldError(
            f"{self.model.__name__}.{self.name} is encrypted at rest: {lookup_name!r} cannot "
            "reach into it."
        )

    def get_db_prep_value(self, value: Any, connection: Any, prepared: bool = False) -> Any:
        if not prepared:
            value = self.get_prep_value(value)
        return None if value is None else text_encrypt(value)


class EncryptedTextField(_Encrypted, models.TextField):
    description = "Text, encrypted at rest"

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> str | None:
        return None if value is None else text_decrypt(value)


class EncryptedJSONField(_Encrypted, models.Field):
    """A JSON value (a dict, list, string, number…) stored as the token of its JSON text."""

    description = "A JSON value, encrypted at rest"
    empty_values = [None, "", [], (), {}]

    def __init__(self, *args: Any, encoder: type[json.JSONEncoder] | None = None, **kwargs: Any):
        self.encoder = encoder
        super().__init__(*args, **kwargs)

    def deconstruct(self) -> tuple[str, str, list, dict]:
        name, path, args, kwargs = super().deconstruct()
        if self.encoder is not None:
            kwargs["encoder"] = self.encoder
        return name, path, args, kwargs

    def to_python(self, value: Any) -> Any:
        return value  # already a JSON value: forms.JSONField parsed it

    def get_prep_value(self, value: Any) -> str | None:
        return None if value is None else json.dumps(value, cls=self.encoder)

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> Any:
        return None if value is None else json.loads(text_decrypt(value))

    def value_to_string(self, obj: models.Model) -> Any:
        return self.value_from_object(obj)  # serialisers (dumpdata) nest it as JSON

    def formfield(self, **kwargs: Any) -> forms.Field:
        return super().formfield(
            **{"form_class": forms.JSONField, "encoder": self.encoder, **kwargs}
        )
