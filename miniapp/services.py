"""Mini-app links: issue, resolve, revoke."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from cases.bulk import bulk_copy, copy_available
from cases.models import Actor, Case
from cases.services import case_record_event, case_transition
from miniapp.models import CaseLink
from policies.models import Workflow


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


# Workflow versions by (id, last change), kept per process: every customer page needs its
# case's workflow, an active version never changes, and any edit changes updated_at.
_workflows: dict[tuple[int, Any], Workflow] = {}


def _workflow(pk: int, updated_at: Any) -> Workflow:
    key = (pk, updated_at)
    workflow = _workflows.get(key)
    if workflow is None:
        workflow = Workflow.objects.get(pk=pk)
        if len(_workflows) > 256:
            _workflows.clear()
        _workflows[key] = workflow
    return workflow


def link_resolve(*, token: str) -> CaseLink | None:
    """The link, its case and customer in one query (the page customers open most)."""
    if not token or len(token) > 128:
        return None
    try:
        link = (
            CaseLink.objects.select_related("case", "case__customer")
            # The trigger as received is never shown to the customer; leave it in the database.
            .defer("case__payload")
            .annotate(workflow_changed_at=F("case__workflow__updated_at"))
            .get(token_hash=_token_hash(token))
        )
    except CaseLink.DoesNotExist:
        return None
    link.case.workflow = _workflow(link.case.workflow_id, link.workflow_changed_at)
    return link


def link_revoke(*, link: CaseLink) -> None:
    if link.revoked_at is None:
        link.revoked_at = timezone.now()
        link.save(update_fields=["revoked_at"])


# A reopened link is recorded at most this often: the first open is the engagement, and a
# reload is not news (nor worth a write on the page customers open most).
REOPEN_RECORD_INTERVAL = timedelta(hours=1)


def link_record_open(*, link: CaseLink, user_agent: str = "") -> Case:
    """An open is engagement: the first one moves the case to `engaged`; a later one is
    recorded on the timeline (at most hourly per link) without a state change."""
    case = link.case
    now = timezone.now()
    data = {"link_id": link.pk, "user_agent": user_agent[:200]}
    if case.state in ("received", "outreach"):
        CaseLink.objects.filter(pk=link.pk).update(
            first_opened_at=Coalesce(F("first_opened_at"), now), last_opened_at=now
        )
        return case_transition(case=case, transition="engage", actor=Actor.CUSTOMER, data=data)
    if link.last_opened_at and now - link.last_opened_at < REOPEN_RECORD_INTERVAL:
        return case
    recorded = (
        CaseLink.objects.filter(pk=link.pk)
        .filter(Q(last_opened_at__isnull=True) | Q(last_opened_at__lt=now - REOPEN_RECORD_INTERVAL))
        .update(first_opened_at=Coalesce(F("first_opened_at"), now), last_opened_at=now)
    )
    if recorded:
        case_record_event(case=case, kind="link_opened", actor=Actor.CUSTOMER, data=data)
    return case


def link_send(*, case: Case, text: str, key_stem: str):
    """Issue a fresh link and send it at once to the first permitted contact on file (SMS,
    then email). `text` holds `{link}`. Returns the Message, or None when no channel may be
    used (no address, no consent, opted out)."""
    from channels.contact_rules import channel_address, channel_refusal
    from channels.dispatch import message_send_now
    from channels.rendering import MASKED_LINK

    customer = case.customer
    channel = next((c for c in ("sms", "email") if not channel_refusal(customer, c)), None)
    if channel is None:
        return None
    issued = link_issue(case=case)
    count = CaseLink.objects.filter(case=case).count()
    if channel == "sms":
        text += "\nReply STOP to opt out"
    return message_send_now(
        case=case,
        channel=channel,
        to=channel_address(customer, channel),
        key=f"{case.pk}:{key_stem}{count}",
        body=text.replace("{link}", issued.url),
        body_masked=text.replace("{link}", settings.PUBLIC_BASE_URL + MASKED_LINK),
        purpose="link",
    )


def link_renew(*, case: Case) -> bool:
    """Send a fresh link to the first permitted contact on file (SMS, then email)."""
    text = f"{settings.BRAND_NAME}: here is your new link for {case.workflow.name}: {{link}}"
    message = link_send(case=case, text=text, key_stem="renew")
    if message is None:
        return False
    case_record_event(
        case=case,
        kind="link_renewed",
        actor=Actor.CUSTOMER,
        data={"channel": message.channel, "message": message.key, "status": message.status},
    )
    return message.status not in ("failed", "cancelled")
