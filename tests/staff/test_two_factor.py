"""Staff two-factor sign-in: off in tests and the demo, on by default in production; when on,
no admin page (custom ones included) is served until the person gave a current TOTP code,
enrolling first if they have no authenticator; wrong codes and passwords are throttled."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client, override_settings
from django.urls import reverse
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from staff.models import AuditEntry
from tests import factories

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "a-staff-password-for-tests"
required = override_settings(STAFF_2FA_REQUIRED=True)


def _code(device: TOTPDevice, *, ahead: int = 0) -> str:
    value = totp(
        device.bin_key,
        step=device.step,
        t0=device.t0,
        digits=device.digits,
        drift=device.drift + ahead,
    )
    return f"{value:0{device.digits}d}"


def _wrong(device: TOTPDevice) -> str:
    # A code well outside the accepted window (tolerance 1 step either side).
    return _code(device, ahead=5)


@pytest.fixture
def person(db):
    user = factories.user("dana")
    user.set_password(PASSWORD)
    user.save()
    return user


@pytest.fixture
def enrolled(person) -> TOTPDevice:
    return TOTPDevice.objects.create(user=person, name="phone", confirmed=True)


def _signed_in(user) -> Client:
    client = Client()
    answer = client.post(
        reverse("admin:login"),
        {"username": user.username, "password": PASSWORD, "next": "/admin/"},
    )
    assert answer.status_code == 302, answer.content.decode()[:500]
    return client


def _security(action: str):
    return AuditEntry.objects.filter(kind="security", action=action)


# --- the setting --------------------------------------------------------------------------------


def _setting_with(tmp_path, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "STAFF_2FA_REQUIRED")}
    clean.update(SECRET_KEY="x" * 50, DATA_DIR=str(tmp_path), **env)
    code = "import config.settings as s; print(s.STAFF_2FA_REQUIRED)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_required_by_default_unless_debug(tmp_path):
    assert _setting_with(tmp_path) == "True"
    assert _setting_with(tmp_path, DEBUG="1") == "False"
    assert _setting_with(tmp_path, DEBUG="1", STAFF_2FA_REQUIRED="1") == "True"
    assert _setting_with(tmp_path, STAFF_2FA_REQUIRED="0") == "False"


def test_off_the_password_is_enough(person):
    client = _signed_in(person)
    assert client.get("/admin/").status_code == 200


# --- enforcement ----------------------------------------------------------------------------------


@required
def test_every_admin_page_waits_for_the_code(person, workflow):
    """The admin's own pages and the custom ones beside it (metrics, demo phone, agents)."""
    person.is_superuser = True
    person.save()
    client = _signed_in(person)
    case = factories.case()
    pages = [
        "/admin/",
        reverse("admin:policies_workflow_changelist"),
        reverse("admin:auth_user_changelist"),
        reverse("admin:staff_auditentry_changelist"),
        reverse("admin:agents_task_changelist"),
        reverse("admin-metrics"),
        reverse("admin-channels-phone"),
        reverse("agents-case", args=[case.pk]),
        "/admin/no-such-page/",
    ]
    enrol = reverse("staff-2fa-enrol")
    for page in pages:
        answer = client.get(page)
        assert answer.status_code == 302, page
        assert answer["Location"].startswith(f"{enrol}?next="), page
    # A POST is stopped the same way, before the view runs.
    answer = client.post(reverse("admin:policies_workflow_add"), {"key": "x"})
    assert answer.status_code == 302 and answer["Location"].startswith(enrol)
    # Signing out stays possible.
    assert client.post(reverse("admin:logout")).status_code == 200


@required
def test_anonymous_visitors_still_go_to_the_login(db):
    answer = Client().get("/admin/")
    assert answer.status_code == 302 and answer["Location"].startswith("/admin/login/")


@required
def test_enrolment_shows_a_qr_code_and_confirms_with_a_current_code(person):
    client = _signed_in(person)
    page = client.get(reverse("staff-2fa-enrol"), {"next": "/admin/"})
    assert page.status_code == 200
    html = page.content.decode()
    assert "<svg" in html and "Cannot scan?" in html
    device = TOTPDevice.objects.get(user=person)
    assert not device.confirmed
    assert page.context["secret"].replace(" ", "") in device.config_url
    # Reloading keeps the same key: the code already scanned still works.
    client.get(reverse("staff-2fa-enrol"))
    assert TOTPDevice.objects.get(user=person).pk == device.pk

    wrong = client.post(reverse("staff-2fa-enrol"), {"token": _wrong(device), "next": "/admin/"})
    assert wrong.status_code == 400
    assert "That code is not right" in wrong.content.decode()
    assert _security("otp_failed").filter(user=person).count() == 1
    letters = client.post(reverse("staff-2fa-enrol"), {"token": "12ab56"})
    assert letters.status_code == 400 and "The code is 6 digits." in letters.content.decode()

    with override_settings(OTP_TOTP_THROTTLE_FACTOR=0):  # django-otp's own backoff
        done = client.post(reverse("staff-2fa-enrol"), {"token": _code(device), "next": "/admin/"})
    assert done.status_code == 302 and done["Location"] == "/admin/"
    device.refresh_from_db()
    assert device.confirmed
    assert _security("otp_enrolled").filter(user=person).count() == 1
    assert client.get("/admin/").status_code == 200
    # Enrolled: the enrolment page is done with, and the key is never shown again.
    assert client.get(reverse("staff-2fa-enrol"))["Location"] == "/admin/"


