"""Customer pages reached from a message link: summary → verify (as much as the action
needs) → choose → review with explicit consent → confirmation.

Server-rendered and complete without JavaScript; htmx only refreshes the confirmation
when the writeback lands. Every step is a CaseEvent so drop-off can be measured per step.
Views stay thin: identity lives in identity.py, outcomes in writeback.services.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from cases.models import Actor, Case
from cases.services import IllegalTransition, case_record_event
from miniapp import identity
from miniapp.forms import ACTION_FORMS, ActionForm
from miniapp.payments.base import PROVIDER_ACTIONS
from miniapp.services import link_record_open, link_resolve
from miniapp.sessions import (
    session_add_factor,
    session_choice,
    session_factors,
    session_forget,
    session_set_choice,
    session_timed_out,
    session_timeout_notice,
    session_touch,
)
from policies.offers import offer_action
from privacy.crypto import text_seal

OPEN_STATES = ("received", "outreach", "engaged", "verified")
CONSENT_TEXT = (
    "I confirm the details above are correct and I agree to {brand} recording my choice "
    "and updating my account accordingly."
)


def _no_store(response: HttpResponse) -> HttpResponse:
    # Personal pages: never kept by the browser, a proxy or the back button.
    response["Cache-Control"] = "no-store, max-age=0"
    response["Pragma"] = "no-cache"
    return response


def customer_page(view: Callable) -> Callable:
    """Resolve the token to its case (404 unknown, 410 expired or revoked) and keep the
    idle timer of the customer's session."""

    @wraps(view)
    def wrapper(request: HttpRequest, token: str, *args: Any, **kwargs: Any) -> HttpResponse:
        link = link_resolve(token=token)
        if link is None:
            # Never a hint whether the token belonged to someone else.
            response = render(
                request, "miniapp/link_invalid.html", {"reason": "unknown"}, status=404
            )
            return _no_store(response)
        if link.revoked_at or link.is_expired:
            response = render(
                request,
                "miniapp/link_invalid.html",
                {"reason": "expired", "token": token, "can_renew": link.case.state in OPEN_STATES},
                status=410,
            )
            return _no_store(response)
        request.case_link = link
        # link_resolve loaded the case with its workflow and customer in the same query.
        request.case = link.case
        request.engaged_now = False
        if request.case.state in ("received", "outreach"):
            # Whichever page a link first lands on (the summary, or a bookmarked or
            # forwarded step), the customer is engaged from there: submitting needs it.
            try:
                opened = link_record_open(
                    link=link, user_agent=request.headers.get("User-Agent", "")
                )
                request.engaged_now = True
            except IllegalTransition:
                opened = Case.objects.get(pk=link.case_id)  # another tab opened it first
            # The fresh row, with the related objects already in hand.
            opened.workflow, opened.customer = link.case.workflow, link.case.customer
            request.case = opened
        if session_timed_out(request, request.case):
            # The verified state ends with the idle session; touching it first would
            # keep the old factors alive.
            session_forget(request, request.case, timed_out=True)
        session_touch(request, request.case)
        response = view(request, token, *args, **kwargs)
        return _no_store(response)

    return wrapper


def _url(name: str, token: str, **kwargs: Any) -> str:
    return reverse(f"miniapp:{name}", kwargs={"token": token, **kwargs})


def _context(request: HttpRequest, token: str, **extra: Any) -> dict[str, Any]:
    from django.conf import settings

    case = request.case
    return {
        "case": case,
        "token": token,
        "data": case.data,
        "offer": case.offer or {},
        "brand": settings.BRAND_NAME,
        "brand_colour": settings.BRAND_COLOUR,
        "brand_logo": settings.BRAND_LOGO_URL,
        "timed_out": session_timeout_notice(request, case),
        **extra,
    }


def _recommended(case: Case) -> dict[str, Any] | None:
    actions = (case.offer or {}).get("actions", [])
    return next((a for a in actions if a.get("recommended")), actions[0] if actions else None)


def _needs(request: HttpRequest, case: Case, action: str) -> set[str]:
    item = offer_action(case.offer, action) or {}
    return identity.factors_needed(item.get("identity_level", "otp")) - session_factors(
        request, case
    )


def _closed_page(request: HttpRequest, token: str) -> HttpResponse | None:
    case = request.case
    if case.state in OPEN_STATES:
        return None
    return redirect(_url("done", token))


