"""Mini-app links: issue, resolve, revoke."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from cases.bulk import bulk_copy, copy_available
from cases.models import Actor, Case
from cases.services import case_record_event, case_transition
from miniapp.models import CaseLink


@dataclass(frozen=True)
class IssuedLink:
    link: CaseLink
    token: str

    @property
    def url(self) -> str:
        return f"{settings.PUBLIC_BASE_URL}/m/{self.token}/"


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def link_issue(*, case: Case) -> IssuedLink:
    """A new link for a case, valid until the case expires. The raw token exists only in
    the returned value: put it in the message, never in a log."""
    token = secrets.token_urlsafe(32)
    link = CaseLink.objects.create(
        case=case, token_hash=_token_hash(token), expires_at=case.expires_at
    )
    return IssuedLink(link=link, token=token)


def links_issue(*, cases: list[Case]) -> list[IssuedLink]:
    """One new link per case (in order), inserted in one statement: the dispatcher issues a
    fresh link for every message of a batch."""
    issued = []
    rows = []
    for case in cases:
        token = secrets.token_urlsafe(32)
        link = CaseLink(case=case, token_hash=_token_hash(token), expires_at=case.expires_at)
        rows.append(link)
        issued.append(IssuedLink(link=link, token=token))
    if copy_available():
        # COPY: bulk_create's per-value quoting was a visible share of a dispatch batch.
        bulk_copy(rows, assign_ids=True)
    else:
        CaseLink.objects.bulk_create(rows, batch_size=1000)
    return issued


def link_resolve(*, token: str) -> CaseLink | None:
    if not token or len(token) > 128:
        return None
    return (
        CaseLink.objects.select_related("case", "case__workflow", "case__customer")
        .filter(token_hash=_token_hash(token))
        .first()
    )


def link_revoke(*, link: CaseLink) -> None:
    if link.revoked_at is None:
        link.revoked_at = timezone.now()
        link.save(update_fields=["revoked_at"])


def link_record_open(*, link: CaseLink, user_agent: str = "") -> Case:
    """An open is engagement: the first one moves the case to `engaged`; later ones are
    recorded on the timeline without a state change."""
    case = link.case
    data = {"link_id": link.pk, "user_agent": user_agent[:200]}
    if link.first_opened_at is None:
        CaseLink.objects.filter(pk=link.pk, first_opened_at=None).update(
            first_opened_at=timezone.now()
        )
    if case.state in ("received", "outreach"):
        return case_transition(case=case, transition="engage", actor=Actor.CUSTOMER, data=data)
    case_record_event(case=case, kind="link_opened", actor=Actor.CUSTOMER, data=data)
    return case


def link_renew(*, case: Case) -> bool:
    """Send a fresh link to the first permitted contact on file (SMS, then email)."""
    from channels.contact_rules import channel_address, channel_refusal
    from channels.dispatch import message_send_now
    from channels.rendering import MASKED_LINK

    customer = case.customer
    channel = next((c for c in ("sms", "email") if not channel_refusal(customer, c)), None)
    if channel is None:
        return False
    issued = link_issue(case=case)
    count = CaseLink.objects.filter(case=case).count()
    text = f"{settings.BRAND_NAME}: here is your new link for {case.workflow.name}: {{link}}"
    if channel == "sms":
        text += "\nReply STOP to opt out"
    message = message_send_now(
        case=case,
        channel=channel,
        to=channel_address(customer, channel),
        key=f"{case.pk}:renew{count}",
        body=text.replace("{link}", issued.url),
        body_masked=text.replace("{link}", settings.PUBLIC_BASE_URL + MASKED_LINK),
        purpose="link",
    )
    case_record_event(
        case=case,
        kind="link_renewed",
        actor=Actor.CUSTOMER,
        data={"channel": channel, "message": message.key, "status": message.status},
    )
    return message.status not in ("failed", "cancelled")
