"""Customer pages reached from a message link."""

from __future__ import annotations

from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from cases.services import IllegalTransition
from miniapp.services import link_record_open, link_resolve


@require_GET
@never_cache
def case_home(request, token: str):
    link = link_resolve(token=token)
    if link is None:
        # Never a hint whether the token belonged to someone else.
        return render(request, "miniapp/link_invalid.html", {"reason": "unknown"}, status=404)
    if link.revoked_at or link.is_expired:
        return render(request, "miniapp/link_invalid.html", {"reason": "expired"}, status=410)
    case = link.case
    try:
        case = link_record_open(link=link, user_agent=request.headers.get("User-Agent", ""))
    except IllegalTransition:
        case.refresh_from_db()  # another tab opened it first; the open is still the customer's
    return render(request, "miniapp/case_home.html", {"case": case, "data": case.data})
