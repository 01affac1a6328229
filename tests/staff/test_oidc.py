"""Staff single sign-on, against a real OpenID Connect provider: django-oauth-toolkit in its
own process on a loopback port (tests/standins/oidc_provider/). The Django test client plays
the browser on Closeloop's side; on the provider's side the launcher signs in on its login
form over HTTP. Nothing of ours is mocked: the code exchange, the ID token's signature (RS256,
checked against the provider's JWKS), the nonce, PKCE and userinfo all happen for real."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.test import Client, RequestFactory, override_settings
from django.urls import clear_url_caches

from staff.models import AuditEntry
from staff.oidc import BACKEND_PATH, StaffOIDCBackend, oidc_settings_check
from tests.standins.oidc_provider.launcher import OidcProvider

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
REDIRECT_URI = "http://testserver/oidc/callback/"
PASSWORD = "provider-password-for-tests"
ROLE_MAP = {
    "closeloop-agents": ["Agent"],
    "closeloop-ops": ["Operations"],
    "closeloop-audit": ["Auditor"],
}


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    folder = tmp_path_factory.mktemp("oidc-provider")
    idp = OidcProvider.start(
        db_path=folder / "provider.sqlite3",
        redirect_uri=REDIRECT_URI,
        log_path=folder / "provider.log",
    )
    yield idp
    idp.stop()


def _urls_reload() -> None:
    # config/urls.py mounts /oidc/ only when OIDC_ENABLED, read when it is imported.
    import config.urls

    importlib.reload(config.urls)
    clear_url_caches()


@pytest.fixture
def sso(provider):
    """Single sign-on on, pointed at the stand-in provider, two-factor required."""
    overrides = {
        **provider.closeloop_settings(),
        "OIDC_ENABLED": True,
        "OIDC_PROVIDER_NAME": "Bank SSO",
        "OIDC_RP_SCOPES": "openid email profile groups",
        "OIDC_ROLE_MAP": ROLE_MAP,
        "AUTHENTICATION_BACKENDS": ["django.contrib.auth.backends.ModelBackend", BACKEND_PATH],
        "STAFF_2FA_REQUIRED": True,
    }
    with override_settings(**overrides):
        _urls_reload()
        try:
            yield provider
        finally:
            clear_url_caches()
    _urls_reload()


def _callback(client: Client, provider: OidcProvider, username: str, next_url="/admin/"):
    """Sign in the way a person would: the button, the provider's form, back to us."""
    start = client.get("/oidc/login/", {"next": next_url})
    assert start.status_code == 302
    assert start["Location"].startswith(
        provider.closeloop_settings()["OIDC_OP_AUTHORIZATION_ENDPOINT"]
    )
    back = provider.sign_in(start["Location"], username=username, password=PASSWORD)
    assert back.startswith(REDIRECT_URI), back
    parts = urlsplit(back)
    return client.get(f"{parts.path}?{parts.query}"), back


def _person(provider: OidcProvider, username: str, groups: list[str]) -> str:
    return provider.person_put(
        username=username,
        password=PASSWORD,
        groups=groups,
        email=f"{username}@bank.example",
        given_name=username.title(),
        family_name="Lovelace",
    )


def _roles(user) -> set[str]:
    return set(user.groups.values_list("name", flat=True))


def _entries(action: str):
    return AuditEntry.objects.filter(kind="security", action=action).order_by("id")


# --- the login page ---------------------------------------------------------------------------


def test_the_login_page_offers_the_provider(sso):
    page = Client().get("/admin/login/", {"next": "/admin/cases/case/"})
    assert page.status_code == 200
    html = page.content.decode()
    assert "Sign in with Bank SSO" in html
    assert 'href="/oidc/login/?next=%2Fadmin%2Fcases%2Fcase%2F"' in html
    # The password form stays, for accounts that sign in with a password.
    assert 'id="login-form"' in html


# --- sign-in and role sync ----------------------------------------------------------------------


def test_first_sign_in_creates_the_user_with_the_mapped_roles(sso):
    sub = _person(sso, "ada", ["closeloop-agents", "payroll"])
    client = Client()
    answer, _ = _callback(client, sso, "ada", next_url="/admin/agents/task/")
    assert answer.status_code == 302
    assert answer["Location"] == "/admin/agents/task/"

    user = get_user_model().objects.get(username=sub)
    assert (user.email, user.first_name, user.last_name) == ("ada@bank.example", "Ada", "Lovelace")
    assert user.is_staff and not user.is_superuser
    assert _roles(user) == {"Agent"}
    assert not user.has_usable_password()
    # The provider did the second factor: no code page, though two-factor is required.
    assert client.get("/admin/").status_code == 200
    assert client.get("/admin/agents/task/").status_code == 200
    assert client.get("/admin/staff/two-factor/verify/")["Location"] == "/admin/"
    # An Agent is still only an Agent.
    assert client.get("/admin/policies/workflow/").status_code == 403

    signed_in = _entries("sso_login").get()
    assert signed_in.user == user
    assert signed_in.detail["created"] is True
    assert signed_in.detail["roles"] == ["Agent"]
    assert signed_in.changes["groups"] == [[], ["Agent"]]
    assert _entries("login").get().user == user
    assert not _entries("login_failed").exists()


