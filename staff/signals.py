"""Sign-in events into the audit trail, and the failure count behind the login throttle.
Connected in StaffConfig.ready."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed

from staff.services import audit_record, client_ip, signin_failure_count


def _on_logged_in(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    audit_record(user=user, action="login", target=None, request=request)


def _on_logged_out(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if user is not None:
        audit_record(user=user, action="logout", target=None, request=request)


def _on_login_failed(sender: Any, credentials: dict, request: Any = None, **kwargs: Any) -> None:
    # Django has already masked the password in `credentials`; only the name is kept.
    username = str(credentials.get(get_user_model().USERNAME_FIELD) or "")
    if not username:
        # A single sign-on callback (no name typed): staff/oidc.py records its refusal with
        # the name the provider gave, and it spends nothing of the password throttle.
        return
    if request is not None:
        signin_failure_count(step="login", username=username, ip=client_ip(request))
    known = get_user_model()._default_manager.filter(**{get_user_model().USERNAME_FIELD: username})
    audit_record(
        user=known.first(),
        username=username,
        action="login_failed",
        target=None,
        request=request,
    )


def signals_connect() -> None:
    user_logged_in.connect(_on_logged_in, dispatch_uid="staff-audit-login")
    user_logged_out.connect(_on_logged_out, dispatch_uid="staff-audit-logout")
    user_login_failed.connect(_on_login_failed, dispatch_uid="staff-audit-login-failed")
