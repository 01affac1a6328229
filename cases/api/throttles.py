"""Per-API-key request budgets on /api/v1/: fixed windows counted in the shared cache
(miniapp/ratelimit.py), so every web process on every host spends from one budget."""

from __future__ import annotations

from django.conf import settings
from rest_framework.throttling import BaseThrottle

from cases.models import ApiClient
from miniapp.ratelimit import Rule, rate_parse, rate_spend


def api_rate_rule(client: ApiClient) -> Rule | None:
    """The client's own limit if it has one, else API_RATE_LIMIT; None when unlimited."""
    rate = rate_parse(client.rate_limit or settings.API_RATE_LIMIT)
    if rate is None:
        return None
    limit, window_seconds = rate
    return Rule("api_key", limit, window_seconds)


class ApiKeyRateThrottle(BaseThrottle):
    """Runs after authentication; requests that are not an API client's (staff sessions on
    the events export) are left to their own rules."""

    def allow_request(self, request, view) -> bool:
        self.retry_after = None
        client = request.auth
        if not isinstance(client, ApiClient):
            return True
        rule = api_rate_rule(client)
        if rule is None:
            return True
        self.retry_after = rate_spend(rule=rule, subject=f"api-client:{client.pk}")
        return self.retry_after is None

    def wait(self) -> int | None:
        return self.retry_after
