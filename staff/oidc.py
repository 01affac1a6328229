"""Staff single sign-on with OpenID Connect (docs/sso.md). Off unless OIDC_ENABLED.

mozilla-django-oidc runs the authorization-code flow: state, nonce, PKCE, the code exchange
and the ID token's signature against the provider's published keys. This module decides who
the person is in Closeloop: the user named by the OIDC_USERNAME_CLAIM claim, holding the
roles (staff/roles.py) that their provider groups give through OIDC_ROLE_MAP, synced at
every sign-in. Every outcome, a sign-in or a refusal, is written to the audit trail by
whoever decided it: `oidc_user_sync` here, or the callback view (staff/oidc_views.py) when
the provider's answer never got that far.

A session signed in this way counts as two-factor verified, because the provider did the
second factor: IdentityProviderVerifiedMiddleware is the one place that says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, get_user_model
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import Group
from django.core import checks
from django.core.exceptions import SuspiciousOperation
from django.db import transaction
from django.http import HttpRequest
from django.urls import reverse
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from staff.roles import ROLES
from staff.services import audit_record

BACKEND_PATH = "staff.oidc.StaffOIDCBackend"


@dataclass(frozen=True)
class OidcRefusal:
    """Why a sign-in through the provider was refused; shown to the person
    (staff/oidc_views.py) and recorded as an `sso_refused` audit entry."""

    reason: str
    username: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


def oidc_claim_groups(*, claims: dict[str, Any]) -> list[str]:
    """The person's groups at the provider. Most send a list; some send a single group as
    a string."""
    value = claims.get(settings.OIDC_GROUPS_CLAIM)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [str(item) for item in value]
    return []


def oidc_roles(*, groups: list[str]) -> list[str]:
    """The Closeloop roles that these provider groups give (OIDC_ROLE_MAP), sorted. A role
    name that is not one of staff/roles.py gives nothing (system check staff.E101 names it)."""
    return sorted(
        {
            role
            for group in groups
            for role in settings.OIDC_ROLE_MAP.get(group, ())
            if role in ROLES
        }
    )


def oidc_refusal_record(
    *,
    refusal: OidcRefusal,
    request: HttpRequest | None,
    user: Any = None,
    changes: dict[str, Any] | None = None,
):
    return audit_record(
        user=user,
        username=refusal.username,
        action="sso_refused",
        target=user,
        changes=changes,
        detail={"reason": refusal.reason, **refusal.detail},
        request=request,
    )


def _person(user: Any) -> dict[str, Any]:
    """What a sign-in may change on a user, for the audit entry's before and after."""
    return {
        "email": user.email,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "is_staff": user.is_staff,
        "groups": sorted(user.groups.filter(name__in=ROLES).values_list("name", flat=True)),
    }


def _names(claims: dict[str, Any]) -> tuple[str, str]:
    given, family = claims.get("given_name"), claims.get("family_name")
    if given or family:
        return str(given or "")[:150], str(family or "")[:150]
    first, _, last = str(claims.get("name") or "").partition(" ")
    return first[:150], last[:150]


def oidc_user_sync(*, claims: dict[str, Any], request: HttpRequest | None) -> Any:
    """Create or update the Closeloop user the provider vouched for, with the roles their
    groups give now (roles they lost are taken away, groups that are not roles are left
    alone). Returns the user, or an OidcRefusal:

    - missing_claim: no usable OIDC_USERNAME_CLAIM value;
    - local_account: a user of that name signs in with a password; taking it over would let
      the provider skip that account's own two-factor sign-in;
    - inactive: an Administrator deactivated the account;
    - no_role: none of their groups is mapped. Nothing is created for a newcomer; an existing
      user loses their roles and staff status at once, so other sessions stop too.
    """
    claim = settings.OIDC_USERNAME_CLAIM
    username = str(claims.get(claim) or "").strip()
    if not username or len(username) > 150:
        refusal = OidcRefusal("missing_claim", username=username[:150], detail={"claim": claim})
        oidc_refusal_record(refusal=refusal, request=request)
        return refusal
    idp_groups = oidc_claim_groups(claims=claims)
    roles = oidc_roles(groups=idp_groups)
    User = get_user_model()
    with transaction.atomic():
        user = User._default_manager.select_for_update().filter(username=username).first()
        refusal = None
        if user is not None and user.has_usable_password():
            refusal = OidcRefusal("local_account", username=username)
        elif user is not None and not user.is_active:
            refusal = OidcRefusal("inactive", username=username)
        elif user is None and not roles:
            refusal = OidcRefusal("no_role", username=username, detail={"groups": idp_groups})
        if refusal is not None:
            oidc_refusal_record(refusal=refusal, request=request, user=user)
            return refusal

        created = False
        if user is None:
            # get_or_create: a second tab finishing the same first sign-in at the same moment
            # finds the row instead of failing on the unique username. No usable password:
            # the account signs in only through the provider.
            user, created = User._default_manager.get_or_create(
                username=username, defaults={"password": make_password(None)}
            )
        before = _person(user)
        user.email = str(claims.get("email") or user.email)[:254]
        if any(claims.get(name) for name in ("given_name", "family_name", "name")):
            user.first_name, user.last_name = _names(claims)
        user.is_staff = bool(roles)
        user.save()
        user.groups.remove(*Group.objects.filter(name__in=ROLES).exclude(name__in=roles))
        user.groups.add(*Group.objects.filter(name__in=roles))
        after = _person(user)
        changes = {
            name: [before[name], after[name]] for name in after if before[name] != after[name]
        }
        if not roles:
            refusal = OidcRefusal("no_role", username=username, detail={"groups": idp_groups})
            oidc_refusal_record(refusal=refusal, request=request, user=user, changes=changes)
            return refusal
        audit_record(
            user=user,
            action="sso_login",
            target=user,
            changes=changes,
            detail={"created": created, "roles": roles, "groups": idp_groups},
            request=request,
        )
    return user


