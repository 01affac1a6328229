"""What the HTTP providers (Twilio, WhatsApp Cloud API) share: the check for their
credentials, and one call through config.http with "no answer" and "come back later" answers
made retryable the same way."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from channels.providers.base import ProviderError
from config.http import HttpAnswer, HttpFailure, http_request


def provider_call(provider: str, method: str, url: str, **kwargs: Any) -> HttpAnswer:
    """One HTTP call to a provider. No answer (timeout, refused, reset) is retryable; so is
    429 and any 5xx. Other answers are returned for the provider to read."""
    try:
        answer = http_request(method, url, **kwargs)
    except HttpFailure as failure:
        # failure.detail names the host and the phase, never the request body.
        raise ProviderError(
            f"{provider}: no answer ({failure.kind}: {failure.detail})",
            permanent=False,
            code=failure.kind,
        ) from failure
    if answer.status == 429 or answer.status >= 500:
        raise ProviderError(
            f"{provider}: HTTP {answer.status}, try again later",
            permanent=False,
            code=str(answer.status),
        )
    return answer


def require_settings(names: Iterable[str], *, chosen_by: str) -> None:
    """Refuse to build a provider without its credentials, naming every one missing, instead
    of failing later on each message with the provider's 401."""
    missing = [name for name in names if not getattr(settings, name)]
    if missing:
        raise ImproperlyConfigured(f"{chosen_by} needs {', '.join(missing)}.")
