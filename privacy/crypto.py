"""Encryption at rest with a rotatable key (docs/privacy.md).

Fernet (AES-128-CBC with an HMAC-SHA256, from `cryptography`) through MultiFernet:
FIELD_ENCRYPTION_KEYS lists keys newest first; the first encrypts, every one decrypts, so
data written under an older key stays readable while `manage.py privacy rotate-keys`
re-encrypts it under the newest. A token authenticates its content: a row or file edited
in the database or on disk fails to decrypt instead of decrypting to something else.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

# Free text sealed inside JSON that is kept as written (a case event's note, an audit entry):
# the prefix tells readers it is ciphertext, and which texts `text_open` must decrypt.
SEALED_PREFIX = "encrypted:"
# Every Fernet token starts with its version byte 0x80, which base64 writes as "gAAAAA".
TOKEN_START = b"gAAAAA"


class DecryptionFailed(Exception):
    """A token that none of FIELD_ENCRYPTION_KEYS opens: the key that wrote it was removed
    too early, or the stored value was changed."""


def keys_check(keys: Sequence[str]) -> list[str]:
    """Problems with a list of keys, for the system check; [] when every key is usable."""
    problems = []
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            problems.append(
                f"FIELD_ENCRYPTION_KEYS: key #{position} is not a Fernet key (32 bytes, "
                "URL-safe base64; make one with `python manage.py privacy generate-key`)."
            )
    return problems


@lru_cache(maxsize=4)
def _fernets(keys: tuple[str, ...]) -> tuple[MultiFernet, Fernet]:
    if not keys:
        raise ImproperlyConfigured(
            "FIELD_ENCRYPTION_KEYS is not set: personal fields and documents are encrypted at "
            "rest and need a key (`python manage.py privacy generate-key` makes one)."
        )
    problems = keys_check(keys)
    if problems:
        raise ImproperlyConfigured(" ".join(problems))
    fernets = [Fernet(key) for key in keys]
    return MultiFernet(fernets), fernets[0]


def _keys() -> tuple[str, ...]:
    # Read per call (the tuple is the cache key), so a test's settings override applies.
    return tuple(settings.FIELD_ENCRYPTION_KEYS)


def bytes_encrypt(data: bytes) -> bytes:
    return _fernets(_keys())[0].encrypt(data)


def bytes_decrypt(token: bytes) -> bytes:
    try:
        return _fernets(_keys())[0].decrypt(token)
    except InvalidToken:
        raise DecryptionFailed(
            "A value encrypted at rest could not be decrypted with any of "
            "FIELD_ENCRYPTION_KEYS (its key was removed, or the stored value was altered)."
        ) from None


def text_encrypt(text: str) -> str:
    return bytes_encrypt(text.encode()).decode("ascii")


def text_decrypt(token: str) -> str:
    return bytes_decrypt(token.encode("ascii")).decode()


def is_token(data: bytes | str) -> bool:
    return (data.encode("ascii", "ignore") if isinstance(data, str) else data).startswith(
        TOKEN_START
    )


def token_current(token: bytes) -> bool:
    """True when the newest key opens the token: rotation leaves it as it is."""
    try:
        _fernets(_keys())[1].decrypt(token)
    except InvalidToken:
        return False
    return True


def token_rotate(token: bytes) -> bytes:
    """The token's content under the newest key (MultiFernet.rotate keeps its timestamp)."""
    try:
        return _fernets(_keys())[0].rotate(token)
    except InvalidToken:
        raise DecryptionFailed(
            "A value could not be re-encrypted: none of FIELD_ENCRYPTION_KEYS opens it."
        ) from None


# --- free text sealed inside kept JSON -------------------------------------------------------


def text_seal(text: str) -> str:
    """Free text (an agent's note, a customer's message) as it is stored inside JSON that is
    kept as written: "encrypted:<token>". Empty text stays empty."""
    return f"{SEALED_PREFIX}{text_encrypt(text)}" if text else text


def text_open(value: Any) -> Any:
    """The plain text of a sealed value; anything else (older plain notes) as it is."""
    if isinstance(value, str) and value.startswith(SEALED_PREFIX):
        return text_decrypt(value.removeprefix(SEALED_PREFIX))
    return value


def sealed_opened(value: Any) -> Any:
    """A JSON value with every sealed text in it opened, at any depth: for pages that show
    staff what an event or an audit entry says."""
    if isinstance(value, dict):
        return {key: sealed_opened(item) for key, item in value.items()}
    if isinstance(value, list):
        return [sealed_opened(item) for item in value]
    try:
        return text_open(value)
    except DecryptionFailed:
        return "[encrypted under a key no longer configured]"