# --- summary ------------------------------------------------------------------------------


@require_http_methods(["GET"])
@customer_page
def case_home(request: HttpRequest, token: str) -> HttpResponse:
    case = request.case
    if not request.engaged_now:
        # The first open was the engagement; later ones are on the timeline too (hourly).
        link_record_open(link=request.case_link, user_agent=request.headers.get("User-Agent", ""))
    recommended = _recommended(case)
    return render(
        request, "miniapp/case_home.html", _context(request, token, recommended=recommended)
    )


# --- identity -----------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@customer_page
def verify(request: HttpRequest, token: str) -> HttpResponse:
    case = request.case
    closed = _closed_page(request, token)
    if closed:
        return closed
    action = request.GET.get("next") or (_recommended(case) or {}).get("action", "")
    if not offer_action(case.offer, action):
        action = (_recommended(case) or {}).get("action", "")
    needed = _needs(request, case, action)
    next_url = _url("options", token) + (f"?action={action}" if action else "")
    if not needed:
        return redirect(next_url)
    error, notice = "", ""
    locked = identity.identity_locked(case=case)
    if request.method == "POST" and not locked:
        step = request.POST.get("step")
        factor = {"send": "otp", "code": "otp", "facts": "known_fact"}.get(step)
        if factor not in needed:
            # An unknown step, or one for a factor this action does not ask for: a factor
            # proven here must be one the action needs, or `verified` would mean less.
            error = "That step is not part of this check. Start again from your link."
        elif step == "send":
            result = identity.code_send(case=case)
            error = result.error
            notice = "We sent you a code." if result.ok else ""
        elif step == "code":
            result = identity.code_verify(case=case, code=request.POST.get("code", ""))
            if result.ok:
                _verified(request, case, "otp")
                return redirect(request.get_full_path())
            error = result.error or f"That code is not right. {result.tries_left} tries left."
        elif step == "facts":
            answers = {
                kind: request.POST.get(kind, "")
                for kind in identity.KNOWN_FACT_KINDS
                if request.POST.get(kind)
            }
            result = identity.known_facts_verify(case=case, answers=answers)
            if result.ok:
                _verified(request, case, "known_fact")
                return redirect(request.get_full_path())
            error = result.error
            if result.tries_left and not result.locked:
                error = f"{error} {result.tries_left} tries left."
        locked = identity.identity_locked(case=case)
    device = getattr(case, "code_device", None) if hasattr(case, "code_device") else None
    destination = identity.code_channel(case)
    return render(
        request,
        "miniapp/verify.html",
        _context(
            request,
            token,
            needed=needed,
            action=action,
            error=error,
            notice=notice,
            locked=locked,
            code_sent=bool(device and device.token) or bool(notice),
            number=identity.masked_number(destination[1]) if destination else "",
            facts=identity.known_facts_available(case=case),
        ),
        status=423 if locked else 400 if error else 200,
    )


def _verified(request: HttpRequest, case: Case, factor: str) -> None:
    session_add_factor(request, case, factor)
    factors = session_factors(request, case)
    if case.state == "engaged":
        from cases.services import case_transition

        try:
            request.case = case_transition(
                case=case, transition="verify", data={"factors": sorted(factors)}
            )
            return
        except IllegalTransition:
            pass
    case_record_event(
        case=case, kind="verified", actor=Actor.CUSTOMER, data={"factors": sorted(factors)}
    )


# --- choosing -----------------------------------------------------------------------------


def _form(case: Case, action: str, data: Any = None, initial: Any = None) -> ActionForm | None:
    form_class = ACTION_FORMS.get(action)
    item = offer_action(case.offer, action)
    if form_class is None or item is None:
        return None
    initial = {**(initial or {}), "submission_key": secrets.token_urlsafe(16)}
    return form_class(data=data, initial=initial, case=case, bounds=item["bounds"])