@required
def test_an_enrolled_person_gives_a_code_after_the_password(enrolled, person):
    client = _signed_in(person)
    answer = client.get("/admin/")
    verify = reverse("staff-2fa-verify")
    assert answer["Location"] == f"{verify}?next=%2Fadmin%2F"
    # The enrolment page does not offer a second device.
    assert client.get(reverse("staff-2fa-enrol"))["Location"].startswith(verify)

    wrong = client.post(verify, {"token": _wrong(enrolled), "next": "/admin/"})
    assert wrong.status_code == 400
    assert client.get("/admin/").status_code == 302
    with override_settings(OTP_TOTP_THROTTLE_FACTOR=0):
        done = client.post(verify, {"token": _code(enrolled), "next": "/admin/metrics/"})
    assert done.status_code == 302 and done["Location"] == "/admin/metrics/"
    assert client.get("/admin/").status_code == 200
    assert _security("otp_verified").filter(user=person).exists()
    assert _security("otp_failed").filter(user=person).exists()


@required
def test_next_never_leaves_the_site(enrolled, person):
    client = _signed_in(person)
    answer = client.post(
        reverse("staff-2fa-verify"), {"token": _code(enrolled), "next": "https://evil.example/"}
    )
    assert answer.status_code == 302 and answer["Location"] == "/admin/"


@required
def test_wrong_codes_are_throttled(enrolled, person, fresh_counters):
    client = _signed_in(person)
    verify = reverse("staff-2fa-verify")
    with override_settings(OTP_TOTP_THROTTLE_FACTOR=0):
        for _ in range(5):
            assert client.post(verify, {"token": _wrong(enrolled)}).status_code == 400
        # Even the right code is refused now, without being checked.
        refused = client.post(verify, {"token": _code(enrolled)})
    assert refused.status_code == 429
    assert "Too many wrong codes" in refused.content.decode()
    assert client.get("/admin/").status_code == 302
    assert _security("otp_throttled").filter(user=person).count() == 1


# --- the login throttle ---------------------------------------------------------------------------


def test_failed_logins_for_a_username_are_throttled(person, fresh_counters):
    client = Client()
    login = reverse("admin:login")
    for _ in range(5):
        answer = client.post(login, {"username": "dana", "password": "guess"})
        assert "Please enter the correct username and password" in answer.content.decode()
    answer = client.post(login, {"username": "DANA", "password": PASSWORD})
    assert answer.status_code == 200
    assert "Too many failed sign-in attempts" in answer.content.decode()
    assert "_auth_user_id" not in client.session
    assert _security("login_failed").filter(user=person).count() == 5
    assert _security("login_throttled").get().username == "DANA"
    # Another account from another address is not affected.
    other = factories.user("erin")
    other.set_password(PASSWORD)
    other.save()
    elsewhere = Client(REMOTE_ADDR="198.51.100.4")
    assert elsewhere.post(login, {"username": "erin", "password": PASSWORD}).status_code == 302


@override_settings(STAFF_LOGIN_FAILURES_PER_IP=3)
def test_failed_logins_from_one_address_are_throttled(person, fresh_counters):
    client = Client(REMOTE_ADDR="203.0.113.50")
    login = reverse("admin:login")
    for name in ("amy", "bob", "cat"):
        client.post(login, {"username": name, "password": "guess"})
    answer = client.post(login, {"username": "dana", "password": PASSWORD})
    assert "Too many failed sign-in attempts" in answer.content.decode()
    assert (
        Client(REMOTE_ADDR="203.0.113.51")
        .post(login, {"username": "dana", "password": PASSWORD})
        .status_code
        == 302
    )


# --- reset by an Administrator --------------------------------------------------------------------


@required
def test_an_administrator_resets_a_lost_device(enrolled, person, member):
    administrator = member("Administrator", "root")
    client = Client()
    client.force_login(administrator)
    admin_device = TOTPDevice.objects.create(user=administrator, name="phone", confirmed=True)
    with override_settings(OTP_TOTP_THROTTLE_FACTOR=0):
        client.post(reverse("staff-2fa-verify"), {"token": _code(admin_device)})
    changelist = reverse("admin:otp_totp_totpdevice_changelist")
    listing = client.get(changelist)
    assert listing.status_code == 200
    assert enrolled.key not in listing.content.decode()
    assert client.get(reverse("admin:otp_totp_totpdevice_add")).status_code == 403
    assert (
        client.get(reverse("admin:otp_totp_totpdevice_config", args=[enrolled.pk])).status_code
        == 403
    )

    answer = client.post(
        changelist, {"action": "reset_two_factor", "_selected_action": [enrolled.pk]}
    )
    assert answer.status_code == 302
    assert not TOTPDevice.objects.filter(user=person).exists()
    reset = _security("otp_reset").get()
    assert (reset.user, reset.target_id, reset.detail) == (
        administrator,
        str(person.pk),
        {"devices": 1},
    )
    # At the next sign-in the person enrols again.
    again = _signed_in(person)
    assert again.get("/admin/")["Location"].startswith(reverse("staff-2fa-enrol"))


def test_only_an_administrator_may_reset(enrolled, as_role):
    operations = as_role("Operations")
    assert operations.get(reverse("admin:otp_totp_totpdevice_changelist")).status_code == 403
