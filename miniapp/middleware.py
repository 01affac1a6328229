"""Browser-facing protections for the customer pages under /m/: a Content-Security-Policy
and per-IP/per-link rate limits. CSRF (CsrfViewMiddleware), clickjacking (X-Frame-Options
DENY) and no-store caching (miniapp.views.customer_page) are set elsewhere.

Both apply to /m/ only: the staff side keeps Django's defaults because Swagger UI at
/api/docs/ runs an inline script and inline styles, which this policy forbids.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from miniapp.ratelimit import rate_rules, rate_spend, rate_spent

MINIAPP_PREFIX = "/m/"
# Where Stripe's hosted Checkout lives: the pay step's form is answered with a redirect there,
# and browsers hold redirects after a form post to form-action.
STRIPE_CHECKOUT_ORIGIN = "https://checkout.stripe.com"
_TOKEN_PATH = re.compile(r"^/m/(?P<token>[^/]+)/(?P<rest>.*)$")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


def csp_policy() -> str:
    """No inline script or style anywhere on the mini-app; only our own origin, plus the
    payment provider's page as a form target and the tenant's logo host as an image source."""
    form_action = ["'self'"]
    if getattr(settings, "PAYMENT_PROVIDER", "") == "stripe":
        form_action.append(STRIPE_CHECKOUT_ORIGIN)
    img_src = ["'self'", "data:"]
    logo_origin = _origin(settings.BRAND_LOGO_URL)
    if logo_origin:
        img_src.append(logo_origin)
    directives = {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": img_src,
        "form-action": form_action,
        "frame-ancestors": ["'none'"],
        "base-uri": ["'none'"],
        "object-src": ["'none'"],
    }
    return "; ".join(f"{name} {' '.join(values)}" for name, values in directives.items())


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if request.path_info.startswith(MINIAPP_PREFIX):
            response.setdefault("Content-Security-Policy", csp_policy())
        return response


def _too_many(request: HttpRequest, retry_after: int) -> HttpResponse:
    response = render(
        request,
        "miniapp/429.html",
        {"brand": settings.BRAND_NAME, "retry_minutes": math.ceil(retry_after / 60)},
        status=429,
    )
    response["Retry-After"] = str(retry_after)
    response["Cache-Control"] = "no-store, max-age=0"
    return response


class RateLimitMiddleware:
    """Spends the request from its IP's and its link's budgets before any view runs, and
    from the stricter identity budgets for answers posted to the verify step. A 404 under
    /m/ (a link that does not exist) is charged afterwards to the IP's unknown-link budget,
    which once spent refuses every /m/ page from that address for the rest of its hour."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info
        match = _TOKEN_PATH.match(path)
        if not settings.MINIAPP_RATE_LIMITS or not match:
            # The brand stylesheet (/m/brand.css) is the same for everyone and cacheable.
            return self.get_response(request)
        rules = rate_rules()
        client_ip = request.META.get("REMOTE_ADDR", "")
        token = match["token"]
        waits = [
            rate_spent(rule=rules["unknown_ip"], subject=client_ip),
            rate_spend(rule=rules["pages_ip"], subject=client_ip),
            rate_spend(rule=rules["pages_link"], subject=token),
        ]
        if request.method == "POST" and match["rest"] == "verify/":
            waits.append(rate_spend(rule=rules["codes_ip"], subject=client_ip))
            waits.append(rate_spend(rule=rules["codes_link"], subject=token))
        retry_after = max((wait for wait in waits if wait), default=None)
        if retry_after:
            return _too_many(request, retry_after)
        response = self.get_response(request)
        if response.status_code == 404:
            rate_spend(rule=rules["unknown_ip"], subject=client_ip)
        return response
