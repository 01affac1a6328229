"""The "Sign in with <provider>" link on the admin login page (templates/admin/login.html);
nothing at all while OIDC_ENABLED is off."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django import template
from django.conf import settings
from django.urls import reverse

register = template.Library()


@register.inclusion_tag("admin/staff/_oidc_login.html", takes_context=True)
def oidc_login(context: template.Context) -> dict[str, Any]:
    if not settings.OIDC_ENABLED:
        return {"enabled": False}
    url = reverse("staff-oidc-login")
    # The login page's own `next` (checked again by the library before it is followed).
    if next_url := context.get("next"):
        url = f"{url}?{urlencode({'next': next_url})}"
    return {"enabled": True, "url": url, "provider": settings.OIDC_PROVIDER_NAME}
