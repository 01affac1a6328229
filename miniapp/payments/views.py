"""Pay now and update card: our page (amount and consent) → the provider's hosted step →
back to us, where the provider (not the browser) says what happened. The provider's
webhook reports the same payment server to server; either may come first.

The demo provider's hosted page is served here too, at its own path outside the
customer's link, as a real provider's page would be.
"""

from __future__ import annotations

import logging
import secrets
from decimal import Decimal

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from cases.models import Actor
from cases.services import case_record_event
from miniapp.payments.base import (
    PROVIDER_ACTIONS,
    PaymentRefused,
    PaymentUnavailable,
    WebhookRefused,
    provider_for,
)
from miniapp.payments.forms import PAYMENT_FORMS
from miniapp.payments.services import (
    payment_cancel,
    payment_complete,
    payment_start,
    payment_webhook_handle,
)
from miniapp.sessions import session_factors
from miniapp.views import (
    _client_ip,
    _closed_page,
    _context,
    _needs,
    _no_store,
    _now_iso,
    _recommended,
    _url,
    customer_page,
)
from policies.offers import offer_action

logger = logging.getLogger(__name__)

CONSENT_TEXT = {
    "pay_now": (
        "I authorise {brand} to take the payment shown above from the card I give on the "
        "payment provider's page, and to record it on my account."
    ),
    "update_payment_method": (
        "I authorise {brand} to keep the card I give on the payment provider's page, held by "
        "the provider, for the payments due on my account."
    ),
}


def _consent_text(action: str) -> str:
    return CONSENT_TEXT[action].format(brand=settings.BRAND_NAME)


def _pay_page(request: HttpRequest, token: str, action: str, status: int = 200, **extra):
    case = request.case
    item = offer_action(case.offer, action)
    others = [a for a in (case.offer or {}).get("actions", []) if a["action"] != action]
    return render(
        request,
        "miniapp/pay_start.html",
        _context(
            request,
            token,
            action=action,
            item=item,
            others=others,
            recommended=_recommended(case),
            consent_text=_consent_text(action) if item else "",
            currency=case.data.get("currency", ""),
            **extra,
        ),
        status=status,
    )


@require_http_methods(["GET", "POST"])
@customer_page
def pay(request: HttpRequest, token: str, action: str) -> HttpResponse:
    case = request.case
    closed = _closed_page(request, token)
    if closed:
        return closed
    item = offer_action(case.offer, action)
    if action not in PROVIDER_ACTIONS or item is None:
        case_record_event(
            case=case,
            kind="validation_failed",
            actor=Actor.CUSTOMER,
            data={"action": str(action)[:64], "errors": {"action": ["not offered"]}},
        )
        return _pay_page(request, token, action, 400, error="That option is not available.")
    if _needs(request, case, action):
        # The identity level of the action, before anything goes to the provider.
        return redirect(_url("verify", token) + f"?next={action}")
    form_class = PAYMENT_FORMS[action]
    if request.method == "GET":
        form = form_class(
            case=case, bounds=item["bounds"], initial={"submission_key": secrets.token_urlsafe(16)}
        )
        form.initial.update(form.recommended_initial())
        case_record_event(
            case=case,
            kind="actions_viewed",
            actor=Actor.CUSTOMER,
            data={"shown": action, "offered": [a["action"] for a in case.offer["actions"]]},
        )
        notice = ""
        if request.GET.get("cancelled"):
            notice = "You left the payment page. Nothing was taken; you can try again."
        return _pay_page(request, token, action, form=form, notice=notice)
    form = form_class(data=request.POST, case=case, bounds=item["bounds"])
    if not form.is_valid():
        case_record_event(
            case=case,
            kind="validation_failed",
            actor=Actor.CUSTOMER,
            data={"action": action, "fields": sorted(form.errors)},
        )
        return _pay_page(request, token, action, 400, form=form)
    amount = Decimal(form.cleaned_data["amount"]) if action == "pay_now" else None
    case_record_event(
        case=case,
        kind="option_chosen",
        actor=Actor.CUSTOMER,
        data={"action": action, "recommended": action == (_recommended(case) or {}).get("action")},
    )
    evidence = {
        "consent_text": _consent_text(action),
        "consented_at": _now_iso(),
        "ip": _client_ip(request),
        "user_agent": request.headers.get("User-Agent", "")[:300],
        "identity": sorted(session_factors(request, case)),
    }
    if amount is not None:
        evidence |= {"amount": str(amount), "currency": case.data.get("currency", "")}
    return_url = settings.PUBLIC_BASE_URL + _url("pay-return", token, action=action)
    try:
        started = payment_start(
            case=case, action=action, amount=amount, evidence=evidence, return_url=return_url
        )
    except PaymentUnavailable as exc:
        return _pay_page(
            request, token, action, 503, form=form, error=f"{exc} Please try again in a minute."
        )
    return redirect(started.redirect_url)


