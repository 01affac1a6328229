"""Staff services: the audit trail's one writer, sign-in throttles and TOTP enrolment.

Every audit entry is written by `audit_record`: the admin's change tracking
(staff/tracking.py), the sign-in signals, the two-factor pages, the agents' case actions and
the mini-app's code lockout all call it."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Model
from django.http import HttpRequest
from django_otp.plugins.otp_totp.models import TOTPDevice

from miniapp.ratelimit import Rule, rate_spend, rate_spent
from staff.models import AuditEntry, AuditKind

SECURITY_ACTIONS = frozenset(
    {
        "login",
        "login_failed",
        "login_throttled",
        "logout",
        "otp_enrolled",
        "otp_verified",
        "otp_failed",
        "otp_throttled",
        "otp_reset",
        "customer_code_lockout",
        "sso_login",
        "sso_refused",
    }
)
HIDDEN = "(hidden)"
# Names of fields whose values never enter the trail: passwords, keys, hashes, salts,
# tokens. The trail says that one changed, never to what.
SECRET_MARKERS = ("password", "secret", "token", "salt", "hash")
SECRET_NAMES = frozenset({"key"})


PERSONAL = "(personal data)"
# Models whose rows are about a customer: the trail keeps that they changed, never the
# values, so an erasure (privacy/) leaves nothing behind in this append-only table. Fields
# encrypted at rest (privacy/fields.py) are treated the same way on every model.
PERSONAL_FIELDS = {
    "cases.customer": frozenset({"external_id", "name", "phone", "email", "whatsapp"}),
}


def is_personal_field(target: Model | None, name: str) -> bool:
    from privacy.fields import EncryptedJSONField, EncryptedTextField

    if target is None:
        return False
    if name in PERSONAL_FIELDS.get(target._meta.label_lower, ()):
        return True
    try:
        field = target._meta.get_field(name)
    except Exception:  # not a model field: a name the caller chose
        return False
    return isinstance(field, EncryptedJSONField | EncryptedTextField)


def _target_repr(target: Model) -> str:
    if target._meta.label_lower in PERSONAL_FIELDS:
        return f"{target._meta.verbose_name} {target.pk}"
    return str(target)[:200]


def is_secret_field(name: str) -> bool:
    lowered = name.lower()
    return lowered in SECRET_NAMES or any(marker in lowered for marker in SECRET_MARKERS)


def audit_value(value: Any) -> Any:
    """A value as JSON can hold it: dates as ISO 8601, decimals and ids as text."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(key): audit_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [audit_value(item) for item in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _scrubbed(values: dict[str, Any] | None, target: Model | None = None) -> dict[str, Any]:
    out = {}
    for name, value in (values or {}).items():
        if is_secret_field(str(name)):
            out[str(name)] = HIDDEN
        elif is_personal_field(target, str(name)):
            out[str(name)] = PERSONAL
        else:
            out[str(name)] = audit_value(value)
    return out


def client_ip(request: HttpRequest | None) -> str | None:
    # REMOTE_ADDR as Django sees it; behind a proxy the deployment sets it from the
    # forwarded header it trusts (as for the mini-app's rate limits).
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


def audit_record(
    *,
    user: Any,
    action: str,
    target: Model | None,
    changes: dict[str, Any] | None = None,
    detail: dict[str, Any] | None = None,
    request: HttpRequest | None = None,
    username: str = "",
) -> AuditEntry:
    """Append one entry. `user` may be None or anonymous (a failed login, a customer's code
    lockout; pass the typed name as `username`). `changes` is {field: [before, after]};
    secret fields are hidden and a customer's personal fields masked whatever the caller
    passes. Called inside the caller's
    transaction, so an entry exists exactly when its change does."""
    if request is None:
        from staff.tracking import current_request

        request = current_request()
    known_user = user if getattr(user, "is_authenticated", False) else None
    if known_user is not None:
        username = known_user.get_username()
    return AuditEntry.objects.create(
        user=known_user,
        username=username[:150],
        kind=AuditKind.SECURITY if action in SECURITY_ACTIONS else AuditKind.CHANGE,
        action=action[:40],
        target_type=target._meta.label_lower if target is not None else "",
        target_id=str(target.pk) if target is not None and target.pk is not None else "",
        target_repr=_target_repr(target) if target is not None else "",
        changes=_scrubbed(changes, target),
        ip_address=client_ip(request),
        detail=_scrubbed(detail),
    )


# --- sign-in throttles (counters shared with the mini-app's limits) ---------------------------