def test_a_group_change_at_the_provider_shows_at_the_next_sign_in(sso):
    sub = _person(sso, "grace", ["closeloop-agents"])
    _callback(Client(), sso, "grace")
    user = get_user_model().objects.get(username=sub)
    # A group that is not a role, given here by hand, is not the provider's to take away.
    user.groups.add(Group.objects.create(name="Newsletter editors"))

    _person(sso, "grace", ["closeloop-ops", "closeloop-audit"])
    client = Client()
    answer, _ = _callback(client, sso, "grace")
    assert answer.status_code == 302

    assert get_user_model().objects.filter(username=sub).count() == 1
    user.refresh_from_db()
    assert _roles(user) == {"Operations", "Auditor", "Newsletter editors"}
    assert client.get("/admin/policies/workflow/").status_code == 200
    latest = _entries("sso_login").last()
    assert latest.detail["created"] is False
    assert latest.changes == {"groups": [["Agent"], ["Auditor", "Operations"]]}


def test_a_person_with_no_mapped_group_is_refused_and_nothing_is_created(sso):
    _person(sso, "mallory", ["finance", "closeloop-interns"])
    client = Client()
    answer, _ = _callback(client, sso, "mallory")

    assert answer.status_code == 403
    assert "not in any group that gives access to Closeloop" in answer.content.decode()
    assert not get_user_model().objects.exists()
    assert client.get("/admin/")["Location"].startswith("/admin/login/")
    refused = _entries("sso_refused").get()
    assert refused.detail == {"reason": "no_role", "groups": ["closeloop-interns", "finance"]}
    assert refused.user is None and refused.username
    assert not _entries("login").exists()


def test_losing_every_role_at_the_provider_ends_access_everywhere(sso):
    sub = _person(sso, "linus", ["closeloop-ops"])
    earlier = Client()
    _callback(earlier, sso, "linus")
    assert earlier.get("/admin/").status_code == 200

    _person(sso, "linus", [])
    answer, _ = _callback(Client(), sso, "linus")
    assert answer.status_code == 403

    user = get_user_model().objects.get(username=sub)
    assert not user.is_staff and _roles(user) == set()
    # The session signed in before is no longer let into the admin.
    assert earlier.get("/admin/")["Location"].startswith("/admin/login/")
    refused = _entries("sso_refused").get()
    assert refused.user == user
    assert refused.changes == {"groups": [["Operations"], []], "is_staff": [True, False]}


# --- accounts that sign in with a password ------------------------------------------------------


def test_a_password_account_still_needs_its_code_and_cannot_be_taken_over(sso, settings):
    local = get_user_model().objects.create_user("dana", password="a-local-password", is_staff=True)
    local.groups.add(Group.objects.get(name="Administrator"))

    client = Client()
    answer = client.post("/admin/login/", {"username": "dana", "password": "a-local-password"})
    assert answer.status_code == 302
    assert client.get("/admin/")["Location"].startswith("/admin/staff/two-factor/enrol/")

    # Someone at the provider with the same name does not become that account.
    settings.OIDC_USERNAME_CLAIM = "preferred_username"
    _person(sso, "dana", ["closeloop-agents"])
    other = Client()
    answer, _ = _callback(other, sso, "dana")
    assert answer.status_code == 403
    assert "signs in with a password" in answer.content.decode()
    local.refresh_from_db()
    assert _roles(local) == {"Administrator"}
    assert _entries("sso_refused").get().detail == {"reason": "local_account"}
    assert other.get("/admin/")["Location"].startswith("/admin/login/")


def test_the_username_can_come_from_another_claim(sso, settings):
    settings.OIDC_USERNAME_CLAIM = "email"
    _person(sso, "edsger", ["closeloop-audit"])
    client = Client()
    answer, _ = _callback(client, sso, "edsger")
    assert answer.status_code == 302
    assert _roles(get_user_model().objects.get(username="edsger@bank.example")) == {"Auditor"}
    # The audit export asks for a two-factor verified session too: the provider's counts.
    export = client.get("/api/v1/events/", {"stream": "audit"})
    assert export.status_code == 200
    assert b"sso_login" in b"".join(export.streaming_content)


# --- what goes wrong is a page, never a 500 --------------------------------------------------


def test_a_replayed_callback_is_refused(sso):
    _person(sso, "joan", ["closeloop-agents"])
    client = Client()
    answer, back = _callback(client, sso, "joan")
    assert answer.status_code == 302
    parts = urlsplit(back)
    again = Client().get(f"{parts.path}?{parts.query}")
    assert again.status_code == 400
    assert "expired or was already used" in again.content.decode()
    assert _entries("sso_refused").get().detail["reason"] == "expired"