@require_GET
@customer_page
def pay_return(request: HttpRequest, token: str, action: str) -> HttpResponse:
    """Back from the provider. No identity check here: the idle timer may well have run
    out on the provider's page, and this page only reports what the provider confirms."""
    case = request.case
    if action not in PROVIDER_ACTIONS:
        raise Http404
    if request.GET.get("cancelled"):
        if case.state in ("engaged", "verified"):
            payment_cancel(case=case, action=action)
        return redirect(_url("pay", token, action=action) + "?cancelled=1")
    session_id = request.GET.get("session_id", "")
    try:
        if not session_id:
            raise PaymentRefused("The payment provider sent no payment reference.")
        provider = provider_for(request.GET.get("provider", ""))
        result = provider.complete(session_id=session_id)
        completion = payment_complete(case=case, result=result, via="return")
    except PaymentRefused as exc:
        return _declined_page(request, token, action, error=str(exc), status=400)
    except PaymentUnavailable:
        # The webhook confirms it as soon as the provider answers again.
        return render(request, "miniapp/pay_pending.html", _context(request, token), status=503)
    if completion.kind in ("submitted", "unmatched"):
        return redirect(_url("done", token))
    if completion.kind == "cancelled":
        return redirect(_url("pay", token, action=action) + "?cancelled=1")
    if completion.kind == "pending":
        return render(request, "miniapp/pay_pending.html", _context(request, token))
    if completion.route in ("retry", "offer_alternative"):
        return _declined_page(
            request,
            token,
            action,
            route=completion.route,
            alternative=offer_action(case.offer, completion.alternative),
        )
    return redirect(_url("done", token))  # escalated or closed: the done page says so


def _declined_page(request: HttpRequest, token: str, action: str, status: int = 200, **extra):
    return render(
        request,
        "miniapp/pay_declined.html",
        _context(
            request, token, action=action, item=offer_action(request.case.offer, action), **extra
        ),
        status=status,
    )


# --- the provider's side ------------------------------------------------------------------


@csrf_exempt  # the provider cannot send our CSRF token: its signature is checked instead
@require_POST
def webhook(request: HttpRequest, provider: str) -> JsonResponse:
    try:
        payment_provider = provider_for(provider)
        event = payment_provider.webhook(body=request.body, headers=request.headers)
    except PaymentRefused as exc:
        return JsonResponse({"error": str(exc)}, status=404)
    except WebhookRefused as exc:
        return JsonResponse({"error": str(exc)}, status=exc.status)
    if event is None:
        return JsonResponse({"result": "ignored"})
    try:
        result = payment_webhook_handle(provider=payment_provider, event=event)
    except PaymentRefused as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    except PaymentUnavailable as exc:
        # Not recorded as handled: the provider delivers the event again later.
        return JsonResponse({"error": str(exc)}, status=503)
    return JsonResponse({"result": result})


@require_http_methods(["GET", "POST"])
def demo_page(request: HttpRequest, session: str) -> HttpResponse:
    """The demo provider's hosted page: no card fields, only Pay and Decline."""
    if settings.PAYMENT_PROVIDER != "demo":
        raise Http404
    provider = provider_for("demo")
    context = {"brand": "Demo payments"}
    try:
        details = provider.session(session)
    except PaymentRefused as exc:
        response = render(
            request, "miniapp/pay_demo.html", {**context, "error": str(exc)}, status=400
        )
        return _no_store(response)
    if request.method == "POST":
        choice = request.POST.get("choice")
        if choice in ("pay", "decline"):
            return redirect(provider.finish(session, approve=choice == "pay"))
        context["error"] = "Choose Pay or Decline."
    response = render(
        request,
        "miniapp/pay_demo.html",
        {**context, "details": details, "cancel_url": _demo_cancel_url(details["return_url"])},
        status=400 if "error" in context else 200,
    )
    return _no_store(response)


def _demo_cancel_url(return_url: str) -> str:
    separator = "&" if "?" in return_url else "?"
    return f"{return_url}{separator}provider=demo&cancelled=1"
