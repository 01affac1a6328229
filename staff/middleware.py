"""Two middlewares for everything under /admin/: two-factor enforcement, and marking the
request for the audit trail.

The admin's own pages and the custom ones mounted beside it (metrics dashboard, demo phone,
the agents' pages) all live under the admin prefix, so a middleware covers them all,
including pages added later, where an AdminSite override would miss views that are not
wrapped in admin_view."""

from __future__ import annotations

from functools import cache
from urllib.parse import urlencode

from django.conf import settings
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse


@cache
def _admin_prefix() -> str:
    return reverse("admin:index")


def is_admin_path(path: str) -> bool:
    return path.startswith(_admin_prefix())


@cache
def _open_paths() -> frozenset[str]:
    """What a signed-in but unverified person may still reach: signing in and out, and
    the two-factor pages themselves."""
    return frozenset(
        reverse(name)
        for name in ("admin:login", "admin:logout", "staff-2fa-enrol", "staff-2fa-verify")
    )


def two_factor_pending(request: HttpRequest) -> bool:
    """True for a staff member who signed in with a password but has not yet given a code,
    while STAFF_2FA_REQUIRED is on."""
    user = request.user
    return (
        settings.STAFF_2FA_REQUIRED
        and user.is_authenticated
        and user.is_active
        and user.is_staff
        and not user.is_verified()
    )


class StaffTwoFactorMiddleware:
    """Sends an unverified staff member from any admin page to the code page (or to
    enrolment when they have no authenticator yet). After django_otp's OTPMiddleware."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest):
        path = request.path_info
        if is_admin_path(path) and path not in _open_paths() and two_factor_pending(request):
            from staff.services import totp_confirmed_device

            has_device = totp_confirmed_device(user=request.user) is not None
            target = reverse("staff-2fa-verify" if has_device else "staff-2fa-enrol")
            return HttpResponseRedirect(f"{target}?{urlencode({'next': request.get_full_path()})}")
        return self.get_response(request)


class StaffAuditMiddleware:
    """Marks admin requests, so changes made while serving them are recorded with who made
    them (staff/tracking.py). Other requests pass untouched."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest):
        if not is_admin_path(request.path_info):
            return self.get_response(request)
        from staff.tracking import staff_request

        with staff_request(request):
            return self.get_response(request)