def test_the_provider_saying_no_is_a_clear_refusal(sso):
    answer = Client().get("/oidc/callback/", {"error": "access_denied", "state": "x"})
    assert answer.status_code == 403
    assert "Bank SSO did not sign you in (access_denied)" in answer.content.decode()


def test_a_provider_that_stops_answering_is_a_502(sso, settings):
    _person(sso, "barbara", ["closeloop-agents"])
    client = Client()
    start = client.get("/oidc/login/")
    back = sso.sign_in(start["Location"], username="barbara", password=PASSWORD)
    # The token endpoint goes away between the sign-in and the code exchange.
    settings.OIDC_OP_TOKEN_ENDPOINT = "http://127.0.0.1:9/o/token/"
    parts = urlsplit(back)
    answer = client.get(f"{parts.path}?{parts.query}")
    assert answer.status_code == 502
    assert "could not be reached" in answer.content.decode()
    assert not get_user_model().objects.exists()
    assert _entries("sso_refused").get().detail["reason"] == "provider_error"


def test_a_password_sign_in_never_exchanges_a_code(sso):
    """Only the callback runs the code flow; ?code=&state= on the login URL means nothing."""
    request = RequestFactory().post("/admin/login/?code=abc&state=def")
    assert StaffOIDCBackend().authenticate(request, username="x", password="y") is None


# --- off by default -------------------------------------------------------------------------


def test_off_there_are_no_oidc_urls_and_no_button(db):
    client = Client()
    assert client.get("/oidc/login/").status_code == 404
    assert client.get("/oidc/callback/", {"code": "a", "state": "b"}).status_code == 404
    page = client.get("/admin/login/").content.decode()
    assert "Sign in with" not in page and 'id="login-form"' in page


# --- settings and set-up ----------------------------------------------------------------------


def _settings_with(tmp_path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OIDC_")}
    clean.update(SECRET_KEY="x" * 50, DATA_DIR=str(tmp_path), **env)
    code = "import config.settings as s; print(s.OIDC_ROLE_MAP, s.AUTHENTICATION_BACKENDS[-1])"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True
    )


def test_settings_refuse_to_start_half_configured(tmp_path, provider):
    missing = _settings_with(tmp_path, OIDC_ENABLED="1", OIDC_ROLE_MAP="g=Agent")
    assert missing.returncode != 0
    assert "OIDC_ENABLED needs OIDC_RP_CLIENT_ID, OIDC_RP_CLIENT_SECRET" in missing.stderr

    complete = {**provider.closeloop_settings(), "OIDC_ENABLED": "1"}
    no_map = _settings_with(tmp_path, **complete)
    assert "OIDC_ENABLED needs OIDC_ROLE_MAP" in no_map.stderr
    malformed = _settings_with(tmp_path, **complete, OIDC_ROLE_MAP="closeloop-agents")
    assert "OIDC_ROLE_MAP entries look like idp-group=Role" in malformed.stderr

    # Semicolons separate entries whose group names hold commas (LDAP names).
    mapped = _settings_with(
        tmp_path,
        **complete,
        OIDC_ROLE_MAP=(
            "cn=agents,ou=groups=Agent; cn=risk,ou=groups=Risk;cn=agents,ou=groups=Auditor"
        ),
    )
    assert mapped.returncode == 0, mapped.stderr
    assert mapped.stdout.strip() == (
        "{'cn=agents,ou=groups': ['Agent', 'Auditor'], 'cn=risk,ou=groups': ['Risk']} "
        f"{BACKEND_PATH}"
    )


def test_a_role_map_naming_no_role_fails_the_system_check():
    with override_settings(OIDC_ROLE_MAP={"closeloop-agents": ["Agents"], "x": ["Risk"]}):
        errors = oidc_settings_check(None)
    assert [error.id for error in errors] == ["staff.E101"]
    assert "Agents" in errors[0].msg
    with override_settings(OIDC_ROLE_MAP=ROLE_MAP):
        assert oidc_settings_check(None) == []


def test_discover_prints_the_provider_endpoints(provider):
    out = StringIO()
    call_command("oidc", "discover", f"{provider.url}/o/", stdout=out)
    lines = dict(line.split("=", 1) for line in out.getvalue().splitlines())
    expected = provider.closeloop_settings()
    for name in (
        "OIDC_OP_AUTHORIZATION_ENDPOINT",
        "OIDC_OP_TOKEN_ENDPOINT",
        "OIDC_OP_USER_ENDPOINT",
        "OIDC_OP_JWKS_ENDPOINT",
        "OIDC_RP_SIGN_ALGO",
    ):
        assert lines[name] == expected[name]
    assert lines["OIDC_RP_SCOPES"] == "openid email profile groups"


def test_discover_explains_a_wrong_address(provider):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="answered 404, not a discovery document"):
        call_command("oidc", "discover", f"{provider.url}/nowhere", stdout=StringIO())
