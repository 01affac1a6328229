"""System checks for the field-encryption keys (privacy/crypto.py)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks

from privacy.crypto import keys_check


def encryption_keys_check(app_configs: Any, **kwargs: Any) -> list[checks.CheckMessage]:
    """A malformed key stops every command that runs checks (runserver, migrate, qcluster's
    start), instead of failing the first customer written."""
    return [checks.Error(problem, id="privacy.E001") for problem in keys_check(_keys())]


def encryption_keys_deploy_check(app_configs: Any, **kwargs: Any) -> list[checks.CheckMessage]:
    """`check --deploy`: production needs its own key, never none and never the fixed
    development key that DEBUG falls back to."""
    keys = _keys()
    if not keys:
        return [
            checks.Error(
                "FIELD_ENCRYPTION_KEYS is not set: customers' addresses, notes and documents "
                "are encrypted at rest and cannot be written without a key.",
                hint="Generate one with `python manage.py privacy generate-key` and set "
                "FIELD_ENCRYPTION_KEYS to it; keep it outside the database and its backups.",
                id="privacy.E002",
            )
        ]
    if settings.DEBUG_FIELD_ENCRYPTION_KEY in keys:
        return [
            checks.Error(
                "FIELD_ENCRYPTION_KEYS includes the fixed development key, which is public "
                "(it is in the source).",
                hint="Generate a key with `python manage.py privacy generate-key`, put it "
                "first, run `python manage.py privacy rotate-keys`, then drop the development "
                "key.",
                id="privacy.E003",
            )
        ]
    return []


def _keys() -> list[str]:
    return list(getattr(settings, "FIELD_ENCRYPTION_KEYS", []))