THROTTLE_WINDOW_SECONDS = 15 * 60


def _rules(step: str) -> list[tuple[Rule, str]]:
    return [
        (
            Rule(
                f"staff_{step}_user",
                settings.STAFF_LOGIN_FAILURES_PER_USERNAME,
                THROTTLE_WINDOW_SECONDS,
            ),
            "username",
        ),
        (
            Rule(f"staff_{step}_ip", settings.STAFF_LOGIN_FAILURES_PER_IP, THROTTLE_WINDOW_SECONDS),
            "ip",
        ),
    ]


def _subjects(username: str, ip: str | None) -> dict[str, str]:
    # Usernames are matched case-insensitively so "Admin" and "admin" share a budget.
    return {"username": username.strip().lower(), "ip": ip or "unknown"}


def signin_throttled(*, step: str, username: str, ip: str | None) -> int | None:
    """Seconds to wait when the failures for this username or address have used up their
    budget (step "login" for passwords, "otp" for codes), else None. Counts nothing."""
    subjects = _subjects(username, ip)
    waits = [
        wait
        for rule, subject in _rules(step)
        if (wait := rate_spent(rule=rule, subject=subjects[subject])) is not None
    ]
    return max(waits) if waits else None


def signin_failure_count(*, step: str, username: str, ip: str | None) -> None:
    subjects = _subjects(username, ip)
    for rule, subject in _rules(step):
        rate_spend(rule=rule, subject=subjects[subject])


# --- two-factor (TOTP) ------------------------------------------------------------------------

DEVICE_NAME = "Authenticator app"


def totp_confirmed_device(*, user: Any) -> TOTPDevice | None:
    return TOTPDevice.objects.filter(user=user, confirmed=True).order_by("pk").first()


def totp_pending_device(*, user: Any) -> TOTPDevice:
    """The device being enrolled: the same key across page reloads until it is confirmed,
    so a code scanned a minute ago still works."""
    device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("pk").first()
    return device or TOTPDevice.objects.create(user=user, name=DEVICE_NAME, confirmed=False)


@dataclass(frozen=True)
class OtpResult:
    device: TOTPDevice | None = None
    error: str = ""
    throttled: bool = False


def wait_text(seconds: int) -> str:
    minutes = max(1, round(seconds / 60))
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def totp_check(*, request: HttpRequest, device: TOTPDevice, token: str) -> OtpResult:
    """Check a code against `device`, under the sign-in throttle; confirming a pending
    device enrols it. On success the session is marked verified (django_otp.login)."""
    import django_otp

    user = request.user
    ip = client_ip(request)
    enrolling = not device.confirmed
    wait = signin_throttled(step="otp", username=user.get_username(), ip=ip)
    if wait is not None:
        audit_record(user=user, action="otp_throttled", target=device, request=request)
        return OtpResult(
            error=f"Too many wrong codes. Try again in {wait_text(wait)}.", throttled=True
        )
    with transaction.atomic():
        if not device.verify_token(token):
            signin_failure_count(step="otp", username=user.get_username(), ip=ip)
            audit_record(
                user=user,
                action="otp_failed",
                target=device,
                detail={"enrolling": enrolling},
                request=request,
            )
            return OtpResult(error="That code is not right. Enter the current 6-digit code.")
        if enrolling:
            device.confirmed = True
            device.save(update_fields=["confirmed"])
            # One confirmed device per person: an older one stops working.
            TOTPDevice.objects.filter(user=user).exclude(pk=device.pk).delete()
        audit_record(
            user=user,
            action="otp_enrolled" if enrolling else "otp_verified",
            target=device,
            request=request,
        )
    django_otp.login(request, device)
    return OtpResult(device=device)


def totp_reset(*, user: Any, by: Any, request: HttpRequest | None = None) -> int:
    """Remove a person's authenticator devices: they enrol again at their next sign-in.
    Only an Administrator does this (staff/admin.py)."""
    with transaction.atomic():
        devices = list(TOTPDevice.objects.filter(user=user))
        for device in devices:
            device.delete()
        audit_record(
            user=by,
            action="otp_reset",
            target=user,
            detail={"devices": len(devices)},
            request=request,
        )
    return len(devices)


def roles_sync() -> dict[str, int]:
    """Apply staff/roles.py to the groups again (the `staff roles sync` command)."""
    from django.apps import apps

    from staff.roles import roles_apply

    with transaction.atomic():
        return roles_apply(apps=apps)
