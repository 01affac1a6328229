"""The customer's verified state: server-side (Django's session store), bound to one case,
expiring after five idle minutes (PSD2 RTS art. 4(3)(d): a session with no activity for
five minutes must end). Another case's link in the same browser starts from nothing."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.http import HttpRequest
from django.utils import timezone

from cases.models import Case

SESSION_KEY = "miniapp"
IDLE_TIMEOUT = dt.timedelta(minutes=5)


def _entries(request: HttpRequest) -> dict[str, Any]:
    return request.session.get(SESSION_KEY, {})


def _save(request: HttpRequest, entries: dict[str, Any]) -> None:
    request.session[SESSION_KEY] = entries
    request.session.modified = True


def session_factors(request: HttpRequest, case: Case) -> set[str]:
    """The identity factors proven for this case in this browser, if still fresh."""
    entry = _entries(request).get(str(case.pk))
    if not entry or not entry.get("factors") or not entry.get("last_seen"):
        return set()
    last_seen = dt.datetime.fromisoformat(entry["last_seen"])
    if timezone.now() - last_seen > IDLE_TIMEOUT:
        session_forget(request, case)
        return set()
    return set(entry["factors"])


def session_timed_out(request: HttpRequest, case: Case) -> bool:
    entry = _entries(request).get(str(case.pk))
    if not entry or not entry.get("factors") or not entry.get("last_seen"):
        return False
    last_seen = dt.datetime.fromisoformat(entry["last_seen"])
    return timezone.now() - last_seen > IDLE_TIMEOUT


def session_touch(request: HttpRequest, case: Case) -> None:
    """Keep a verified session alive. A visitor with nothing proven gets no session row:
    the summary page is the one most opened, and a write per view would be its main cost."""
    entries = _entries(request)
    entry = entries.get(str(case.pk))
    if not entry or not (entry.get("factors") or entry.get("choice")):
        return
    entry["last_seen"] = timezone.now().isoformat()
    _save(request, entries)


def session_add_factor(request: HttpRequest, case: Case, factor: str) -> None:
    entries = _entries(request)
    entry = entries.setdefault(str(case.pk), {"factors": []})
    if factor not in entry["factors"]:
        entry["factors"].append(factor)
    entry["last_seen"] = timezone.now().isoformat()
    # A new privilege level gets a new session id (session fixation).
    request.session.cycle_key()
    _save(request, entries)


def session_forget(request: HttpRequest, case: Case, *, timed_out: bool = False) -> None:
    """Drop the case's verified state and choice; `timed_out` keeps a flag so the next
    page shown (often after a redirect to verify) can tell the customer why."""
    entries = _entries(request)
    entries.pop(str(case.pk), None)
    if timed_out:
        entries[str(case.pk)] = {"factors": [], "timed_out": True}
    _save(request, entries)


def session_timeout_notice(request: HttpRequest, case: Case) -> bool:
    """True once after an idle timeout ended the case's verified state."""
    entry = _entries(request).get(str(case.pk))
    if not entry or not entry.pop("timed_out", False):
        return False
    request.session.modified = True
    return True


def session_choice(request: HttpRequest, case: Case) -> dict[str, Any] | None:
    return _entries(request).get(str(case.pk), {}).get("choice")


def session_set_choice(request: HttpRequest, case: Case, choice: dict[str, Any] | None) -> None:
    entries = _entries(request)
    entry = entries.setdefault(str(case.pk), {"factors": []})
    if choice is None:
        entry.pop("choice", None)
    else:
        entry["choice"] = choice
    entry["last_seen"] = timezone.now().isoformat()
    _save(request, entries)