@require_http_methods(["GET", "POST"])
@customer_page
def options(request: HttpRequest, token: str) -> HttpResponse:
    """The recommended option, pre-filled, with the others one tap away: accepting the
    recommendation and confirming is two taps."""
    case = request.case
    closed = _closed_page(request, token)
    if closed:
        return closed
    recommended = _recommended(case)
    action = (
        request.GET.get("action")
        or request.POST.get("action")
        or (recommended["action"] if recommended else "")
    )
    if not offer_action(case.offer, action):
        if request.method == "POST":
            # A form posting an option this case was not offered: refused, nothing kept.
            case_record_event(
                case=case,
                kind="validation_failed",
                actor=Actor.CUSTOMER,
                data={"action": str(action)[:64], "errors": {"action": ["not offered"]}},
            )
            return render(
                request,
                "miniapp/options.html",
                _context(request, token, error="That option is not available.", form=None),
                status=400,
            )
        action = recommended["action"] if recommended else ""
    needed = _needs(request, case, action)
    if needed:
        return redirect(_url("verify", token) + f"?next={action}")
    if action in PROVIDER_ACTIONS:
        return redirect(_url("pay", token, action=action))
    if action == "upload_documents":
        return redirect(_url("upload", token))
    if request.method == "POST":
        form = _form(case, action, data=request.POST)
        if form is not None and form.is_valid():
            choice = form.choice()
            session_set_choice(
                request,
                case,
                {
                    "action": action,
                    "values": choice,
                    "submission_key": form.cleaned_data["submission_key"],
                },
            )
            case_record_event(
                case=case,
                kind="option_chosen",
                actor=Actor.CUSTOMER,
                data={"action": action, "recommended": action == (recommended or {}).get("action")},
            )
            return redirect(_url("review", token))
        if form is not None:
            case_record_event(
                case=case,
                kind="validation_failed",
                actor=Actor.CUSTOMER,
                data={"action": action, "fields": sorted(form.errors)},
            )
        status = 400
    else:
        initial = {}
        form = _form(case, action)
        if form is not None and action == (recommended or {}).get("action"):
            initial = form.recommended_initial()
            form = _form(case, action, initial=initial)
        case_record_event(
            case=case,
            kind="actions_viewed",
            actor=Actor.CUSTOMER,
            data={"shown": action, "offered": [a["action"] for a in case.offer["actions"]]},
        )
        status = 200
    others = [a for a in case.offer["actions"] if a["action"] != action]
    return render(
        request,
        "miniapp/options.html",
        _context(
            request,
            token,
            form=form,
            action=action,
            item=offer_action(case.offer, action),
            recommended=recommended,
            others=others,
        ),
        status=status,
    )


# --- review and consent -------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@customer_page
def review(request: HttpRequest, token: str) -> HttpResponse:
    from django.conf import settings

    from writeback.services import OutcomeExists, OutcomeRefused, outcome_submit

    case = request.case
    closed = _closed_page(request, token)
    if closed:
        return closed
    choice = session_choice(request, case)
    if not choice:
        return redirect(_url("options", token))
    action = choice["action"]
    if _needs(request, case, action):
        return redirect(_url("verify", token) + f"?next={action}")
    form = _form(case, action)
    consent_text = CONSENT_TEXT.format(brand=settings.BRAND_NAME)
    error = ""
    if request.method == "POST":
        evidence = {
            "consent_text": consent_text,
            "consented_at": _now_iso(),
            "ip": _client_ip(request),
            "user_agent": request.headers.get("User-Agent", "")[:300],
            "identity": sorted(session_factors(request, case)),
        }
        try:
            # The consent and the outcome it covers are kept together, or neither is.
            with transaction.atomic():
                case_record_event(
                    case=case,
                    kind="consent_given",
                    actor=Actor.CUSTOMER,
                    # The full evidence (IP, user agent) stays on the outcome; the timeline,
                    # which is exported, carries what was agreed and when.
                    data={
                        "action": action,
                        "consent_text": evidence["consent_text"],
                        "consented_at": evidence["consented_at"],
                        "identity": evidence["identity"],
                    },
                )
                outcome_submit(
                    case=case,
                    action=action,
                    values=choice["values"],
                    evidence=evidence,
                    submission_key=choice["submission_key"],
                )
        except OutcomeExists:
            pass  # another tab or a second tap submitted first: show that one
        except (OutcomeRefused, IllegalTransition) as exc:
            # The reason names our configuration: for the timeline, not for the customer.
            case_record_event(
                case=case,
                kind="submission_refused",
                actor=Actor.SYSTEM,
                data={"action": action, "reason": str(exc)[:300]},
            )
            error = SUBMISSION_REFUSED
        if not error:
            session_set_choice(request, case, None)
            return redirect(_url("done", token))
    rows = form.summary(choice["values"]) if form else list(choice["values"].items())
    return render(
        request,
        "miniapp/review.html",
        _context(
            request,
            token,
            item=offer_action(case.offer, action),
            rows=rows,
            consent_text=consent_text,
            error=error,
        ),
        status=400 if error else 200,
    )


