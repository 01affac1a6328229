from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError

from staff.services import audit_record, client_ip, signin_throttled, wait_text


class StaffLoginForm(AdminAuthenticationForm):
    """The admin's login form, refusing without checking the password once the failures
    for this username or this address have used their budget (failures are counted by
    the user_login_failed handler in staff/signals.py)."""

    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "throttled": "Too many failed sign-in attempts for this account or from this "
        "address. Try again in %(wait)s.",
    }

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username")
        if username and self.cleaned_data.get("password"):
            ip = client_ip(self.request)
            wait = signin_throttled(step="login", username=username, ip=ip)
            if wait is not None:
                audit_record(
                    user=None,
                    username=username,
                    action="login_throttled",
                    target=None,
                    request=self.request,
                )
                raise ValidationError(
                    self.error_messages["throttled"],
                    code="throttled",
                    params={"wait": wait_text(wait)},
                )
        return super().clean()


class TokenForm(forms.Form):
    token = forms.CharField(
        label="Code from your authenticator app",
        min_length=6,
        max_length=6,
        widget=forms.TextInput(
            attrs={
                "autocomplete": "one-time-code",
                "inputmode": "numeric",
                "pattern": "[0-9]{6}",
                "autofocus": True,
                "size": 8,
            }
        ),
    )

    def clean_token(self) -> str:
        token = "".join(self.cleaned_data["token"].split())
        if not token.isdigit():
            raise ValidationError("The code is 6 digits.", code="invalid")
        return token
