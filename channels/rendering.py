"""Turning a message template into the text a customer reads.

Each message carries exactly one primary action, the case's mini-app link, and ends with
the channel's way out: "Reply STOP to opt out" for SMS and WhatsApp, an unsubscribe link
for email.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.template import Context, Engine, TemplateSyntaxError

from cases.models import Case
from channels.models import MessageTemplate
from channels.sms import OPT_OUT_LINE, sms_size

LINK_PLACEHOLDER = "{{ link }}"
# Stored in place of the link token: the database never holds a working link.
MASKED_LINK = "/m/••••••/"

# Plain text: autoescape would turn "&" into "&amp;" in an SMS.
_engine = Engine(autoescape=False, string_if_invalid="")


class TemplateProblem(ValueError):
    pass


@lru_cache(maxsize=512)
def _compiled(source: str):
    return _engine.from_string(source)


def template_check(*, body: str, channel: str) -> list[str]:
    """Problems that would stop this template being sent, for the admin form."""
    problems = []
    try:
        _compiled(body)
    except TemplateSyntaxError as exc:
        problems.append(f"Template error: {exc}")
    count = body.replace(" ", "").count("{{link}}")
    if count != 1:
        problems.append(
            "A message carries exactly one primary action: put {{ link }} in the body once"
            f" (found {count})."
        )
    return problems


@dataclass(frozen=True)
class RenderedMessage:
    subject: str
    body: str  # with the working link: only ever handed to the provider
    body_masked: str
    body_sha256: str
    encoding: str = ""
    segments: int = 0
    whatsapp_parameters: tuple[str, ...] = ()


def template_context(*, case: Case, link: str) -> dict[str, Any]:
    customer = case.customer
    name = (customer.name or "").strip()
    expires = case.expires_at.date() if case.expires_at else None
    return {
        "customer": {"name": name, "first_name": name.split(" ")[0] if name else "there"},
        "data": case.data or {},
        "workflow": {"name": case.workflow.name, "key": case.workflow.key},
        "brand": settings.BRAND_NAME,
        "link": link,
        "expires_on": expires.strftime("%-d %B %Y") if isinstance(expires, dt.date) else "",
    }


def _render(source: str, context: dict[str, Any]) -> str:
    try:
        return _compiled(source).render(Context(context)).strip()
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"Template error: {exc}") from exc


def message_render(
    *, template: MessageTemplate, case: Case, link: str, unsubscribe_url: str = ""
) -> RenderedMessage:
    context = template_context(case=case, link=link)
    body = _render(template.body, context)
    if template.channel in ("sms", "whatsapp") and "STOP" not in body:
        body = f"{body}\n{OPT_OUT_LINE}"
    if template.channel == "email" and unsubscribe_url:
        body = f"{body}\n\n--\nTo stop these emails: {unsubscribe_url}"
    subject = _render(template.subject, context) if template.subject else ""
    parameters = tuple(_render(str(p), context) for p in template.whatsapp_parameters or [])
    masked = body.replace(link, link.split("/m/")[0] + MASKED_LINK) if link else body
    size = sms_size(body) if template.channel == "sms" else None
    return RenderedMessage(
        subject=subject,
        body=body,
        body_masked=masked,
        body_sha256=hashlib.sha256(body.encode()).hexdigest(),
        encoding=size.encoding if size else "",
        segments=size.segments if size else 0,
        whatsapp_parameters=parameters,
    )


def template_for(
    *, workflow_key: str, name: str, channel: str, locale: str
) -> MessageTemplate | None:
    """The template in the customer's locale, else its language, else English, else any."""
    candidates = list(
        MessageTemplate.objects.filter(workflow_key=workflow_key, name=name, channel=channel)
    )
    if not candidates:
        return None
    by_locale = {t.locale.lower(): t for t in candidates}
    locale = (locale or "en").lower()
    for wanted in (locale, locale.split("-")[0], "en"):
        if wanted in by_locale:
            return by_locale[wanted]
    return sorted(candidates, key=lambda t: t.locale)[0]