SUBMISSION_REFUSED = (
    "We could not record this just now. Please try again later, or use “I need help” "
    "and one of our team will contact you."
)


def _now_iso() -> str:
    return timezone.now().isoformat()


def _client_ip(request: HttpRequest) -> str:
    # REMOTE_ADDR as seen by Django; behind a proxy, the deployment sets it from the
    # proxy's header (see docs/deployment.md) rather than trusting X-Forwarded-For here.
    return request.META.get("REMOTE_ADDR", "")


# --- confirmation -------------------------------------------------------------------------


def _done_context(request: HttpRequest, token: str, **extra: Any) -> dict[str, Any]:
    case = request.case
    outcome = case.outcomes.order_by("-created_at").first()
    return _context(
        request,
        token,
        outcome=outcome,
        reference=str(outcome.pk)[:8].upper() if outcome else "",
        pending=case.state == "action_submitted",
        **extra,
    )


@require_http_methods(["GET"])
@customer_page
def done(request: HttpRequest, token: str) -> HttpResponse:
    if request.case.state in OPEN_STATES:
        # Nothing submitted yet: the summary shows what can be done.
        return redirect(_url("home", token))
    context = _done_context(request, token)
    if request.htmx:
        return render(request, "miniapp/_status.html", context)
    return render(request, "miniapp/done.html", context)


@require_POST
@customer_page
def feedback(request: HttpRequest, token: str) -> HttpResponse:
    score = request.POST.get("score", "")
    if score not in {"1", "2", "3", "4", "5"}:
        return render(
            request,
            "miniapp/done.html",
            # The same page again, so the error shows beside the feedback form.
            _done_context(request, token, feedback_error="Choose a number from 1 to 5."),
            status=400,
        )
    case = request.case
    # One answer per case, and only about something the customer did: a second post (a
    # double tap, a reload) is thanked again but not counted twice.
    answered = case.events.filter(kind="feedback_given").exists()
    if not answered and case.outcomes.exists():
        case_record_event(
            case=case, kind="feedback_given", actor=Actor.CUSTOMER, data={"score": int(score)}
        )
    return render(request, "miniapp/thanks.html", _context(request, token))


# --- help ---------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@customer_page
def help_request(request: HttpRequest, token: str) -> HttpResponse:
    """ "I need help" is always there: it goes to an agent with the case's context."""
    case = request.case
    if request.method == "POST":
        # The customer's own words: sealed (encrypted) in the timeline (privacy/crypto.py).
        note = text_seal(request.POST.get("note", "").strip()[:1000])
        case_record_event(
            case=case,
            kind="help_requested",
            actor=Actor.CUSTOMER,
            data={"note": note, "page": request.POST.get("page", "")[:64]},
        )
        if case.state in OPEN_STATES:
            from policies.services import case_route_exception

            case_route_exception(
                case=case, exception_type="customer_requested_help", detail={"note": note}
            )
        return render(request, "miniapp/help_sent.html", _context(request, token))
    return render(request, "miniapp/help.html", _context(request, token))


# --- a fresh link -------------------------------------------------------------------------


RENEW_COOLDOWN = dt.timedelta(minutes=10)


@require_POST
def renew(request: HttpRequest, token: str) -> HttpResponse:
    """From an expired or revoked link: send a fresh one to the contact details on file,
    never to an address typed here. Only while the case can still be acted on."""
    from miniapp.services import link_renew

    link = link_resolve(token=token)
    if link is None:
        return _no_store(
            render(request, "miniapp/link_invalid.html", {"reason": "unknown"}, status=404)
        )
    case = link.case
    if case.state not in OPEN_STATES:
        sent = False
    elif case.events.filter(
        kind="link_renewed", created_at__gt=timezone.now() - RENEW_COOLDOWN
    ).exists():
        # One is on its way: a second tap, or someone replaying an old link, must not
        # flood the customer's phone.
        sent = True
    else:
        sent = link_renew(case=case)
    reason = "renewed" if sent else "expired"
    return _no_store(
        render(
            request,
            "miniapp/link_invalid.html",
            {"reason": reason, "token": token, "can_renew": False},
            status=200 if sent else 410,
        )
    )
