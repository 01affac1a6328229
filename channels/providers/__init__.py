"""Which provider sends each channel: SMS_PROVIDER, EMAIL_PROVIDER and WHATSAPP_PROVIDER name
a key in PROVIDERS.

Instances are cached, but keyed by the settings they were built from: a changed setting
(override_settings in tests, or a reloaded process) gets a provider built from the new values
instead of a stale one, and the cache stays small because settings rarely change.
"""

from __future__ import annotations

import threading

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from channels.providers.base import Provider
from channels.providers.email import SmtpEmailProvider
from channels.providers.outbox import OutboxEmailProvider, OutboxSmsProvider, OutboxWhatsAppProvider
from channels.providers.twilio import TwilioSmsProvider
from channels.providers.whatsapp import WhatsAppCloudProvider

PROVIDERS: dict[tuple[str, str], type[Provider]] = {
    (cls.channel, cls.key): cls
    for cls in (
        OutboxSmsProvider,
        OutboxEmailProvider,
        OutboxWhatsAppProvider,
        TwilioSmsProvider,
        SmtpEmailProvider,
        WhatsAppCloudProvider,
    )
}

# The setting that chooses each channel's provider.
CHANNEL_SETTINGS = {
    "sms": "SMS_PROVIDER",
    "email": "EMAIL_PROVIDER",
    "whatsapp": "WHATSAPP_PROVIDER",
}

_cache: dict[tuple, Provider] = {}
_cache_lock = threading.Lock()


def provider_for(channel: str) -> Provider:
    """The configured provider for a channel (sms, email, whatsapp)."""
    setting = CHANNEL_SETTINGS.get(channel)
    if setting is None:
        raise ImproperlyConfigured(
            f"No provider setting for channel {channel!r}; channels are "
            f"{', '.join(sorted(CHANNEL_SETTINGS))}."
        )
    key = getattr(settings, setting)
    cls = PROVIDERS.get((channel, key))
    if cls is None:
        choices = sorted(k for c, k in PROVIDERS if c == channel)
        raise ImproperlyConfigured(
            f"{setting}={key!r} is not a provider for {channel}; choose one of "
            f"{', '.join(choices)}."
        )
    cache_key = (
        channel,
        key,
        settings.OUTREACH_PROVIDER_TIMEOUT,
        *(getattr(settings, name) for name in cls.settings_used),
    )
    provider = _cache.get(cache_key)
    if provider is None:
        with _cache_lock:
            provider = _cache.get(cache_key)
            if provider is None:
                provider = cls()
                _cache[cache_key] = provider
    return provider
