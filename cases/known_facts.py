"""Known facts for identity checks (date of birth, postcode, account last-4).

They are never stored in clear. Each is normalised, then hashed with HMAC-SHA256 under
KNOWN_FACTS_KEY (kept outside the database) and a per-customer salt. A date of birth has only
~36,500 likely values, so a plain hash in a leaked dump would fall in seconds; the key makes
an offline guess impossible without also stealing the server's environment, while staying
fast enough for bulk ingest (a slow KDF per fact would cap trigger throughput).
"""

from __future__ import annotations

import datetime as dt
import hmac
import re
import secrets
from typing import Any

from django.conf import settings

KNOWN_FACT_KINDS = ("date_of_birth", "postcode", "account_last4")


def known_fact_normalise(kind: str, value: Any) -> str:
    """Canonical form of a fact, or ValueError saying what is expected."""
    if kind == "date_of_birth":
        try:
            day = dt.date.fromisoformat(str(value).strip())
        except ValueError as exc:
            raise ValueError("Must be a date as YYYY-MM-DD.") from exc
        if day > dt.date.today() or day.year < 1900:
            raise ValueError("Must be a real date of birth.")
        return day.isoformat()
    if kind == "postcode":
        text = re.sub(r"\s+", "", str(value)).upper() if isinstance(value, str) else ""
        if not 2 <= len(text) <= 12 or not text.replace("-", "").isalnum():
            raise ValueError("Must be a postcode of 2 to 12 letters and digits.")
        return text
    if kind == "account_last4":
        text = str(value).strip() if isinstance(value, (str, int)) else ""
        if not re.fullmatch(r"\d{4}", text):
            raise ValueError("Must be exactly 4 digits.")
        return text
    raise ValueError(f"Unknown known fact {kind!r}.")


def _digest(salt: str, kind: str, normalised: str) -> str:
    message = f"{salt}\x1f{kind}\x1f{normalised}".encode()
    # One-shot HMAC (OpenSSL, no Python hmac object): six per trigger on the ingest path.
    return hmac.digest(settings.KNOWN_FACTS_KEY.encode(), message, "sha256").hex()


def known_fact_new_salt() -> str:
    return secrets.token_hex(16)


def known_fact_hash(*, salt: str, kind: str, normalised: str) -> str:
    return _digest(salt, kind, normalised)


def known_fact_fingerprint(*, kind: str, normalised: str) -> str:
    """An unsalted keyed digest, used only to tell whether two triggers carried the same
    fact (idempotency) without keeping the fact itself."""
    return _digest("", kind, normalised)


def known_fact_matches(*, salt: str, kind: str, stored_hash: str, candidate: Any) -> bool:
    if not stored_hash or not salt:
        return False
    try:
        normalised = known_fact_normalise(kind, candidate)
    except ValueError:
        return False
    return hmac.compare_digest(stored_hash, _digest(salt, kind, normalised))
