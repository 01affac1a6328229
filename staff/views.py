"""The two-factor pages: enrol an authenticator app (QR code and secret), and give a code
after signing in. Mounted by config/urls.py under admin/staff/two-factor/; the only admin
pages an unverified staff member may reach (staff/middleware.py)."""

from __future__ import annotations

from base64 import b32encode

import segno
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.http import url_has_allowed_host_and_scheme

from staff.forms import TokenForm
from staff.services import totp_check, totp_confirmed_device, totp_pending_device


def _next_url(request: HttpRequest) -> str:
    wanted = request.POST.get("next") or request.GET.get("next") or ""
    safe = url_has_allowed_host_and_scheme(
        wanted, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    )
    return wanted if safe else reverse("admin:index")


def _page(request: HttpRequest, template: str, status: int = 200, **context) -> HttpResponse:
    return TemplateResponse(
        request,
        f"admin/staff/{template}",
        {
            **admin.site.each_context(request),
            # The apps are out of reach until the code is given: no sidebar of dead links.
            "is_nav_sidebar_enabled": False,
            "next": _next_url(request),
            **context,
        },
        status=status,
    )


def _secret_groups(device) -> str:
    """The base32 secret in groups of four, for typing into an app that cannot scan."""
    secret = b32encode(device.bin_key).decode().rstrip("=")
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


def _code_page(request: HttpRequest, device, template: str, **context) -> HttpResponse:
    """Both pages take a code: it confirms a new device or verifies with the known one."""
    form = TokenForm(request.POST or None)
    status, error = 200, ""
    if form.is_bound:
        status = 400
        if form.is_valid():
            result = totp_check(request=request, device=device, token=form.cleaned_data["token"])
            if result.device is not None:
                return redirect(_next_url(request))
            status, error = (429 if result.throttled else 400), result.error
    return _page(request, template, status=status, form=form, error=error, **context)


def enrol(request: HttpRequest) -> HttpResponse:
    if request.user.is_verified():
        return redirect(_next_url(request))
    if totp_confirmed_device(user=request.user) is not None:
        # A confirmed device is replaced only after an Administrator resets it.
        return redirect(f"{reverse('staff-2fa-verify')}?{request.GET.urlencode()}")
    device = totp_pending_device(user=request.user)
    return _code_page(
        request,
        device,
        "enrol.html",
        title="Set up two-factor sign-in",
        qr_svg=segno.make(device.config_url, error="m").svg_inline(scale=5, border=2),
        secret=_secret_groups(device),
    )


def verify(request: HttpRequest) -> HttpResponse:
    if request.user.is_verified():
        return redirect(_next_url(request))
    device = totp_confirmed_device(user=request.user)
    if device is None:
        return redirect(f"{reverse('staff-2fa-enrol')}?{request.GET.urlencode()}")
    return _code_page(request, device, "verify.html", title="Enter your sign-in code")


def admin_urls() -> list:
    """Mounted by config/urls.py at admin/staff/two-factor/, behind the admin's staff login."""
    return [
        path("enrol/", admin.site.admin_view(enrol), name="staff-2fa-enrol"),
        path("verify/", admin.site.admin_view(verify), name="staff-2fa-verify"),
    ]