class StaffOIDCBackend(OIDCAuthenticationBackend):
    """mozilla-django-oidc's backend, with Closeloop's idea of who the person is."""

    def authenticate(self, request: HttpRequest | None, **kwargs: Any) -> Any:
        # Only the callback exchanges a code: a password sign-in whose URL happens to carry
        # ?code=&state= must not turn into a provider sign-in without the state check.
        callback = reverse(settings.OIDC_AUTHENTICATION_CALLBACK_URL)
        if request is None or request.path_info != callback:
            return None
        return super().authenticate(request, **kwargs)

    def verify_token(self, token: str, **kwargs: Any) -> dict[str, Any]:
        payload = super().verify_token(token, **kwargs)
        # OIDC Core 3.1.3.7: the ID token must be meant for us. The library skips `aud`.
        if "nonce" in kwargs:
            audience = payload.get("aud")
            audiences = [audience] if isinstance(audience, str) else list(audience or [])
            if self.OIDC_RP_CLIENT_ID not in audiences:
                raise SuspiciousOperation("The ID token was issued to another client.")
        return payload

    def get_userinfo(self, access_token: str, id_token: str, payload: dict) -> dict[str, Any]:
        userinfo = super().get_userinfo(access_token, id_token, payload)
        # OIDC Core 5.3.2: userinfo must describe the person the ID token names.
        if str(userinfo.get("sub")) != str(payload.get("sub")):
            raise SuspiciousOperation("The userinfo answer is about another person.")
        # Some providers (Entra ID) put groups in the ID token only; userinfo wins where
        # both speak.
        return {**payload, **userinfo}

    def get_or_create_user(self, access_token: str, id_token: str, payload: dict) -> Any:
        try:
            claims = self.get_userinfo(access_token, id_token, payload)
        except SuspiciousOperation as exc:
            outcome: Any = OidcRefusal("invalid_answer", detail={"error": str(exc)})
            oidc_refusal_record(refusal=outcome, request=self.request)
        else:
            outcome = oidc_user_sync(claims=claims, request=self.request)
        if isinstance(outcome, OidcRefusal):
            # The callback view shows it (staff/oidc_views.py); it is already recorded.
            self.request.oidc_refusal = outcome
            return None
        return outcome


def _verified() -> bool:
    return True


class IdentityProviderVerifiedMiddleware:
    """A staff session signed in through the identity provider counts as two-factor
    verified: the provider asked for the second factor, and such accounts have no password
    of ours to protect. Making `user.is_verified()` answer so (django-otp's own question)
    keeps the staff enforcement, the code pages and the audit export in agreement. After
    django_otp's OTPMiddleware. The session's backend is set by Django at sign-in, so no
    request can claim it."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest):
        if settings.OIDC_ENABLED and request.session.get(BACKEND_SESSION_KEY) == BACKEND_PATH:
            user = request.user
            if user.is_authenticated:
                user.is_verified = _verified
        return self.get_response(request)


def oidc_settings_check(app_configs, **kwargs) -> list[checks.CheckMessage]:
    """A role name in OIDC_ROLE_MAP that is not a role would silently give no one access;
    `check` runs before every server start."""
    unknown = sorted(
        {role for roles in settings.OIDC_ROLE_MAP.values() for role in roles} - set(ROLES)
    )
    if not unknown:
        return []
    return [
        checks.Error(
            f"OIDC_ROLE_MAP names roles that do not exist: {', '.join(unknown)}.",
            hint=f"Roles are: {', '.join(ROLES)} (staff/roles.py).",
            id="staff.E101",
        )
    ]
