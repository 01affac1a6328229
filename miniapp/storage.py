"""Where customers' documents are kept: a private folder (PRIVATE_MEDIA_ROOT) that no
URL serves — not MEDIA_URL, not STATIC — read back only by the writeback that files
them with the system of record."""

from __future__ import annotations

from django.conf import settings
from django.core.files.storage import FileSystemStorage


class PrivateStorage(FileSystemStorage):
    def url(self, name: str | None) -> str:
        raise ValueError("Private documents have no URL; they are never served.")


def private_storage() -> PrivateStorage:
    # Built per call (cheap), so the location follows the settings a test overrides.
    return PrivateStorage(
        location=settings.PRIVATE_MEDIA_ROOT,
        file_permissions_mode=0o600,
        directory_permissions_mode=0o700,
    )
