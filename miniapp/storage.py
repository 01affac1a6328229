"""Where customers' documents are kept: a private folder (PRIVATE_MEDIA_ROOT) that no
URL serves — not MEDIA_URL, not STATIC — read back only by the writeback that files
them with the system of record.

Each file is encrypted at rest with FIELD_ENCRYPTION_KEYS (privacy/crypto.py): what lies on
disk is a Fernet token, so a copied folder or backup shows nothing without the key. The
SHA-256 kept with a document is of its plain bytes, checked again when it is read back.
Documents are a few megabytes at most (the offer's max_file_mb), so each is encrypted whole,
in memory.
"""

from __future__ import annotations

import os

from django.conf import settings
from django.core.files.base import ContentFile, File
from django.core.files.storage import FileSystemStorage

from privacy.crypto import bytes_decrypt, bytes_encrypt, is_token


class DocumentNotEncrypted(Exception):
    """A file in the private store that is not a token: written around this storage."""


class PrivateStorage(FileSystemStorage):
    def url(self, name: str | None) -> str:
        raise ValueError("Private documents have no URL; they are never served.")

    def _save(self, name: str, content: File) -> str:
        content.seek(0)
        plain = b"".join(content.chunks())
        return super()._save(name, ContentFile(bytes_encrypt(plain)))

    def _open(self, name: str, mode: str = "rb") -> File:
        if mode != "rb":
            raise ValueError("Private documents are read whole and written only by save().")
        with super()._open(name, "rb") as handle:
            stored = handle.read()
        if not is_token(stored):
            raise DocumentNotEncrypted(
                f"{name} is not encrypted; `python manage.py privacy rotate-keys` encrypts it."
            )
        return ContentFile(bytes_decrypt(stored), name=name)

    def raw_read(self, name: str) -> bytes:
        """The bytes on disk (a token), for key rotation."""
        with super()._open(name, "rb") as handle:
            return handle.read()

    def raw_replace(self, name: str, data: bytes) -> None:
        """Overwrite a stored file in place with `data` (key rotation: a new token of the same
        content), through a temporary file and a rename so a reader never sees half of it."""
        path = self.path(name)
        temporary = f"{path}.rotating"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)


def private_storage() -> PrivateStorage:
    # Built per call (cheap), so the location follows the settings a test overrides.
    return PrivateStorage(
        location=settings.PRIVATE_MEDIA_ROOT,
        file_permissions_mode=0o600,
        directory_permissions_mode=0o700,
    )
