"""The single sign-on pages: /oidc/login/ sends the person to the identity provider,
/oidc/callback/ takes them back. Mounted by config/urls.py only when OIDC_ENABLED, so with
the feature off neither URL exists. A refusal is a page that says why, never a 500."""

from __future__ import annotations

import jwt
import requests
from django.conf import settings
from django.contrib import admin
from django.core.exceptions import SuspiciousOperation
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from mozilla_django_oidc.views import (
    OIDCAuthenticationCallbackView,
    OIDCAuthenticationRequestView,
)

from staff.oidc import OidcRefusal, oidc_refusal_record

# What the person reads, and the status: 403 when it is about them, 502 when the provider
# answered wrongly or not at all, 400 for a stale or replayed sign-in attempt.
REFUSALS = {
    "no_role": (
        403,
        "Your {provider} account is not in any group that gives access to Closeloop. "
        "Ask your administrator to add you to one.",
    ),
    "local_account": (
        403,
        "The Closeloop account “{username}” signs in with a password, so it cannot also "
        "sign in through {provider}. Sign in with the password, or ask an Administrator.",
    ),
    "inactive": (403, "Your Closeloop account is deactivated. Ask an Administrator."),
    "provider_denied": (403, "{provider} did not sign you in ({error})."),
    "missing_claim": (
        502,
        "{provider} did not say who you are (its answer has no “{claim}” claim). "
        "Ask your administrator to check the single sign-on settings.",
    ),
    "invalid_answer": (
        502,
        "The answer from {provider} could not be verified, so you were not signed in.",
    ),
    "provider_error": (
        502,
        "{provider} could not be reached or refused to complete the sign-in. "
        "Try again in a few minutes.",
    ),
    "expired": (
        400,
        "This sign-in attempt has expired or was already used. Start again from the sign-in page.",
    ),
}


def refusal_page(request: HttpRequest, refusal: OidcRefusal) -> HttpResponse:
    status, text = REFUSALS[refusal.reason]
    message = text.format(
        provider=settings.OIDC_PROVIDER_NAME,
        username=refusal.username,
        error=refusal.detail.get("error", ""),
        claim=refusal.detail.get("claim", ""),
    )
    return TemplateResponse(
        request,
        "admin/staff/oidc_refused.html",
        {
            **admin.site.each_context(request),
            "is_nav_sidebar_enabled": False,
            "title": "You are not signed in",
            "message": message,
            "login_url": reverse("admin:login"),
        },
        status=status,
    )


class OidcCallbackView(OIDCAuthenticationCallbackView):
    """The library's callback, landing in the admin and explaining every refusal."""

    @property
    def success_url(self) -> str:
        # The library checked `next` when the sign-in started (same host only).
        return self.request.session.get("oidc_login_next") or reverse("admin:index")

    def get(self, request: HttpRequest) -> HttpResponse:
        try:
            return super().get(request)
        except SuspiciousOperation as exc:
            # An unknown state (a replayed or forged callback), a nonce or signature that
            # does not match.
            return self._refused(OidcRefusal("expired", detail={"error": str(exc)[:200]}))
        except jwt.PyJWTError as exc:
            return self._refused(OidcRefusal("invalid_answer", detail={"error": str(exc)[:200]}))
        except requests.RequestException as exc:
            # Token, userinfo or key endpoint down or answering with an error (a code
            # already used, a wrong client secret): the text names the URL and status only.
            return self._refused(OidcRefusal("provider_error", detail={"error": str(exc)[:200]}))

    def login_failure(self) -> HttpResponse:
        refusal = getattr(self.request, "oidc_refusal", None)
        if refusal is not None:
            # Decided and recorded by staff.oidc.oidc_user_sync or the backend.
            return refusal_page(self.request, refusal)
        error = self.request.GET.get("error", "")
        if error:
            return self._refused(OidcRefusal("provider_denied", detail={"error": error[:100]}))
        return self._refused(OidcRefusal("expired"))

    def _refused(self, refusal: OidcRefusal) -> HttpResponse:
        oidc_refusal_record(refusal=refusal, request=self.request)
        return refusal_page(self.request, refusal)


def oidc_urls() -> list:
    """Mounted by config/urls.py at oidc/ when OIDC_ENABLED. The provider must list
    <site>/oidc/callback/ as a redirect URI of the client."""
    return [
        path("login/", OIDCAuthenticationRequestView.as_view(), name="staff-oidc-login"),
        path("callback/", OidcCallbackView.as_view(), name="staff-oidc-callback"),
    ]
